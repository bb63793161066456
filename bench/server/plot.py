"""Plot a run.py result: rps and p99 per concurrency on the tiny MLP (one line per server),
and the small CNN's rps per server. Run with the benchmark's tools venv (matplotlib):

    ~/.cache/modelship/bench-venvs/tools-1/bin/python bench/server/plot.py RESULT.json OUT.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(raw: str, png: str) -> None:
    report = json.load(open(raw))
    rows = report["rows"]
    mlp = [r for r in rows if r["section"] == "mlp"]
    bars = [r for r in rows if r["section"] in ("cnn", "workers")]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    for server in dict.fromkeys(r["server"] for r in mlp):
        cells = sorted((r for r in mlp if r["server"] == server), key=lambda r: r["concurrency"])
        conns = [r["concurrency"] for r in cells]
        style = {"linewidth": 3} if server == "modelship" else {"linestyle": "--" if "floor" in server else "-"}
        axes[0].plot(conns, [r["rps"] for r in cells], marker="o", label=server, **style)
        axes[1].plot(conns, [r["p99_ms"] for r in cells], marker="o", label=server, **style)
    for ax, title in ((axes[0], "tiny MLP: requests/s (one core)"), (axes[1], "tiny MLP: p99 latency, ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 8, 32], ["1", "8", "32"])
        ax.set_xlabel("concurrent connections")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    labels = [f"{r['section']}: {r['server']}" for r in bars]
    axes[2].barh(labels, [r["rps"] for r in bars], color=["tab:orange" if "modelship" in l or "worker" in l or "process" in l else "tab:gray" for l in labels])
    axes[2].invert_yaxis()
    axes[2].set_title("small CNN, c=32: requests/s")
    axes[2].tick_params(axis="y", labelsize=7)
    load = report["loadavg_at_start"][0]
    fig.suptitle(f"modelship server benchmark, {report['when']} (load average {load:.2f} at start)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
