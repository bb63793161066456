"""schemathesis's extra check in the server's protocol campaign (campaign.py loads it through
SCHEMATHESIS_HOOKS): every 4xx says why, in a JSON ``detail``."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.check
def a_4xx_says_why(ctx: Any, response: Any, case: Any) -> bool | None:
    if not 400 <= response.status_code < 500 or case.method.upper() == "HEAD":
        return None
    try:
        detail = json.loads(response.content).get("detail")
    except (ValueError, AttributeError):
        detail = None
    if not detail:
        raise AssertionError(f"{response.status_code} without a detail: {response.content[:200]!r}")
    return None
