"""Geometry against simulator truth, shared by the scene evaluation and the dynamics evaluation (numpy, no torch).

Ground truth is the simulated rig's: object shapes (``SimRig.object_shapes``: id -> (shape, MuJoCo size)) and poses
(``RigFrame.object_poses``). It is for evaluation only; nothing here is a perception or training input.

- :func:`sample_surface` / :func:`object_surface_points`: points sampled uniformly (by area) on the true surfaces.
- :func:`chamfer_distance`: symmetric Chamfer distance between two point sets, with its two one-sided terms.
- :func:`delta_within`: fractions of predicted points within thresholds of the reference (the paper's δ).
- :func:`true_object_ids`: per point, the true object whose surface it lies on (the nearest true surface, the table
  plane included where no object covers it; 0 = table / background); the reference for id accuracy (not the masks
  the scene was given). :func:`contact_band`: points on an object's contact face, where the table's id is right too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vidyn_ros.geometry import quat_wxyz_to_matrix
from vidyn_ros.types import ObjectPose

# Thresholds [m] for δ: the paper's 5/10/20 cm, and 1/2/4 cm for tabletop-sized objects.
DELTA_THRESHOLDS_PAPER = (0.05, 0.10, 0.20)
DELTA_THRESHOLDS_TABLETOP = (0.01, 0.02, 0.04)

ObjectShapes = Mapping[int, tuple[str, np.ndarray]]  # id -> (box | sphere | cylinder | capsule, MuJoCo size)


def _area_weights(shape: str, size: np.ndarray) -> tuple[list[str], np.ndarray]:
    s = np.asarray(size, dtype=np.float64)
    if shape == "box":
        hx, hy, hz = s[:3]
        return ["x", "y", "z"], np.array([hy * hz, hx * hz, hx * hy]) * 8.0  # both faces of each axis
    if shape == "sphere":
        return ["sphere"], np.array([4 * np.pi * s[0] ** 2])
    if shape == "cylinder":
        r, h = s[:2]
        return ["side", "caps"], np.array([2 * np.pi * r * 2 * h, 2 * np.pi * r * r])
    if shape == "capsule":
        r, h = s[:2]
        return ["side", "ends"], np.array([2 * np.pi * r * 2 * h, 4 * np.pi * r * r])
    raise ValueError(f"unknown shape {shape!r} (expected box, sphere, cylinder or capsule)")


def surface_area(shape: str, size: Sequence[float] | np.ndarray) -> float:
    """Total surface area [m^2] of a shape (MuJoCo size parameters)."""
    return float(_area_weights(shape, np.asarray(size))[1].sum())


def _unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def sample_surface(shape: str, size: Sequence[float] | np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points uniformly distributed (by area) on a shape's surface, in the shape's frame (origin at its centre,
    cylinder / capsule axis along z, MuJoCo size conventions: box half-extents, radius, half-length) -> [n, 3]."""
    rng = np.random.default_rng(seed)
    s = np.asarray(size, dtype=np.float64)
    parts, w = _area_weights(shape, s)
    which = rng.choice(len(parts), size=n, p=w / w.sum())
    out = np.zeros((n, 3))
    for i, part in enumerate(parts):
        sel = np.flatnonzero(which == i)
        m = len(sel)
        if m == 0:
            continue
        if shape == "box":
            axis = "xyz".index(part)
            p = rng.uniform(-1.0, 1.0, (m, 3)) * s[:3]
            p[:, axis] = np.where(rng.random(m) < 0.5, -1.0, 1.0) * s[axis]
        elif part == "sphere":
            p = _unit_vectors(m, rng) * s[0]
        elif part == "side":
            phi = rng.uniform(0.0, 2 * np.pi, m)
            p = np.stack([s[0] * np.cos(phi), s[0] * np.sin(phi), rng.uniform(-s[1], s[1], m)], axis=1)
        elif part == "caps":  # uniform on a disk: radius ~ sqrt(u)
            phi = rng.uniform(0.0, 2 * np.pi, m)
            r = s[0] * np.sqrt(rng.random(m))
            z = np.where(rng.random(m) < 0.5, -1.0, 1.0) * s[1]
            p = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
        else:  # capsule ends: a sphere split at the equator, each half moved to its end of the axis
            p = _unit_vectors(m, rng) * s[0]
            p[:, 2] += np.sign(p[:, 2] + 1e-12) * s[1]
        out[sel] = p
    return out


def object_surface_points(
    shapes: ObjectShapes,
    poses: Sequence[ObjectPose],
    n_per_object: int = 2000,
    seed: int = 0,
    min_height: float | None = 0.002,
) -> dict[int, np.ndarray]:
    """World-frame surface samples per object at the given poses: id -> [M, 3].

    The same canonical samples are used at every pose (seeded per object), so a metric over time compares like with
    like. ``min_height``: samples lower than this above the table plane z = 0 are dropped (the face an object stands
    on: no camera can see it); None keeps the whole surface.
    """
    out = {}
    for p in poses:
        k = int(p.object_id)
        if k not in shapes:
            continue
        shape, size = shapes[k]
        local = sample_surface(shape, size, n_per_object, seed=seed * 1000 + k)
        R = quat_wxyz_to_matrix(np.asarray(p.quat_wxyz, dtype=np.float64))
        pts = local @ R.T + np.asarray(p.position, dtype=np.float64)
        if min_height is not None:
            pts = pts[pts[:, 2] >= min_height]
        out[k] = pts
    return out


