"""Pictures of frames for humans: colour-mapped depth, coloured instance masks, contact sheets (PNG, via PIL).

``contact_sheet(frame, path)`` writes one row per camera with columns colour | depth | mask and a label per tile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vidyn_ros.errors import OutputError
from vidyn_ros.types import MultiViewFrame

__all__ = ["colorize_depth", "colorize_mask", "contact_sheet", "image_grid", "mask_palette"]

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
