"""Small line charts as SVG, written by hand (no plotting library in the project's pins).

    panels = [Panel("RSS (MB)", {"operator": [(t0, y0), (t1, y1), ...]}), ...]
    Path("curve.svg").write_text(chart("title", panels, x_label="seconds"))

Each panel is one chart stacked under the previous one, with its own y axis (from 0, so a flat
line looks flat) and the shared x axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
WIDTH, PANEL_H, LEFT, RIGHT, TOP, GAP = 760, 150, 70, 20, 40, 45


@dataclass
class Panel:
    title: str
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _nice(top: float) -> float:
    """A round axis maximum at or above ``top``."""
    if top <= 0:
        return 1.0
    step = 10 ** (len(str(int(top))) - 1) if top >= 1 else 0.1
    return (int(top / step) + 1) * step


def chart(title: str, panels: list[Panel], *, x_label: str = "seconds") -> str:
    xs = [x for p in panels for pts in p.series.values() for x, _ in pts]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    x1 = x1 if x1 > x0 else x0 + 1
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + len(panels) * (PANEL_H + GAP) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>']
    for i, panel in enumerate(panels):
        top = TOP + i * (PANEL_H + GAP)
        ys = [y for pts in panel.series.values() for _, y in pts]
        y_max = _nice(max(ys) * 1.1 if ys else 1.0)

        def px(x: float) -> float:
            return LEFT + (x - x0) / (x1 - x0) * plot_w

        def py(y: float, top: float = top, y_max: float = y_max) -> float:
            return top + PANEL_H - y / y_max * PANEL_H

        out.append(f'<text x="{LEFT}" y="{top - 6}" font-weight="bold">{escape(panel.title)}</text>')
        out.append(f'<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#999"/>')
        for frac in (0, 0.5, 1):
            y = y_max * frac
            out.append(f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
            if 0 < frac < 1:
                out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#eee"/>')
        for frac in (0, 0.25, 0.5, 0.75, 1):
            x = x0 + (x1 - x0) * frac
            out.append(f'<text x="{px(x):.1f}" y="{top + PANEL_H + 14}" text-anchor="middle">{x:.0f}</text>')
        for j, (name, pts) in enumerate(panel.series.items()):
            colour = COLOURS[j % len(COLOURS)]
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
            out.append(f'<text x="{LEFT + plot_w - 4}" y="{top + 14 + 13 * j}" text-anchor="end" '
                       f'fill="{colour}">{escape(name)}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{height - 4}" text-anchor="middle">{escape(x_label)}</text>')
    out.append("</svg>")
    return "\n".join(out)
