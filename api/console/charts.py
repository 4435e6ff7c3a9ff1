"""Small inline SVG charts for the results: a line per group over time, and bars of a rate per
group. Server-drawn, so they need no script and print as they look."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from core.results.report import GroupSeries

# Colour-blind-safe palette (Okabe-Ito), dark enough on white for graphics contrast (3:1).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#7A5C00", "#56707F")
_W, _H, _PAD = 320, 140, 28


def _svg_open(title: str, height: int = _H) -> list[str]:
    """The opening of a chart's SVG: its size, its accessible name and its tooltip title."""
    return [
        f'<svg class="chart" viewBox="0 0 {_W} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def cumulative_lines(groups: Sequence[GroupSeries], metric: str, title: str) -> Markup:
    """Cumulative `metric` (sends, opens, clicks or conversions) per group by hour, as SVG."""
    series = []
    for g in groups:
        # Each line starts at zero an hour before its first hour, so one hour still draws a rise.
        total, points = 0, [(g.points[0].hour.timestamp() - 3600, 0)] if g.points else []
        for p in g.points:
            total += int(getattr(p, metric))
            points.append((p.hour.timestamp(), total))
        series.append((g.variant or g.kind, points))
    xs = [x for _, pts in series for x, _ in pts]
    top = max([y for _, pts in series for _, y in pts] + [1])
    lo, hi = (min(xs), max(xs)) if xs else (0.0, 1.0)
    span = (hi - lo) or 1.0

    def at(x: float, y: float) -> str:
        return f"{_PAD + (x - lo) / span * (_W - 2 * _PAD):.1f},{_H - _PAD - y / top * (_H - 2 * _PAD):.1f}"

    parts = [
        *_svg_open(title),
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" class="axis"/>',
        f'<text x="{_PAD}" y="14" class="label">{escape(title)} (max {top})</text>',
    ]
    for i, (name, pts) in enumerate(series):
        if not pts:
            continue
        path = " ".join(at(x, y) for x, y in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{_colour(i)}" stroke-width="2"/>')
        parts.append(
            f'<text x="{_W - _PAD + 2}" y="{22 + 12 * i}" class="legend" fill="{_colour(i)}">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def rate_bars(rows: Sequence[tuple[str, float | None]], title: str) -> Markup:
    """One horizontal bar per group for a rate in [0, 1], labelled with its percentage."""
    height = 24 + 22 * len(rows)
    top = max([r or 0.0 for _, r in rows] + [0.0001])
    parts = [*_svg_open(title, height), f'<text x="0" y="14" class="label">{escape(title)}</text>']
    for i, (name, rate) in enumerate(rows):
        y = 22 + 22 * i
        width = (rate or 0.0) / top * (_W - 150)
        shown = "n/a" if rate is None else f"{rate * 100:.2f}%"
        parts.append(f'<text x="0" y="{y + 13}" class="legend">{escape(name)}</text>')
        parts.append(f'<rect x="90" y="{y}" width="{width:.1f}" height="16" fill="{_colour(i)}"/>')
        parts.append(f'<text x="{94 + width:.1f}" y="{y + 13}" class="legend">{shown}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def count_columns(rows: Sequence[tuple[str, int]], title: str) -> Markup:
    """One vertical bar per labelled count (e.g. recipients per hour 00-23), every label shown below."""
    top = max([n for _, n in rows] + [1])
    step = (_W - 8) / max(len(rows), 1)
    base = _H - 20
    parts = [
        *_svg_open(title),
        f'<text x="0" y="14" class="label">{escape(title)} (max {top})</text>',
        f'<line x1="0" y1="{base}" x2="{_W}" y2="{base}" class="axis"/>',
    ]
    for i, (label, n) in enumerate(rows):
        x = 4 + i * step
        height = n / top * (base - 24)
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{base - height:.1f}" width="{step - 2:.1f}" height="{height:.1f}" '
            f'fill="{PALETTE[0]}"><title>{escape(label)}: {n}</title></rect>'
        )
        if i % 3 == 0:
            parts.append(f'<text x="{x:.1f}" y="{_H - 6}" class="legend">{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
