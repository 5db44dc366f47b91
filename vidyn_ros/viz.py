"""Pictures of frames for humans: colour-mapped depth, coloured instance masks, contact sheets (PNG, via PIL).

``contact_sheet(frame, path)`` writes one row per camera with columns colour | depth | mask and a label per tile.
``line_plot(x, {name: y}, path)`` draws curves (loss curves, metrics over a horizon) without a plotting library.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vidyn_ros.errors import OutputError
from vidyn_ros.types import MultiViewFrame

__all__ = ["colorize_depth", "colorize_mask", "contact_sheet", "image_grid", "line_plot", "mask_palette"]

# A perceptually ordered colour map (viridis-like, 9 anchors, linearly interpolated); depth 0 (no data) is black.
_CMAP_ANCHORS = np.array([
    [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
    [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
], dtype=np.float64)


def colorize_depth(depth: np.ndarray, near: float | None = None, far: float | None = None) -> np.ndarray:
    """Depth [m] (HxW float; 0 = no data) -> HxWx3 uint8 colours; near = dark purple, far = yellow, no data = black.

    ``near``/``far`` default to the 2nd / 98th percentile of the valid depths, so one outlier does not wash out the map.
    """
    d = np.asarray(depth, dtype=np.float64)
    valid = d > 0
    out = np.zeros((*d.shape, 3), dtype=np.uint8)
    if not valid.any():
        return out
    lo = float(np.percentile(d[valid], 2)) if near is None else float(near)
    hi = float(np.percentile(d[valid], 98)) if far is None else float(far)
    t = np.clip((d[valid] - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * (len(_CMAP_ANCHORS) - 1)
    i0 = np.floor(t).astype(int)
    i1 = np.minimum(i0 + 1, len(_CMAP_ANCHORS) - 1)
    f = (t - i0)[:, None]
    out[valid] = np.round(_CMAP_ANCHORS[i0] * (1 - f) + _CMAP_ANCHORS[i1] * f).astype(np.uint8)
    return out


def mask_palette(n: int) -> np.ndarray:
    """[n, 3] uint8 distinct colours for ids 0..n-1; id 0 (background) is dark grey."""
    ids = np.arange(n)
    # golden-ratio hue steps keep neighbouring ids far apart in hue
    h = (ids * 0.618033988749895) % 1.0
    s = np.where(ids % 2 == 0, 0.85, 0.6)
    v = np.where(ids % 3 == 0, 0.95, 0.8)
    k = (np.stack([5 + h * 6, 3 + h * 6, 1 + h * 6], axis=1)) % 6
    rgb = v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1)
    pal = np.round(rgb * 255).astype(np.uint8)
    if n:
        pal[0] = (40, 40, 40)
    return pal


def colorize_mask(mask: np.ndarray) -> np.ndarray:
    """Instance ids (HxW int, 0 = background) -> HxWx3 uint8, one distinct colour per id."""
    m = np.asarray(mask).astype(np.int64)
    if m.size and m.min() < 0:
        m = np.where(m < 0, 0, m)
    pal = mask_palette(int(m.max(initial=0)) + 1)
    return pal[m]


def image_grid(rows: list[list[np.ndarray]], path: str | Path, labels: list[list[str]] | None = None,
               max_tile_width: int = 320, title: str | None = None) -> Path:
    """Write a PNG grid of HxWx3 uint8 images (rows of tiles), each tile optionally labelled; returns the path.

    Tiles are resized to the first tile's size, downscaled to at most ``max_tile_width`` pixels wide.
    """
    from PIL import Image, ImageDraw

    path = Path(path)
    if not rows or not rows[0]:
        raise ValueError("image_grid: no images")
    h0, w0 = rows[0][0].shape[:2]
    scale = min(1.0, max_tile_width / w0)
    tw, th = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    label_h = 14 if labels else 0
    top = 18 if title else 0
    ncol = max(len(r) for r in rows)
    sheet = Image.new("RGB", (ncol * tw, top + len(rows) * (th + label_h)), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 2), title, fill=(255, 255, 255))
    for r, row in enumerate(rows):
        y = top + r * (th + label_h)
        for c, img in enumerate(row):
            im = Image.fromarray(np.ascontiguousarray(img)).resize((tw, th), Image.NEAREST)
            sheet.paste(im, (c * tw, y + label_h))
            if labels:
                draw.text((c * tw + 3, y + 1), labels[r][c], fill=(230, 230, 230))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path)
    except OSError as err:
        raise OutputError(f"{path}: cannot write image ({err.strerror or err})") from None
    return path


def contact_sheet(frame: MultiViewFrame, path: str | Path, max_tile_width: int = 320, title: str | None = None) -> Path:
    """Write a PNG grid: one row per camera, columns colour | depth | mask (if any), each tile labelled.

    Tiles are downscaled to at most ``max_tile_width`` pixels wide. Returns the written path.
    """
    if not frame.views:
        raise ValueError("contact_sheet: the frame has no views")
    has_mask = any(v.mask is not None for v in frame.views)
    rows, labels = [], []
    for v in frame.views:
        valid = v.depth[v.depth > 0]
        rng = f"{valid.min():.2f}-{valid.max():.2f} m" if valid.size else "no data"
        row = [v.color, colorize_depth(v.depth)]
        lab = [f"{v.camera.name} color", f"depth {rng}"]
        if has_mask:
            if v.mask is not None:
                ids = [int(i) for i in np.unique(v.mask) if i > 0]
                row.append(colorize_mask(v.mask))
                lab.append(f"mask {len(ids)} ids")
            else:
                row.append(np.zeros_like(v.color))
                lab.append("no mask")
        rows.append(row)
        labels.append(lab)
    return image_grid(rows, path, labels, max_tile_width=max_tile_width, title=title)


_LINE_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                 (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def line_plot(x: list[float] | np.ndarray, series: dict[str, list[float] | np.ndarray], path: str | Path,
              title: str = "", xlabel: str = "", ylabel: str = "", log_y: bool = False,
              size: tuple[int, int] = (640, 400), markers: bool = False) -> Path:
    """Write a PNG line chart of ``series`` (name -> y values over ``x``) with axes, ticks and a legend.

    Non-finite (and, with ``log_y``, non-positive) values are left out of the lines. Returns the path.
    """
    from PIL import Image, ImageDraw

    path = Path(path)
    W, H = size
    left, right, top, bottom = 64, 16, 28, 44
    img = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(img)
    xs = np.asarray(x, dtype=np.float64)
    ys = {k: np.asarray(v, dtype=np.float64) for k, v in series.items()}
    ok_all = [np.isfinite(v) & ((v > 0) if log_y else True) for v in ys.values()]
    vals = np.concatenate([v[m] for v, m in zip(ys.values(), ok_all, strict=True)]) if ys else np.zeros(0)
    if vals.size == 0 or xs.size == 0:
        vals = np.array([1.0, 10.0]) if log_y else np.array([0.0, 1.0])
    tr = np.log10 if log_y else (lambda v: v)
    y0, y1 = float(tr(vals.min())), float(tr(vals.max()))
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    x0, x1 = (float(np.nanmin(xs)), float(np.nanmax(xs))) if xs.size else (0.0, 1.0)
    if x1 - x0 < 1e-12:
        x0, x1 = x0 - 0.5, x1 + 0.5

    def px(xv: float, yv: float) -> tuple[float, float]:
        return (left + (xv - x0) / (x1 - x0) * (W - left - right),
                H - bottom - (yv - y0) / (y1 - y0) * (H - top - bottom))

    d.rectangle([left, top, W - right, H - bottom], outline=(0, 0, 0))
    for i in range(6):  # y ticks
        yv = y0 + (y1 - y0) * i / 5
        _, yp = px(x0, yv)
        label = f"{10 ** yv:.3g}" if log_y else f"{yv:.3g}"
        d.line([left - 4, yp, left, yp], fill=(0, 0, 0))
        d.line([left + 1, yp, W - right - 1, yp], fill=(235, 235, 235))
        d.text((4, yp - 6), label, fill=(0, 0, 0))
    integer_x = xs.size > 0 and bool(np.all(xs == np.round(xs))) and x1 - x0 <= 20
    x_ticks = np.arange(round(x0), round(x1) + 1) if integer_x else x0 + (x1 - x0) * np.arange(6) / 5
    for xv in x_ticks:  # integer x (steps, horizons): a tick at each
        xp, _ = px(float(xv), y0)
        d.line([xp, H - bottom, xp, H - bottom + 4], fill=(0, 0, 0))
        d.text((xp - 12, H - bottom + 6), f"{xv:.4g}", fill=(0, 0, 0))
    for i, ((name, v), ok) in enumerate(zip(ys.items(), ok_all, strict=True)):
        col = _LINE_COLOURS[i % len(_LINE_COLOURS)]
        pts = [px(float(a), float(tr(b))) for a, b, m in zip(xs, v, ok, strict=False) if m]
        if len(pts) > 1:
            d.line(pts, fill=col, width=2)
        if markers or len(pts) == 1:
            for p in pts:
                d.ellipse([p[0] - 2.5, p[1] - 2.5, p[0] + 2.5, p[1] + 2.5], fill=col)
        ly = top + 6 + 14 * i
        d.line([W - right - 150, ly + 6, W - right - 130, ly + 6], fill=col, width=3)
        d.text((W - right - 125, ly), name[:22], fill=(0, 0, 0))
    if title:
        d.text((left, 8), title, fill=(0, 0, 0))
    if xlabel:
        d.text(((left + W - right) / 2 - 3 * len(xlabel), H - 18), xlabel, fill=(0, 0, 0))
    if ylabel:
        d.text((4, top - 18), ylabel, fill=(0, 0, 0))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
    except OSError as err:
        raise OutputError(f"{path}: cannot write image ({err.strerror or err})") from None
    return path
