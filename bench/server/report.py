"""Markdown for a run.py result: the benchmark table (ratios to the raw floor, or to one
process for the workers section) and the profile's before/after breakdown.

    .venv/bin/python bench/server/report.py bench/server/results/<run>.json   # prints it
"""

from __future__ import annotations

import json
import sys
from typing import Any


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: every row with its ratios to the floor (mlp, cnn) or to one process (workers)."""
    floor = {(r["section"], r["concurrency"]): r for r in rows if r["server"] == "raw ASGI floor"}
    one = {r["concurrency"]: r for r in rows if r["section"] == "workers" and r["server"] == "1 process"}
    out = [
        "| section | server | c | rps | p50 ms | p99 ms | rps / floor | p99 / floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ref = floor.get((row["section"], row["concurrency"]))
        if row["section"] == "workers":
            ref = one.get(row["concurrency"])
        ratio = f"{row['rps'] / ref['rps']:.2f}" if ref else ""
        p99 = f"{row['p99_ms'] / ref['p99_ms']:.2f}" if ref else ""
        errs = f" ({row['non2xx']} non-2xx)" if row["non2xx"] else ""
        out.append(
            f"| {row['section']} | {row['server']} | {row['concurrency']} | {row['rps']:,.0f}{errs} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {ratio} | {p99} |"
        )
    return "\n".join(out)


def profile_table(profiles: list[dict[str, Any]]) -> str:
    """CPU µs per request by layer, one column per (code, concurrency)."""
    if not profiles:
        return ""
    columns = [(p["code"], p["concurrency"]) for p in profiles]
    layers = list(dict.fromkeys(name for p in profiles for name in p["layers_us_per_request"]))
    head = "| µs of server CPU per request | " + " | ".join(f"{code} c={c}" for code, c in columns) + " |"
    out = [head, "|---|" + "---:|" * len(columns)]
    for name in layers:
        cells = [f"{p['layers_us_per_request'].get(name, 0.0):.1f}" for p in profiles]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("| **total (from /proc)** | " + " | ".join(f"**{p['cpu_us_per_request']:.1f}**" for p in profiles) + " |")
    out.append("| requests/s during the profile | " + " | ".join(f"{p['wrk']['rps']:,.0f}" for p in profiles) + " |")
    gc_rows = []
    for gen in ("0", "1", "2"):
        cells = []
        for p in profiles:
            entry = (p.get("gc") or {}).get("generations", {}).get(gen)
            cells.append(f"{entry['count']} / {entry['total_s'] * 1000:.1f} / {entry['max_s'] * 1000:.1f}" if entry else "")
        gc_rows.append(f"| GC gen {gen}: pauses / total ms / longest ms | " + " | ".join(cells) + " |")
    return "\n".join(out + gc_rows)


def markdown(report: dict[str, Any], raw_name: str) -> str:
    start, end = report["loadavg_at_start"][0], report["loadavg_at_end"][0]
    text = (
        f"Run {report['when']}, {report['rounds']} rounds x {report['duration_s']:g} s (medians), load average "
        f"{start:.2f} at start, {end:.2f} at end. Raw: {raw_name}\n\n{table(report['rows'])}\n"
    )
    if report.get("profile"):
        text += f"\n{profile_table(report['profile'])}\n"
    return text


if __name__ == "__main__":
    path = sys.argv[1]
    with open(path) as fh:
        print(markdown(json.load(fh), path.rsplit("/", 1)[-1]))
