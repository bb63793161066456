#!/usr/bin/env bash
# A private Docker engine for modelship's image builds and tests, independent of
# any system dockerd: its own socket, data-root and exec-root. The data-root
# lives under ~/.cache/modelship/docker so the layer cache survives between runs
# (a warm rebuild of the server image takes seconds, not a torch install).
#
#   hack/docker/dockerd.sh start    # idempotent; waits until the engine answers
#   hack/docker/dockerd.sh stop     # stops the engine this script started (by pid)
#   hack/docker/dockerd.sh status
#   eval "$(hack/docker/dockerd.sh env)"   # DOCKER_HOST, DOCKER_BUILDKIT, MODELSHIP_DOCKER
#
# Client: Debian's /usr/bin/docker (20.10), whose built-in BuildKit supports
# `RUN --mount`. (/usr/local/bin/docker 28.x would need the absent buildx plugin.)
set -euo pipefail
sock=${MODELSHIP_DOCKER_SOCK:-/tmp/ms-docker.sock}
cache=${MODELSHIP_DOCKER_CACHE:-$HOME/.cache/modelship/docker}
data_root="$cache/data"
exec_root=/tmp/ms-docker-exec
pidfile=/tmp/ms-dockerd.pid
log="$cache/dockerd.log"
client=/usr/bin/docker
host="unix://$sock"

answers() { DOCKER_HOST="$host" timeout 5 "$client" version --format '{{.Server.Version}}' >/dev/null 2>&1; }
running_pid() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && cat "$pidfile"; }

case "${1:-}" in
  start)
    if answers; then echo "dockerd: already running on $host"; exit 0; fi
    command -v dockerd >/dev/null && [ -x "$client" ] || {
      echo "dockerd: docker.io is not installed (apt-get install docker.io; make setup does it)" >&2; exit 1; }
    mkdir -p "$data_root" "$exec_root"
    # Let a stale pidfile from a killed run not block the start.
    [ -n "$(running_pid || true)" ] || rm -f "$pidfile"
    nohup dockerd --host "$host" --data-root "$data_root" --exec-root "$exec_root" \
      --pidfile "$pidfile" >>"$log" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
      if answers; then echo "dockerd: up on $host (data-root $data_root)"; exit 0; fi
      kill -0 $! 2>/dev/null || { echo "dockerd: exited; last log lines:" >&2; tail -20 "$log" >&2; exit 1; }
      sleep 0.5
    done
    echo "dockerd: no answer within 60s; see $log" >&2; exit 1 ;;
  stop)
    pid=$(running_pid || true)
    if [ -z "$pid" ]; then echo "dockerd: not running (no live pid in $pidfile)"; exit 0; fi
    kill "$pid"
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || { echo "dockerd: stopped"; exit 0; }
      sleep 0.5
    done
    echo "dockerd: pid $pid still alive after 30s" >&2; exit 1 ;;
  status)
    if answers; then echo "dockerd: running on $host"; else echo "dockerd: not running"; exit 1; fi ;;
  env)
    echo "export DOCKER_HOST=$host DOCKER_BUILDKIT=1 MODELSHIP_DOCKER=$client" ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
