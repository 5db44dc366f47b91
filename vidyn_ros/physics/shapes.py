"""Collision shapes fitted to an object's Gaussians (numpy; not differentiated).

The scene only sees surfaces, and only their visible side: the Gaussians of a block on the table cover its top and
side faces, never the bottom. A fit therefore assumes what a tabletop implies: an object whose lowest Gaussians are
within ``floor_tolerance`` of the table rests on it (its shape reaches down to z = 0). Candidates, each scored by the
mean unsigned distance of the Gaussian centres to the candidate's surface (``rig.scenario.shape_sdf``):

- upright box: z along world z, yaw from the minimum-area rectangle around the footprint (convex hull, rotating
  calipers), extents from robust percentiles;
- upright cylinder: circle fit of the side's footprint (algebraic least squares; the top cap lies inside the circle),
  radius from the side points' distances, height from the z range;
- sphere: algebraic least-squares sphere;
- box in the principal axes of the points (objects that are not upright, e.g. a toppled cube).

The best score wins; a box is preferred within ``prefer_box`` of the best (boxes also stand in well for irregular
objects). The result is a :class:`Fit`: shape, centre, rotation (wxyz) and the score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vidyn_ros.geometry import matrix_to_quat_wxyz, quat_wxyz_to_matrix
from vidyn_ros.physics._warp_sim import ShapeSpec
from vidyn_ros.rig.scenario import shape_sdf

__all__ = ["Fit", "fit_shape", "lowest_point", "min_area_rectangle", "separate", "surface_points"]


@dataclass(frozen=True)
class Fit:
    """A primitive fitted to points: shape (MuJoCo size convention), centre [3] and rotation (w, x, y, z) in the world
    frame, and the mean distance [m] of the points to its surface."""

    shape: ShapeSpec
    center: np.ndarray
    quat_wxyz: np.ndarray
    residual: float

    @property
    def rotation(self) -> np.ndarray:
        from vidyn_ros.geometry import quat_wxyz_to_matrix

        return quat_wxyz_to_matrix(self.quat_wxyz)


def _score(points_local: np.ndarray, shape: ShapeSpec) -> float:
    return float(np.mean(np.abs(shape_sdf(points_local, shape.kind, shape.size))))


def min_area_rectangle(xy: np.ndarray) -> tuple[float, np.ndarray]:
    """Angle [rad] of the minimum-area rectangle enclosing 2D points [N, 2] (one edge along the angle), and its
    centre [2] (rotating calipers over the convex hull)."""
    from scipy.spatial import ConvexHull

    xy = np.asarray(xy, dtype=np.float64)
    try:
        hull = xy[ConvexHull(xy).vertices]
    except Exception:  # degenerate (collinear) footprints: any angle will do
        return 0.0, xy.mean(axis=0)
    best = (math.inf, 0.0, xy.mean(axis=0))
    edges = np.roll(hull, -1, axis=0) - hull
    for e in edges:
        a = math.atan2(e[1], e[0]) % (math.pi / 2)
        c, s = math.cos(a), math.sin(a)
        R = np.array([[c, -s], [s, c]])
        loc = hull @ R  # coordinates along the rectangle's axes
        lo, hi = loc.min(axis=0), loc.max(axis=0)
        area = float(np.prod(hi - lo))
        if area < best[0]:
            best = (area, a, R @ ((lo + hi) / 2))
    return best[1], best[2]


def _circle_fit(xy: np.ndarray) -> tuple[np.ndarray, float]:
    """Algebraic (Kasa) circle fit -> centre [2], radius."""
    A = np.c_[2 * xy, np.ones(len(xy))]
    b = (xy**2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    c = sol[:2]
    r = math.sqrt(max(sol[2] + c @ c, 1e-12))
    return c, r


def _sphere_fit(p: np.ndarray) -> tuple[np.ndarray, float]:
    A = np.c_[2 * p, np.ones(len(p))]
    b = (p**2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    c = sol[:3]
    r = math.sqrt(max(sol[3] + c @ c, 1e-12))
    return c, r


def _resting_sphere_fit(p: np.ndarray) -> tuple[np.ndarray, float]:
    """Algebraic sphere fit with its bottom on the table (centre z = radius): |p|² = 2 p_x c_x + 2 p_y c_y + 2 p_z r
    - (c_x² + c_y²), linear in (c_x, c_y, r, c_x² + c_y²)."""
    A = np.c_[2 * p, -np.ones(len(p))]
    b = (p**2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    return np.array([sol[0], sol[1], sol[2]]), float(sol[2])


def fit_shape(
    points: np.ndarray,
    floor_tolerance: float = 0.015,
    percentile: float = 1.0,
    prefer_box: float = 0.0005,
    min_size: float = 0.003,
    max_reach: float = 1.25,
) -> Fit:
    """Fit a box, cylinder or sphere to one object's Gaussian centres [N, 3] (world frame, table at z = 0).

    Candidates that no object could be are dropped: a cylinder or sphere wider than ``max_reach`` x the points'
    own half-extent (a flat arc or cap fits a huge circle), a sphere or tilted box reaching through the table."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(p) < 4:
        raise ValueError(f"need at least 4 points to fit a shape, got {len(p)}")
    lo_q, hi_q = percentile, 100.0 - percentile
    z_lo, z_hi = np.percentile(p[:, 2], [lo_q, hi_q])
    resting = z_lo < floor_tolerance
    z_bottom = 0.0 if resting else z_lo
    hz = max((z_hi - z_bottom) / 2, min_size)
    zc = z_bottom + hz
    cands: list[Fit] = []

    # upright box
    angle, _ = min_area_rectangle(p[:, :2])
    c, s = math.cos(angle), math.sin(angle)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    loc = p[:, :2] @ R[:2, :2]
    lo, hi = np.percentile(loc, lo_q, axis=0), np.percentile(loc, hi_q, axis=0)
    half = np.maximum((hi - lo) / 2, min_size)
    centre_xy = R[:2, :2] @ ((lo + hi) / 2)
    centre = np.array([centre_xy[0], centre_xy[1], zc])
    box = ShapeSpec("box", (float(half[0]), float(half[1]), float(hz)))
    cands.append(Fit(box, centre, matrix_to_quat_wxyz(R), _score((p - centre) @ R, box)))

    # upright cylinder: the circle from the side Gaussians (the top cap's lie inside it and would shrink an
    # algebraic fit), the radius as a high percentile of their distances (the visible side is an arc)
    side = p[p[:, 2] < z_hi - 0.25 * (z_hi - z_bottom)]
    ring = side if len(side) >= 8 else p
    cxy, _ = _circle_fit(ring[:, :2])
    r = max(float(np.percentile(np.linalg.norm(ring[:, :2] - cxy, axis=1), hi_q)), min_size)
    centre = np.array([cxy[0], cxy[1], zc])
    cyl = ShapeSpec("cylinder", (float(r), float(hz)))
    # a short, flat arc of a partly seen object fits any big circle well: no wider than the footprint it came from
    if r <= max_reach * float(half.max()):
        cands.append(Fit(cyl, centre, np.array([1.0, 0.0, 0.0, 0.0]), _score(p - centre, cyl)))

    # sphere (resting on the table when its bottom is near it, or when a free fit would reach through the table:
    # a shallow cap of points -- the top of a partly seen object -- fits a big sphere centred below the table)
    cs, rs = _sphere_fit(p)
    rs = max(rs, min_size)
    if cs[2] - rs < -floor_tolerance:
        cs, rs = _resting_sphere_fit(p)
        rs = max(rs, min_size)
        cs[2] = rs
    elif resting and abs(cs[2] - rs) < floor_tolerance:
        cs = np.array([cs[0], cs[1], rs])
    sph = ShapeSpec("sphere", (float(rs),))
    if rs <= max_reach * max(float(half.max()), hz):
        cands.append(Fit(sph, cs, np.array([1.0, 0.0, 0.0, 0.0]), _score(p - cs, sph)))

    # box in principal axes (not upright)
    mean = p.mean(axis=0)
    _, _, vt = np.linalg.svd(p - mean, full_matrices=False)
    Rp = vt.T
    if np.linalg.det(Rp) < 0:
        Rp[:, 2] *= -1
    loc = (p - mean) @ Rp
    lo3, hi3 = np.percentile(loc, lo_q, axis=0), np.percentile(loc, hi_q, axis=0)
    half3 = np.maximum((hi3 - lo3) / 2, min_size)
    centre = mean + Rp @ ((lo3 + hi3) / 2)
    pbox = ShapeSpec("box", tuple(float(h) for h in half3))
    qbox = matrix_to_quat_wxyz(Rp)
    if lowest_point(pbox, centre, qbox) >= -floor_tolerance:  # a tilted box reaching through the table is no object
        cands.append(Fit(pbox, centre, qbox, _score((p - centre) @ Rp, pbox)))

    best = min(c.residual for c in cands)
    boxes = [c for c in cands if c.shape.kind == "box" and c.residual <= best + prefer_box]
    return min(boxes, key=lambda c: c.residual) if boxes else min(cands, key=lambda c: c.residual)


