"""Argument parsing and the five subcommands. The API calls live in :mod:`kubectl_modelship.kube`.

Exit codes (stable, for CI pipelines):
  0  success (``watch``: the rollout completed)
  1  the rollout was rolled back or halted (``watch``), or the operator refused the request
  2  bad usage, or an unknown name, namespace or revision
  3  timed out waiting
  4  cannot talk to the cluster
"""

from __future__ import annotations

import argparse
import builtins
import datetime as dt
import re
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from kubectl_modelship import render
from kubectl_modelship.kube import PluginError

ROLLBACK_TO_ANNOTATION = "modelship.io/rollback-to"
RETRY_ANNOTATION = "modelship.io/retry"
RESOURCE_NAMES = frozenset({
    "md", "mdeploy", "modeldeployment", "modeldeployments",
    "modeldeployment.modelship.io", "modeldeployments.modelship.io",
})
OK, FAILED, USAGE, TIMEOUT = 0, 1, 2, 3
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

EPILOG = """\
examples:
  kubectl modelship get                      # all ModelDeployments in the namespace
  kubectl modelship get md/resnet -n ml      # one, with conditions and recent events
  kubectl modelship history md/resnet
  kubectl modelship rollback md/resnet --to-revision 2
  kubectl modelship retry md/resnet
  kubectl modelship watch md/resnet --timeout 10m   # exit 0 on success, 1 on rollback

exit codes: 0 ok, 1 rolled back/halted/refused, 2 usage or unknown name/namespace/revision,
            3 timed out, 4 cannot reach the cluster
"""


class Api(Protocol):
    default_namespace: str

    def get(self, namespace: str, name: str) -> dict[str, Any]: ...
    def list(self, namespace: str | None) -> list[dict[str, Any]]: ...
    def annotate(self, namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]: ...
    def events(self, namespace: str, name: str) -> builtins.list[dict[str, Any]]: ...