@dataclass
class Chamfer:
    """Chamfer distance between a predicted point set P and a reference set S [m].

    ``accuracy``: mean over P of the distance to the nearest point of S (are the predicted points on the surface?);
    ``completeness``: mean over S of the distance to the nearest point of P (is the surface covered?);
    ``distance`` = (accuracy + completeness) / 2.
    """

    distance: float
    accuracy: float
    completeness: float


def chamfer_distance(pred: np.ndarray, ref: np.ndarray) -> Chamfer:
    """Symmetric Chamfer distance (see :class:`Chamfer`); NaN when either set is empty."""
    from scipy.spatial import cKDTree

    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1, 3)
    if len(pred) == 0 or len(ref) == 0:
        nan = float("nan")
        return Chamfer(nan, nan, nan)
    acc = float(cKDTree(ref).query(pred, k=1)[0].mean())
    comp = float(cKDTree(pred).query(ref, k=1)[0].mean())
    return Chamfer((acc + comp) / 2.0, acc, comp)


def delta_within(pred: np.ndarray, ref: np.ndarray, thresholds: Sequence[float] = DELTA_THRESHOLDS_TABLETOP
                 ) -> dict[float, float]:
    """Fraction of ``pred`` points whose nearest ``ref`` point is closer than each threshold [m] (the paper's δ;
    their mean is δ_avg). NaN for an empty set."""
    from scipy.spatial import cKDTree

    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1, 3)
    if len(pred) == 0 or len(ref) == 0:
        return {float(t): float("nan") for t in thresholds}
    d = cKDTree(ref).query(pred, k=1)[0]
    return {float(t): float((d < t).mean()) for t in thresholds}


def true_object_ids(points: np.ndarray, shapes: ObjectShapes, poses: Sequence[ObjectPose],
                    max_distance: float = 0.05, cover_height: float = 0.003) -> np.ndarray:
    """[N] the true object each world point lies on: whichever true surface is nearest, the objects' or the table
    plane z = 0 (id 0); points farther than ``max_distance`` from every surface are background (0) too.

    The table plane competes only where no object stands on it: where an object's solid reaches down to within
    ``cover_height`` of the table at a point's (x, y), that object's contact face is the surface there. Otherwise a
    Gaussian on a contact face (a cube toppled onto a face that had Gaussians: inside its solid by a few mm) ties
    with the table plane and was counted as table (cube_stack: 6 % of all Gaussians after the topple). Where a
    table Gaussian lies under an object that moved onto it, both surfaces coincide: :func:`contact_band` marks
    these points, where the table (0) is right as well."""
    return _true_ids(points, shapes, poses, max_distance, cover_height)[0]


def contact_band(points: np.ndarray, shapes: ObjectShapes, poses: Sequence[ObjectPose], band: float = 0.01,
                 cover_height: float = 0.003) -> np.ndarray:
    """[N] bool: the point lies within ``band`` of the table plane where an object covers the table (its contact
    face). There the object's surface and the table's coincide, so either id is the true one: :func:`true_object_ids`
    gives the object's, the table (0) is right too (a table Gaussian an object slid over)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return _true_ids(pts, shapes, poses, np.inf, cover_height)[1] & (np.abs(pts[:, 2]) < band)


def _true_ids(points: np.ndarray, shapes: ObjectShapes, poses: Sequence[ObjectPose], max_distance: float,
              cover_height: float) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N], covered [N]: an object's solid reaches to ``cover_height`` above the table at the point's x, y)."""
    from vidyn_ros.rig.scenario import shape_sdf

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    lifted = pts.copy()
    lifted[:, 2] = cover_height  # the point's vertical projection, just above the table
    best = np.full(len(pts), np.inf)
    ids = np.zeros(len(pts), dtype=np.int64)
    covered = np.zeros(len(pts), dtype=bool)
    for p in poses:
        k = int(p.object_id)
        if k not in shapes:
            continue
        shape, size = shapes[k]
        R = quat_wxyz_to_matrix(np.asarray(p.quat_wxyz))
        pos = np.asarray(p.position, dtype=np.float64)
        d = np.abs(shape_sdf((pts - pos) @ R, shape, size))
        covered |= shape_sdf((lifted - pos) @ R, shape, size) < 0
        closer = d < best
        best[closer] = d[closer]
        ids[closer] = k
    table = np.where(covered, np.inf, np.abs(pts[:, 2]))
    on_table = table <= best  # a tie on open table is the table's
    best[on_table] = table[on_table]
    ids[on_table] = 0
    ids[best > max_distance] = 0
    return ids, covered
