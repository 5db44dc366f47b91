"""Small PIL charts for the MPC's results (no plotting library is a dependency): line panels and table-plane path
panels, composed into PNGs by ``vidyn mpc-eval`` and ``vidyn demo``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]
GRID, AXIS, TEXT = (228, 228, 228), (120, 120, 120), (60, 60, 60)


def _nice(v: float) -> str:
    return f"{v:.3g}"


def line_panel(d: Any, box: tuple[int, int, int, int], series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
               title: str = "", xlabel: str = "", hline: float | None = None, ymin: float | None = None) -> None:
    """Lines (label, x, y) in the box (x0, y0, x1, y1) of an ImageDraw, with ticks, a legend and a title."""
    x0, y0, x1, y1 = box
    left, top, bottom = x0 + 46, y0 + 18, y1 - 18
    right = x1 - 8
    xs = [float(v) for _, x, _ in series for v in x]
    ys = [float(v) for _, _, y in series for v in y if np.isfinite(v)]
    if hline is not None:
        ys.append(hline)
    if not xs or not ys:
        xs, ys = [0.0, 1.0], [0.0, 1.0]
    xa, xb = min(xs), max(xs)
    ya = min(ys) if ymin is None else ymin
    yb = max(ys)
    if xb - xa < 1e-12:
        xb = xa + 1.0
    if yb - ya < 1e-12:
        yb = ya + 1.0

    def px(x: float, y: float) -> tuple[float, float]:
        return left + (x - xa) / (xb - xa) * (right - left), bottom - (y - ya) / (yb - ya) * (bottom - top)

    d.text((x0 + 4, y0 + 2), title, fill=(0, 0, 0))
    for i in range(5):
        yv = ya + (yb - ya) * i / 4
        _, v = px(xa, yv)
        d.line([(left, v), (right, v)], fill=GRID)
        d.text((x0 + 2, v - 6), _nice(yv), fill=TEXT)
        xv = xa + (xb - xa) * i / 4
        u, _ = px(xv, ya)
        d.text((u - 10, bottom + 3), _nice(xv), fill=TEXT)
    d.rectangle([left, top, right, bottom], outline=AXIS)
    if xlabel:
        d.text((right - 7 * len(xlabel), bottom + 3 + 0), "", fill=TEXT)
        d.text(((left + right) / 2 - 3 * len(xlabel), y1 - 12), xlabel, fill=TEXT)
    if hline is not None:
        _, v = px(xa, hline)
        d.line([(left, v), (right, v)], fill=(0, 0, 0), width=1)
    for i, (label, x, y) in enumerate(series):
        col = PALETTE[i % len(PALETTE)]
        pts = [px(float(a), float(b)) for a, b in zip(x, y, strict=True) if np.isfinite(b)]
        if len(pts) > 1:
            d.line(pts, fill=col, width=2)
        for u, v in pts if len(pts) < 30 else []:
            d.ellipse([u - 2, v - 2, u + 2, v + 2], fill=col)
        d.text((left + 6, top + 4 + 12 * i), label, fill=col)


def path_panel(d: Any, box: tuple[int, int, int, int], paths: Sequence[tuple[np.ndarray, tuple[int, int, int], int]],
               marks: Sequence[tuple[float, float, str, tuple[int, int, int]]] = (), circles: Sequence[
                   tuple[float, float, float, tuple[int, int, int]]] = (), lim: float = 0.3, title: str = "") -> None:
    """The table plane (x right, y up, +-lim m) in the box: paths ([T, 2], colour, width), marks (x, y, 'o'|'x',
    colour) and circles (x, y, radius m, colour)."""
    x0, y0, x1, y1 = box
    top = y0 + (14 if title else 2)
    size = min(x1 - x0, y1 - top) - 4
    left = x0 + (x1 - x0 - size) / 2

    def px(x: float, y: float) -> tuple[float, float]:
        return left + (x + lim) / (2 * lim) * size, top + (1 - (y + lim) / (2 * lim)) * size

    if title:
        d.text((x0 + 2, y0), title, fill=(0, 0, 0))
    d.rectangle([left, top, left + size, top + size], outline=AXIS)
    for xy, col, w in paths:
        pts = [px(float(a), float(b)) for a, b in np.asarray(xy)[:, :2]]
        if len(pts) > 1:
            d.line(pts, fill=col, width=w)
    for x, y, r, col in circles:
        u, v = px(x, y)
        rr = r / (2 * lim) * size
        d.ellipse([u - rr, v - rr, u + rr, v + rr], outline=col, width=2)
    for x, y, kind, col in marks:
        u, v = px(x, y)
        if kind == "x":
            d.line([(u - 4, v - 4), (u + 4, v + 4)], fill=col, width=2)
            d.line([(u - 4, v + 4), (u + 4, v - 4)], fill=col, width=2)
        else:
            d.ellipse([u - 4, v - 4, u + 4, v + 4], outline=col, width=2)


def save(img: Any, path: str | Path) -> Path:
    from vidyn_ros.errors import OutputError

    p = Path(path)
    try:
        img.save(p)
    except OSError as err:
        raise OutputError(f"{p}: cannot write image ({err.strerror or err})") from None
    return p