def surface_points(shape: ShapeSpec, n: int, rng: np.random.Generator, bottom: bool = False) -> np.ndarray:
    """[~n, 3] points on a shape's surface in its own frame (rejection-free area sampling; the bottom face/cap
    below z = 0 of the body frame's lowest part excluded unless ``bottom``: cameras above a table never see it)."""
    s = shape.size
    if shape.kind == "box":
        hx, hy, hz = s
        faces = [((0, 1), 2, hz), ((0, 1), 2, -hz), ((0, 2), 1, hy), ((0, 2), 1, -hy), ((1, 2), 0, hx),
                 ((1, 2), 0, -hx)]
        if not bottom:
            faces.pop(1)
        areas = np.array([4 * s[a] * s[b] for (a, b), _, _ in faces])
        counts = rng.multinomial(n, areas / areas.sum())
        out = []
        for ((a, b), axis, v), m in zip(faces, counts, strict=True):
            p = np.zeros((m, 3))
            p[:, a] = rng.uniform(-s[a], s[a], m)
            p[:, b] = rng.uniform(-s[b], s[b], m)
            p[:, axis] = v
            out.append(p)
        return np.concatenate(out)
    if shape.kind == "sphere":
        d = rng.normal(size=(n * 2, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        if not bottom:
            d = d[d[:, 2] > -0.7]
        return d[:n] * s[0]
    if shape.kind in ("cylinder", "capsule"):
        r, h = s
        side = 2 * np.pi * r * 2 * h
        cap = np.pi * r * r
        m_side = int(n * side / (side + cap * (2 if bottom else 1)))
        a = rng.uniform(0, 2 * np.pi, m_side)
        pts = [np.c_[r * np.cos(a), r * np.sin(a), rng.uniform(-h, h, m_side)]]
        for z in ([h, -h] if bottom else [h]):
            m = (n - m_side) // (2 if bottom else 1)
            rr = r * np.sqrt(rng.uniform(0, 1, m))
            aa = rng.uniform(0, 2 * np.pi, m)
            pts.append(np.c_[rr * np.cos(aa), rr * np.sin(aa), np.full(m, z)])
        return np.concatenate(pts)
    raise ValueError(f"unknown shape kind {shape.kind!r}")


def lowest_point(shape: ShapeSpec, center: np.ndarray, quat_wxyz: np.ndarray) -> float:
    """z [m] of a posed shape's lowest point (exact for box, sphere, cylinder, capsule)."""
    R = quat_wxyz_to_matrix(np.asarray(quat_wxyz, dtype=np.float64))
    s = shape.size
    z = float(center[2])
    if shape.kind == "box":
        return z - float(np.abs(R[2]) @ np.asarray(s[:3]))
    if shape.kind == "sphere":
        return z - s[0]
    axis_z = abs(float(R[2, 2]))  # cos of the axis' tilt: the rim (cylinder) / the end caps (capsule) reach lowest
    if shape.kind == "cylinder":
        return z - s[1] * axis_z - s[0] * math.sqrt(max(1.0 - axis_z**2, 0.0))
    return z - s[1] * axis_z - s[0]  # capsule


def _half_width(shape: ShapeSpec, R: np.ndarray, n: np.ndarray) -> float:
    """Half the extent of a posed shape (rotation R) projected on the unit direction n (its support function)."""
    s = shape.size
    if shape.kind == "box":
        return float(np.abs(R.T @ n) @ np.asarray(s[:3]))
    if shape.kind == "sphere":
        return float(s[0])
    a = abs(float(R[:, 2] @ n))
    if shape.kind == "cylinder":
        return float(s[1] * a + s[0] * math.sqrt(max(1.0 - a * a, 0.0)))
    return float(s[1] * a + s[0])  # capsule


def _probe_points(shape: ShapeSpec) -> np.ndarray:
    """Points on a shape's surface (body frame) to test overlaps with: an even sample plus a box's corners."""
    pts = surface_points(shape, 256, np.random.default_rng(0), bottom=True)
    if shape.kind == "box":
        corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * np.asarray(shape.size)
        pts = np.concatenate([pts, corners])
    return pts


def separate(shapes: list[ShapeSpec], centers: np.ndarray, quats_wxyz: np.ndarray, movable: np.ndarray,
             tol: float = 1e-4, iterations: int = 50) -> tuple[np.ndarray, float, float]:
    """Translate posed shapes out of each other and out of the table (z < 0) before a simulation starts.

    Shapes fitted to tracked, partly seen clouds overlap (a few mm between neighbouring pins, centimetres into the
    table); penalty contact turns an overlap d into a force k_e·d that launches a light body at metres per second
    in the first frame. Each iteration lifts every movable shape out of the table and pushes every overlapping pair
    apart along the axis that separates them with the shortest move (half each; all of it for a pair with a fixed
    shape), until no overlap (sampled: the probes of one shape inside the other) exceeds ``tol`` [m]. The axis is
    not the nearest face of the deepest point: two blocks side by side on the table would be pushed down and
    lifted back for ever.

    Args:
        shapes: [K]; centers [K, 3]; quats_wxyz [K, 4]; movable [K] bool.
    Returns:
        (new centres [K, 3], the deepest overlap before [m], the deepest left after [m]).
    """
    c = np.asarray(centers, dtype=np.float64).copy()
    K = len(shapes)
    R = [quat_wxyz_to_matrix(np.asarray(q, dtype=np.float64)) for q in quats_wxyz]
    probes = [_probe_points(s) for s in shapes]
    reach = [float(np.linalg.norm(p, axis=1).max()) for p in probes]

    def overlap(i: int, j: int) -> float:
        """How deep shape i's surface reaches into shape j (sampled)."""
        loc = (probes[i] @ R[i].T + c[i] - c[j]) @ R[j]
        return float(max(-shape_sdf(loc, shapes[j].kind, shapes[j].size).min(), 0.0))

    def push(i: int, j: int) -> tuple[float, np.ndarray]:
        """The shortest translation of i away from j along candidate separating axes (both shapes' axes, the line
        between the centres, horizontal and not, and the vertical): the projections' overlap along each axis, the
        smallest wins. Exact for spheres and for boxes whose closest features are faces; never pushes along a
        direction the shapes are already apart on."""
        d = c[i] - c[j]
        axes = [a / np.linalg.norm(a) for a in (*R[i].T, *R[j].T, np.array([0.0, 0.0, 1.0]), d,
                                                 np.array([d[0], d[1], 0.0])) if np.linalg.norm(a) > 1e-9]
        if max(lowest_point(shapes[k], c[k], quats_wxyz[k]) for k in (i, j)) < 1e-3:
            # both rest on the table: they are side by side, not one on the other (lifting one by its height can
            # be shorter than the sideways move, but it stacks two pins that lay next to each other)
            flat = [a * np.array([1.0, 1.0, 0.0]) for a in axes]
            axes = [a / np.linalg.norm(a) for a in flat if np.linalg.norm(a) > 0.3]
        best, best_n = math.inf, np.zeros(3)
        for n in axes:
            o = _half_width(shapes[i], R[i], n) + _half_width(shapes[j], R[j], n) - abs(float(d @ n))
            if o < best:
                best, best_n = o, (n if d @ n >= 0 else -n)
        return best, best_n

    def deepest() -> float:
        worst = 0.0
        for i in range(K):
            if movable[i]:
                worst = max(worst, -lowest_point(shapes[i], c[i], quats_wxyz[i]))
            for j in range(K):
                if i != j and (movable[i] or movable[j]) and np.linalg.norm(c[i] - c[j]) < reach[i] + reach[j]:
                    worst = max(worst, overlap(i, j))
        return worst

    before = deepest()
    for _ in range(iterations):
        moved = 0.0
        for i in range(K):
            for j in range(i + 1, K):
                if not (movable[i] or movable[j]) or np.linalg.norm(c[i] - c[j]) >= reach[i] + reach[j]:
                    continue
                if max(overlap(i, j), overlap(j, i)) <= tol:
                    continue
                d, n = push(i, j)  # n moves i away from j
                if d <= 0:
                    continue
                share_i = 0.5 if movable[i] and movable[j] else float(movable[i])
                c[i] += n * d * share_i
                c[j] -= n * d * (1.0 - share_i)
                moved = max(moved, d)
        for i in range(K):
            low = lowest_point(shapes[i], c[i], quats_wxyz[i])
            if movable[i] and low < 0.0:
                c[i, 2] -= low
                moved = max(moved, -low)
        if moved <= tol:
            break
    return c, before, deepest()
