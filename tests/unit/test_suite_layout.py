"""The suite's own layout: every tier collects together in one `pytest tests`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_modules_outside_packages_have_unique_basenames() -> None:
    """Tiers without an __init__.py import their test modules by basename (pytest's rootdir
    "prepend" mode): two of one name in two such tiers stop the whole run at collection
    ("import file mismatch"), which no tier run alone would show."""
    loose = [p for p in TESTS.glob("*/test_*.py") if not (p.parent / "__init__.py").exists()]
    assert len({p.parent for p in loose}) >= 4, "found too few tiers: wrong path?"
    twice = {name: n for name, n in Counter(p.name for p in loose).items() if n > 1}
    assert not twice, f"test modules of one name in several tiers: {twice}"
