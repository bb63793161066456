"""Plot a soak.py result: resident memory, open file descriptors, threads, requests/s and p50/p99 over
time, the phases shaded. Run with the benchmark's tools venv (matplotlib):

    ~/.cache/modelship/bench-venvs/tools-1/bin/python bench/server/soak_plot.py RESULT.json OUT.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(raw: str, png: str) -> None:
    report = json.load(open(raw))
    samples = report["samples"]
    minutes = [s["at_s"] / 60 for s in samples]
    fig, axes = plt.subplots(5, 1, figsize=(11, 12), sharex=True)
    axes[0].plot(minutes, [s["rss_bytes"] / 2**20 for s in samples], color="tab:blue")
    axes[0].set_ylabel("resident MiB")
    axes[1].plot(minutes, [s["fds"] for s in samples], color="tab:green")
    axes[1].set_ylabel("open fds")
    axes[2].plot(minutes, [s["threads"] for s in samples], color="tab:purple")
    axes[2].set_ylabel("threads")
    axes[3].plot(minutes, [s["rps"] for s in samples], color="tab:gray")
    axes[3].set_ylabel("answers/s")
    axes[4].plot(minutes, [s["p99_ms"] for s in samples], label="p99", color="tab:red")
    axes[4].plot(minutes, [s["p50_ms"] for s in samples], label="p50", color="tab:orange")
    axes[4].set_ylabel("latency ms")
    axes[4].set_yscale("log")
    axes[4].legend(fontsize=8)
    axes[4].set_xlabel("minutes")
    for ax in axes:
        ax.grid(alpha=0.3)
        for s, nxt in zip(samples, samples[1:]):
            if s["phase"] != "load":
                ax.axvspan(s["at_s"] / 60, nxt["at_s"] / 60, color="0.9", linewidth=0)
    growth = report["growth"]
    fig.suptitle(
        f"server soak, c={report['concurrency']}, {report['measured_requests']:,} answers under load "
        f"(shaded: warm-up and rest); at rest after vs before: {growth['rss_percent']:+.2f} % memory, "
        f"{growth['fds']:+d} fds, {growth['threads']:+d} threads; p99 drift {report['p99_drift'] and round(report['p99_drift'], 2)}x",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