class Clock(Protocol):
    def now(self) -> dt.datetime: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def parse_ref(ref: str) -> str:
    """``NAME`` or ``md/NAME`` (any of the CRD's names as the type) → NAME."""
    kind, _, name = ref.rpartition("/")
    if kind and kind.lower() not in RESOURCE_NAMES:
        raise PluginError(f'unknown resource type "{kind}": use md/NAME (or just NAME)', USAGE)
    if not _NAME.match(name) or len(name) > 253:
        raise PluginError(f'invalid name "{name}": a ModelDeployment name is a lowercase DNS name', USAGE)
    return name


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h`` → seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 30s, 10m, 1h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    common.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    common.add_argument("--context", help="kubeconfig context to use")
    parser = argparse.ArgumentParser(
        prog="kubectl modelship", description="Inspect and steer ModelDeployment rollouts.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    get = sub.add_parser("get", parents=[common], help="table of ModelDeployments (one: with conditions)")
    get.add_argument("name", nargs="?", help="md/NAME or NAME (omit for all)")
    get.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    hist = sub.add_parser("history", parents=[common], help="revisions and their outcomes")
    hist.add_argument("name", help="md/NAME")
    rb = sub.add_parser("rollback", parents=[common], help="serve an earlier revision (spec stays untouched)")
    rb.add_argument("name", help="md/NAME")
    rb.add_argument("--to-revision", type=int, metavar="N", help="revision to serve (default: the previous good one)")
    rt = sub.add_parser("retry", parents=[common], help="try the spec again after a rollback or halt")
    rt.add_argument("name", help="md/NAME")
    for p in (rb, rt):
        p.add_argument("--timeout", type=parse_duration, default=30.0, help="wait this long for the operator (30s)")
    w = sub.add_parser("watch", parents=[common], help="live progress until the rollout ends")
    w.add_argument("name", help="md/NAME")
    w.add_argument("--timeout", type=parse_duration, default=900.0, help="give up after this long (15m)")
    w.add_argument("--interval", type=parse_duration, default=1.0, help=argparse.SUPPRESS)
    return parser


# ---------------------------------------------------------------- commands


def cmd_get(api: Api, args: argparse.Namespace, out: TextIO, clock: Clock) -> int:
    namespace = args.namespace or api.default_namespace
    if args.name and args.name.lower() not in RESOURCE_NAMES:
        name = parse_ref(args.name)
        md = api.get(namespace, name)
        print(render.render_detail(md, api.events(namespace, name), clock.now()), file=out)
        return OK
    items = api.list(None if args.all_namespaces else namespace)
    if not items:
        where = "any namespace" if args.all_namespaces else f"{namespace} namespace"
        print(f"No ModelDeployments found in {where}.", file=out)
        return OK
    print(render.render_get(items, clock.now(), all_namespaces=args.all_namespaces), file=out)
    return OK


def cmd_history(api: Api, args: argparse.Namespace, out: TextIO, clock: Clock) -> int:
    md = api.get(args.namespace or api.default_namespace, parse_ref(args.name))
    print(render.render_history(md, clock.now()), file=out)
    return OK


def _await(api: Api, namespace: str, name: str, key: str, value: str, timeout: float,
           clock: Clock) -> dict[str, Any]:
    """Poll until the operator records ``value`` as handled under ``status.rollout[key]``."""
    deadline = clock.now() + dt.timedelta(seconds=timeout)
    while True:
        md = api.get(namespace, name)
        if render.rollout_state(md).get(key) == value:
            return md
        if clock.now() >= deadline:
            raise PluginError(
                f"the operator has not acted on the request within {timeout:g}s (is it running?); "
                f"the annotation stays, so it will act when it is back", TIMEOUT)
        clock.sleep(0.5)


def _nonce(clock: Clock) -> str:
    return str(int(clock.now().timestamp() * 1000))


def _previous(md: dict[str, Any]) -> dict[str, Any] | None:
    state = render.rollout_state(md)
    serving = int(state.get("servingRevision") or 0)
    history = (md.get("status") or {}).get("history") or ()
    current: dict[str, Any] = next((e for e in history if e.get("revision") == serving), {})
    older = [e for e in history if e.get("outcome") == "Succeeded" and int(e.get("revision") or 0) < serving
             and e.get("hash") != current.get("hash")]
    return older[-1] if older else None


def cmd_rollback(api: Api, args: argparse.Namespace, out: TextIO, clock: Clock) -> int:
    namespace, name = args.namespace or api.default_namespace, parse_ref(args.name)
    md = api.get(namespace, name)
    state = render.rollout_state(md)
    if args.to_revision is not None:
        target, error = render.find_revision(md, args.to_revision)
        if target is None:
            raise PluginError(error, USAGE)
        if state.get("servingRevision") == args.to_revision and state.get("phase") == "Complete":
            print(f"modeldeployment/{name}: revision {args.to_revision} ({target.get('image')}) is already serving",
                  file=out)
            return OK
    else:
        target = _previous(md)
        if target is None:
            raise PluginError(f"modeldeployment {name} has no earlier successful revision to roll back to", USAGE)
    value = f"{target['revision'] if args.to_revision is not None else 'previous'}@{_nonce(clock)}"
    api.annotate(namespace, name, {ROLLBACK_TO_ANNOTATION: value})
    md = _await(api, namespace, name, "handledRollbackTo", value, args.timeout, clock)
    serving = render.rollout_state(md).get("servingRevision")
    if serving != target["revision"]:
        raise PluginError(f"the operator did not roll back (serving revision {serving}); "
                          f"see kubectl get events -n {namespace} --field-selector involvedObject.name={name}", FAILED)
    print(f"modeldeployment/{name} rolled back to revision {serving} ({target.get('image')}); "
          f"spec.image still says {(md.get('spec') or {}).get('image')}", file=out)
    return OK


def cmd_retry(api: Api, args: argparse.Namespace, out: TextIO, clock: Clock) -> int:
    namespace, name = args.namespace or api.default_namespace, parse_ref(args.name)
    md = api.get(namespace, name)
    phase = render.rollout_state(md).get("phase")
    if phase not in ("RolledBack", "Halted"):
        raise PluginError(f"nothing to retry: modeldeployment {name} is {phase or 'not rolled out yet'}", USAGE)
    value = _nonce(clock)
    api.annotate(namespace, name, {RETRY_ANNOTATION: value})
    md = _await(api, namespace, name, "handledRetry", value, args.timeout, clock)
    state = render.rollout_state(md)
    print(f"modeldeployment/{name}: retrying {(md.get('spec') or {}).get('image')} as revision "
          f"{state.get('servingRevision')}; follow it with: kubectl modelship watch md/{name} -n {namespace}", file=out)
    return OK


def cmd_watch(api: Api, args: argparse.Namespace, out: TextIO, clock: Clock) -> int:
    namespace, name = args.namespace or api.default_namespace, parse_ref(args.name)
    deadline = clock.now() + dt.timedelta(seconds=args.timeout)
    tty = out.isatty()
    last = ""
    while True:
        md = api.get(namespace, name)
        line = render.render_progress(md)
        if tty:
            out.write("\r\x1b[2K" + line)
            out.flush()
        elif line != last:
            print(line, file=out, flush=True)
        last = line
        result = render.verdict(md)
        if result.code is not None:
            print(("\n" if tty else "") + result.message, file=out)
            return result.code
        if clock.now() >= deadline:
            print(("\n" if tty else "") + f"timed out after {args.timeout:g}s: {result.message}", file=out)
            return TIMEOUT
        clock.sleep(args.interval)


COMMANDS: dict[str, Callable[[Api, argparse.Namespace, TextIO, Clock], int]] = {
    "get": cmd_get, "history": cmd_history, "rollback": cmd_rollback, "retry": cmd_retry, "watch": cmd_watch,
}


def run(argv: list[str] | None = None, *, api_factory: Callable[[argparse.Namespace], Api] | None = None,
        out: TextIO | None = None, err: TextIO | None = None, clock: Clock | None = None) -> int:
    """Parse, run one command, return its exit code (errors printed as ``error: ...``)."""
    out, err = out or sys.stdout, err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        if api_factory is None:
            from kubectl_modelship.kube import Client

            api: Api = Client(args.kubeconfig, args.context)
        else:
            api = api_factory(args)
        return COMMANDS[args.command](api, args, out, clock or SystemClock())
    except PluginError as exc:
        print(f"error: {exc}", file=err)
        return exc.code
    except KeyboardInterrupt:
        return 130


def main() -> None:
    raise SystemExit(run())
