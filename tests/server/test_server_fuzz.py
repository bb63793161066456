"""Issue 13, item 3: the protocol campaign (campaign.py) in ``make test``.

Against the single-process server (HTTP and gRPC): schemathesis with every check over the
OpenAPI document (at least 1,000 cases), the hand-made hostile cases, and hostile HTTP and gRPC
from hypothesis. Against two front ends, with a model each and with one shared model process:
the same, shorter. Every run: no 5xx, every 4xx with a reason, gRPC never INTERNAL/UNKNOWN, the
server ready afterwards, every status it answered listed in its OpenAPI document.

The seed is ``MODELSHIP_FUZZ_SEED`` when set, else a new one per run; it is printed, and a
failure names it (``MODELSHIP_FUZZ_SEED=<seed> make test-server`` replays the run). The long
run is ``make fuzz-server`` (bench/server/fuzz.py).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator

import pytest
from server_support import ModelFiles, free_port, serve, serve_subprocess

import campaign

TIMEOUT_S = 2.0
"""request_timeout_s of the servers under test: the slow-client cases wait this long."""
MAX_BODY = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def fuzz_seed() -> Iterator[int]:
    value = int(os.environ.get("MODELSHIP_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
    print(f"protocol campaign seed: {value} (MODELSHIP_FUZZ_SEED={value} replays it)")
    yield value


def _verdict(report: campaign.Report) -> None:
    print(json.dumps(report.summary(), indent=1))
    failures = "\n\n".join(report.failures())
    assert not failures, f"campaign seed {report.seed} (MODELSHIP_FUZZ_SEED={report.seed} replays it):\n{failures}"
    assert report.server_statuses and not any(s.startswith("5") for s in report.server_statuses)


def test_protocol_campaign_single_process(models: ModelFiles, fuzz_seed: int) -> None:
    grpc_port = free_port()
    settings = dict(model_name="tiny", model_uri=str(models.mlp_ts), grpc_port=grpc_port, device="cpu",
                    request_timeout_s=TIMEOUT_S, max_body_bytes=MAX_BODY)  # fmt: skip
    with serve(**settings) as running:  # type: ignore[arg-type]
        budget = campaign.Budget(schemathesis_examples=25, http_examples=400, grpc_examples=250)
        report = campaign.run(running.url, f"127.0.0.1:{grpc_port}", fuzz_seed, budget, TIMEOUT_S, MAX_BODY)
    _verdict(report)
    assert report.schemathesis_cases >= 1000, report.summary()
    assert report.server_counted >= 1000, report.summary()  # and the server saw them


@pytest.mark.parametrize("mode", ["per-worker", "shared"])
def test_protocol_campaign_two_front_ends(models: ModelFiles, fuzz_seed: int, mode: str) -> None:
    grpc_port = free_port()
    args = ["--model-name", "tiny", "--model-uri", str(models.mlp_ts), "--workers", "2", "--model-process", mode,
            "--num-threads", "1", "--device", "cpu", "--grpc-port", str(grpc_port),
            "--request-timeout-s", str(TIMEOUT_S)]  # fmt: skip
    with serve_subprocess({}, args) as (proc, url):
        budget = campaign.Budget(schemathesis_examples=2, http_examples=150, grpc_examples=100)
        report = campaign.run(url, f"127.0.0.1:{grpc_port}", fuzz_seed, budget, TIMEOUT_S, MAX_BODY)
        assert proc.poll() is None, "a process of the server died"
    _verdict(report)
    assert report.schemathesis_cases >= 200, report.summary()
