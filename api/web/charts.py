"""Chart geometry for server-drawn SVG: the templates only place what is computed here.

Every chart carries its numbers as text too (a value label on each bar, a ``<title>`` tooltip,
and a table beside or below), so it reads without colour and with a screen reader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Colour steps of the heat map (CSS classes ``heat-0`` .. ``heat-5``).
HEAT_STEPS = 6


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str
    x: float
    y: float
    width: float
    height: float


def vertical_bars(
    items: list[tuple[str, float, str]],
    *,
    width: float = 560,
    height: float = 220,
    top: float = 24,
    bottom: float = 28,
    vmax: float | None = None,
) -> list[Bar]:
    """Bars for ``(label, value, text)`` items in a ``width`` x ``height`` box."""
    if not items:
        return []
    peak = vmax if vmax else max((v for _, v, _ in items), default=0.0) or 1.0
    slot = width / len(items)
    bar_w = min(slot * 0.7, 64)
    plot = height - top - bottom
    out = []
    for i, (label, value, text) in enumerate(items):
        h = plot * max(value, 0.0) / peak
        x = i * slot + (slot - bar_w) / 2
        out.append(Bar(label, value, text, round(x, 1), round(top + plot - h, 1), round(bar_w, 1),
                       round(h, 1)))  # fmt: skip
    return out


def horizontal_bars(
    items: list[tuple[str, float, str]], *, width: float = 560, row: float = 30
) -> list[Bar]:
    """Bars growing to the right, one row each (the funnel)."""
    peak = max((v for _, v, _ in items), default=0.0) or 1.0
    return [
        Bar(
            label,
            value,
            text,
            0.0,
            round(i * row, 1),
            round(width * max(value, 0.0) / peak, 1),
            round(row * 0.72, 1),
        )  # fmt: skip
        for i, (label, value, text) in enumerate(items)
    ]


def heat(value: float | None, peak: float | None) -> str:
    """The heat-map class of ``value`` on a 0..``peak`` scale (``heat-none`` without data)."""
    if value is None or not peak:
        return "heat-none"
    step = min(HEAT_STEPS - 1, int(HEAT_STEPS * value / peak)) if value > 0 else 0
    return f"heat-{step}"


@dataclass(frozen=True)
class Interval:
    """One row of an interval chart: a point (the rate) on a line (its interval)."""

    label: str
    value: float
    low: float
    high: float
    x: float
    x_low: float
    x_high: float
    y: float


def interval_scale(highs: list[float], *, step: float = 0.1) -> float:
    """The top of a 0..1 rate axis: the highest interval end, rounded up to ``step``."""
    steps = math.ceil(round(max(highs, default=0.0) / step, 9))
    return min(1.0, round(max(1, steps) * step, 6))


def intervals(
    items: list[tuple[str, float, float, float]],
    *,
    left: float,
    width: float,
    row: float = 30,
    top: float = 0,
) -> tuple[list[Interval], float]:
    """Rows for ``(label, value, low, high)`` items (rates in 0..1) on a shared axis from
    ``left`` to ``left + width``; and the axis's top value."""
    peak = interval_scale([h for *_, h in items])

    def x(v: float) -> float:
        return round(left + width * min(max(v, 0.0), peak) / peak, 1)

    return [
        Interval(label, value, low, high, x(value), x(low), x(high), round(top + i * row, 1))
        for i, (label, value, low, high) in enumerate(items)
    ], peak
