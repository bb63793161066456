"""The server's protocol campaign: every generator against one running server, one seed.

1. schemathesis over the server's own OpenAPI document, every check on (plus
   ``schemathesis_hooks.a_4xx_says_why``), settings in ``schemathesis.toml``;
2. the hand-made hostile HTTP cases (``hostile.hand_made``);
3. hostile HTTP requests from hypothesis (``hostile.requests``), sent raw;
4. gRPC, when the server has it: bytes that are no message for every method, a message over
   the limit, and hostile ModelInferRequests from hypothesis (``hostile_grpc``).

Then: the server must still be ready, and every status its metrics counted on a route must be
one the OpenAPI document lists for that route (or a rule the document states for all routes).

``test_server_fuzz.py`` runs it short in ``make test``; ``bench/server/fuzz.py`` runs it long.
A run is reproduced by its seed (schemathesis and hypothesis both draw from it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import hostile
import hostile_grpc
import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings

HERE = Path(__file__).resolve().parent
COUNTER = re.compile(r'^modelship_requests_total\{endpoint="([^"]*)",method="([^"]*)",status="(\d+)"\} (\S+)$')
ANY_ROUTE = {408, 413, 499}
"""Statuses the document states for every operation (a late body, a declared body over the
limit), and 499: what the metrics count for a client gone before its body, never sent."""
OTHER_PATHS = {404, 408, 413}
"""What a path no operation lists may answer (metrics' endpoint label "other")."""


@dataclass
class Budget:
    """How much of each generator to run."""

    schemathesis_examples: int
    """schemathesis' --max-examples per operation (the coverage and stateful phases add more)."""
    http_examples: int
    grpc_examples: int


@dataclass
class Report:
    seed: int
    url: str
    seconds: float = 0.0
    schemathesis_cases: int = 0
    schemathesis_failed: str = ""
    http: hostile.Tally = field(default_factory=hostile.Tally)
    grpc: hostile_grpc.GrpcTally = field(default_factory=hostile_grpc.GrpcTally)
    server_counted: int = 0
    """HTTP requests the server's own metrics counted during the run (all generators)."""
    server_statuses: dict[str, int] = field(default_factory=dict)
    undocumented: list[str] = field(default_factory=list)
    not_ready_after: str = ""

    def failures(self) -> list[str]:
        found = [f"schemathesis: {self.schemathesis_failed}"] if self.schemathesis_failed else []
        found += [f"http: {p}" for p in self.http.problems] + [f"grpc: {p}" for p in self.grpc.problems]
        found += [f"undocumented status: {u}" for u in self.undocumented]
        return found + ([f"not ready afterwards: {self.not_ready_after}"] if self.not_ready_after else [])

    def summary(self) -> dict[str, Any]:
        """The figures (for the test's log and the long run's JSON)."""
        return {
            "seed": self.seed,
            "seconds": round(self.seconds, 1),
            "schemathesis_cases": self.schemathesis_cases,
            "hostile_http_requests": self.http.requests,
            "hostile_http_statuses": dict(sorted(self.http.statuses.items())),
            "grpc_calls": self.grpc.requests,
            "grpc_codes": dict(sorted(self.grpc.codes.items())),
            "server_counted_http_requests": self.server_counted,
            "server_statuses": self.server_statuses,
            "server_errors_5xx": sum(n for s, n in self.server_statuses.items() if s.startswith("5")),
            "failures": self.failures(),
        }


def run(url: str, grpc_address: str | None, seed_value: int, budget: Budget, request_timeout_s: float,
        max_body_bytes: int, log: Callable[[str], None] = print) -> Report:  # fmt: skip
    """The whole campaign against the server at ``url`` (and ``grpc_address``)."""
    started = time.monotonic()
    report = Report(seed_value, url)
    client = httpx.Client(base_url=url, timeout=30)
    name = client.get("/v1/models").json()["models"][0]
    target = hostile.Target.from_metadata(client.get(f"/v2/models/{name}").json())
    before = _counters(client)
    address = _address(url)
    log(f"campaign seed {seed_value} against {url} (model {name}): schemathesis")
    report.schemathesis_cases, report.schemathesis_failed = run_schemathesis(url, seed_value, budget)
    log(f"  {report.schemathesis_cases} schemathesis cases; hand-made HTTP cases")
    for what, case in hostile.hand_made(target).items():
        report.http.judge(what, case(address, target, request_timeout_s))
    log(f"  {budget.http_examples} generated HTTP requests")
    _search(report.http.problems, "generated HTTP", seed_value, budget.http_examples, hostile.requests(target),
            lambda item: report.http.judge(item[0], hostile.exchange(address, item[1])))  # fmt: skip
    if grpc_address is not None:
        log(f"  gRPC: malformed messages, one over the limit, {budget.grpc_examples} generated calls")
        with grpc.insecure_channel(grpc_address) as channel:
            for method in hostile_grpc.METHODS:
                report.grpc.judge(f"{method} of garbage", *hostile_grpc.call(channel, method, b"\xff\xff\xff"))
            report.grpc.judge("ModelInfer over the limit",
                              *hostile_grpc.call(channel, "ModelInfer", hostile_grpc.oversized(max_body_bytes)))
            _search(report.grpc.problems, "generated gRPC", seed_value, budget.grpc_examples,
                    hostile_grpc.calls(target),
                    lambda item: report.grpc.judge(item[0], *hostile_grpc.call(channel, *item)))  # fmt: skip
            ready = hostile_grpc.messages()["ServerReadyResponse"].FromString(
                channel.unary_unary(hostile_grpc.SERVICE + "ServerReady")(b"", timeout=10))
            if not ready.ready:
                report.not_ready_after = "gRPC ServerReady says false"
    for probe in ("/health", "/v2/health/ready", f"/v2/models/{name}/ready"):
        answer = client.get(probe)
        if answer.status_code != 200:
            report.not_ready_after += f" {probe}: {answer.status_code} {answer.text[:200]}"
    after = _counters(client)
    counted = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    counted = {key: n for key, n in counted.items() if n > 0}
    report.server_counted = int(sum(n for (_, method, _), n in counted.items() if method != "GRPC"))
    statuses: dict[str, int] = {}
    for (_, method, status), n in counted.items():
        if method != "GRPC":
            statuses[status] = statuses.get(status, 0) + int(n)
    report.server_statuses = dict(sorted(statuses.items()))
    report.undocumented = undocumented(client.get("/openapi.json").json(), counted)
    client.close()
    report.seconds = time.monotonic() - started
    return report


def run_schemathesis(url: str, seed_value: int, budget: Budget) -> tuple[int, str]:
    """(cases generated, "" or the failure report's tail)."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(HERE / "schemathesis.toml"),
        "run", f"{url}/openapi.json", "--checks", "all", "--seed", str(seed_value),
        "--max-examples", str(budget.schemathesis_examples), "--workers", "1", "--no-color",
        "--generation-database", "none", "--request-timeout", "30", "--suppress-health-check", "all",
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HERE / "schemathesis_hooks.py")}
    with tempfile.TemporaryDirectory(prefix="schemathesis-") as scratch:  # its .schemathesis/ cache
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, cwd=scratch)
    found = re.search(r"(\d+) generated", done.stdout)
    cases = int(found.group(1)) if found else 0
    failed = "" if done.returncode == 0 else f"exit {done.returncode}:\n{done.stdout[-6000:]}{done.stderr[-2000:]}"
    return cases, failed


def _search(problems: list[str], what: str, seed_value: int, examples: int, strategy: Any,
            send: Callable[[Any], str | None]) -> None:  # fmt: skip
    """Run ``send`` over ``examples`` draws of ``strategy``; a problem stops the search and is
    shrunk by hypothesis to the smallest request that still shows it (recorded in ``problems``)."""
    if examples <= 0:
        return

    @seed(seed_value)
    @settings(max_examples=examples, database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])  # fmt: skip
    @given(strategy)
    def search(item: Any) -> None:
        found = send(item)
        if found is not None:
            raise AssertionError(f"{found}\nrequest: {item!r}"[:3000])

    try:
        search()
    except AssertionError as exc:
        notes = "\n".join(getattr(exc, "__notes__", []))
        problems.append(f"{what}, smallest failing example (seed {seed_value}): {exc}\n{notes}"[:4000])


def _counters(client: httpx.Client) -> dict[tuple[str, str, str], float]:
    counters = {}
    for line in client.get("/metrics").text.splitlines():
        found = COUNTER.match(line)
        if found:
            counters[found.groups()[:3]] = float(found.group(4))
    return counters


def undocumented(doc: dict[str, Any], counted: dict[tuple[str, str, str], float]) -> list[str]:
    """Each (route, method, status) the server answered that the document does not list."""
    missing = []
    for endpoint, method, status in sorted(counted):
        code = int(status)
        if method == "GRPC" or code in ANY_ROUTE:
            continue
        if endpoint == "other":
            listed = OTHER_PATHS
        else:
            operations = doc["paths"].get(endpoint, {})
            operation = operations.get(method.lower())
            listed = {405} if operation is None else {int(s) for s in operation["responses"]}
        if code not in listed:
            missing.append(f"{method} {endpoint} answered {code} ({int(counted[endpoint, method, status])}x)")
    return missing


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)
