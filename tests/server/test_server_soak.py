"""Issue 13, item 4 (server): the short soak (soaking.py) in ``make test``.

The real server process (HTTP and gRPC) takes 20,000 answers of a mixed good/bad stream at
saturation after a warm-up; at rest afterwards it must hold no more file descriptors than at
rest before (2 of slack) and at most 10 MiB more resident memory, that is 500 bytes a request:
a leak of a request's body, future or connection state is bigger than that. No timing is
asserted. The second test proves the tolerances catch a real leak: a model keeping 8 KiB per
call and a file every 50 calls fails them within a quarter of the answers. The long soak is
``make soak-server`` (bench/server/soak.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import random

import pytest
from server_support import ModelFiles, free_port, serve_subprocess

import soaking

ANSWERS = 20_000
RSS_SLACK = 10 * 2**20
FD_SLACK = 2


def _short_soak(args: list[str], seed: int, answers: int = ANSWERS) -> soaking.Soak:
    grpc_port = free_port()
    flags = [*args, "--device", "cpu", "--grpc-port", str(grpc_port), "--request-timeout-s", "5"]
    with serve_subprocess({}, flags) as (proc, url):
        result = asyncio.run(soaking.soak(url, f"127.0.0.1:{grpc_port}", proc.pid, seed=seed, warmup_s=3,
                                          seconds=60, answers=answers, sample_s=1.0, concurrency=16))  # fmt: skip
        assert proc.poll() is None, "the server died"
    print(json.dumps({k: v for k, v in result.as_json().items() if k != "samples"}, indent=1))
    return result


@pytest.fixture(scope="module")
def soak_seed() -> int:
    value = int(os.environ.get("MODELSHIP_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
    print(f"soak seed: {value} (MODELSHIP_FUZZ_SEED={value} replays it)")
    return value


def test_no_leak_under_a_mixed_stream(models: ModelFiles, soak_seed: int) -> None:
    result = _short_soak(["--model-name", "tiny", "--model-uri", str(models.mlp_ts)], soak_seed)
    assert result.measured_requests >= ANSWERS
    assert result.server_errors() == 0, result.statuses
    assert {200, 400, 404, 413} <= set(result.statuses), result.statuses  # the mix reached the server
    assert result.grpc_codes["OK"] and result.grpc_codes["INVALID_ARGUMENT"], result.grpc_codes
    assert not soaking.leaks(result, RSS_SLACK, FD_SLACK), soaking.leaks(result, RSS_SLACK, FD_SLACK)


def test_the_tolerances_catch_a_real_leak(models: ModelFiles, soak_seed: int) -> None:
    leaky = ["--model-name", "tiny", "--model-uri", str(models.handlers), "--model-format", "handler",
             "--model-handler", "test_handlers:Leaky", "--max-batch-size", "1"]  # fmt: skip
    found = soaking.leaks(_short_soak(leaky, soak_seed, answers=ANSWERS // 4), RSS_SLACK, FD_SLACK)
    assert len(found) == 2, found  # memory and descriptors
