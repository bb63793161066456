"""Container HEALTHCHECK without curl: GET a local path, exit 0 only on HTTP 2xx.

    healthcheck.py PATH [PORT_ENV] [DEFAULT_PORT]
    python3 /opt/modelship/healthcheck.py /health MODELSHIP_PORT 8000          # server image
    python3 /opt/modelship/healthcheck.py /healthz MODELSHIP_HEALTH_PORT 8080  # operator image

Slim images ship no curl or wget; the image's own Python is always there. The
address follows MODELSHIP_HOST so a server bound to one interface is still
reached; wildcard binds are probed on loopback. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def probe_url(path: str, port: str, bind_host: str) -> str:
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind_host, bind_host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/health"
    port_env = argv[2] if len(argv) > 2 else "MODELSHIP_PORT"
    port = os.environ.get(port_env) or (argv[3] if len(argv) > 3 else "8000")
    url = probe_url(path, port, os.environ.get("MODELSHIP_HOST", "0.0.0.0"))
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT_S", "2"))) as response:
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError) as exc:  # HTTPError (503 while loading) is a URLError
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
