"""Weight-free instance segmentation for real rigs: table plane + clustering of the fused multi-view point cloud.

No learned weights. For one synchronised MultiViewFrame (calibrated cameras):

1. every view's depth is back-projected into the world frame (one fused cloud, each point remembers its pixel);
2. the table plane is found with RANSAC (open3d ``segment_plane``) and points more than ``min_height`` above it,
   inside the workspace, are object candidates;
3. candidates are split into spatially connected components on a voxel grid (Euclidean clustering), and each
   component is split again by colour: peaks of its hue histogram in rg-chromaticity (shading-invariant under white
   light) plus one achromatic class, so that touching objects of different colours — a stack of cubes — separate;
   tiny clusters are dropped;
4. the labels go back to the pixels they came from, so all views get consistent instance masks;
5. ids are kept stable over time by matching clusters to the tracked objects (Hungarian assignment on the distance
   to each object's constant-velocity prediction plus a colour term, both gated; objects that vanish are remembered
   for ``max_missing`` frames).

An external mask source (e.g. a SAM node publishing per-view masks with arbitrary ids) can replace steps 2-3:
:meth:`InstanceSegmenter.segment` with ``external`` masks lifts each view's segments to 3D, merges segments of
different views whose 3D centroids coincide, and tracks them with the same step 5, so ids agree across views and time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vidyn_ros.geometry import pixel_rays
from vidyn_ros.types import MultiViewFrame


@dataclass
class SegmenterConfig:
    """Parameters (SI units). Defaults suit a tabletop seen from ~0.6 m at 160x120 to 640x480."""

    stride: int = 1  # use every stride-th pixel in both directions (2 at 640x480: 4x faster, masks upsampled)
    min_height: float = 0.003  # points this far above the table plane are object candidates [m]
    max_height: float = 0.5  # ... and below this [m]
    workspace: tuple[float, float, float, float] = (-0.5, -0.5, 0.5, 0.5)  # x_min, y_min, x_max, y_max [m]
    fit_plane: bool = True  # RANSAC the table plane (else: the world z = 0 plane of the calibration)
    plane_threshold: float = 0.004  # RANSAC inlier distance [m]
    voxel: float = 0.01  # voxel size for connectivity [m]
    neighbor_voxels: int = 1  # voxels within this Chebyshev distance are connected
    min_points: int = 20  # smallest cluster kept (fused points over all views)
    min_saturation: float = 0.05  # rg-chromaticity distance from white below which a pixel is achromatic (grey)
    dark_level: int = 15  # pixels darker than this (max channel) are achromatic too (their hue is noise)
    hue_bin_deg: float = 5.0  # hue histogram bin [deg]
    # hue peaks closer than this are one colour. 15: red / orange / magenta objects (22-23 deg apart) separate when
    # they touch (bowling at 640x480: mean IoU 0.53 -> 0.79, id switches 23 -> 5 against 25 deg; push and cube_stack
    # unchanged; docs/scene.md)
    hue_min_separation_deg: float = 15.0
    colour_min_fraction: float = 0.04  # a colour class needs this fraction of its component's points
    match_distance: float = 0.1  # largest distance from an id's predicted centroid (constant velocity) [m]
    colour_weight: float = 0.5  # matching cost per unit of rg-chromaticity difference [m]
    colour_gate: float = 0.15  # largest rg-chromaticity difference for the same id
    max_missing: int = 15  # frames an unseen object keeps its id
    merge_distance: float = 0.03  # external masks: segments of different views closer than this are one object [m]
    seed: int = 0  # RANSAC seed


@dataclass
class TrackedObject:
    object_id: int
    centroid: np.ndarray  # [3] world [m]
    color: np.ndarray  # [2] mean rg chromaticity
    n_points: int
    last_seen: int
    missing: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # centroid motion per frame [m]


@dataclass
class SegmentationResult:
    masks: list[np.ndarray]  # per view HxW int32 instance ids, 0 = background
    objects: list[TrackedObject]  # objects seen in this frame
    plane: np.ndarray  # [4] table plane (a, b, c, d), normal up, a x + b y + c z + d = 0
    timings_ms: dict[str, float] = field(default_factory=dict)


class InstanceSegmenter:
    """Stateful (ids persist across calls) segmenter; see the module docstring."""

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self.cfg = config or SegmenterConfig()
        self.tracks: dict[int, TrackedObject] = {}
        self.next_id = 1
        self.frame_index = 0

    def reset(self) -> None:
        self.tracks.clear()
        self.next_id = 1
        self.frame_index = 0

    # --------------------------------------------------------------------------------------------------- main entry
    def segment(self, frame: MultiViewFrame, external: list[np.ndarray] | None = None) -> SegmentationResult:
        """Instance masks for every view of ``frame`` (same order). ``external``: per-view masks from another source
        (ids local to each view, 0 = background) to lift, merge across views and track instead of clustering."""
        import time

        t0 = time.perf_counter()
        pts, rgb, view_idx, pix_idx = self._fuse(frame)
        t1 = time.perf_counter()
        plane = self._table_plane(pts)
        t2 = time.perf_counter()
        if external is None:
            height = pts @ plane[:3] + plane[3]
            keep = (height > self.cfg.min_height) & (height < self.cfg.max_height) & self._in_workspace(pts)
            labels = np.full(len(pts), -1, dtype=np.int64)
            labels[keep] = self._cluster(pts[keep], rgb[keep])
        else:
            labels = self._external_labels(frame, external, pts, view_idx, pix_idx)
        t3 = time.perf_counter()
        ids = self._track(pts, rgb, labels)
        t4 = time.perf_counter()
        masks = []
        for v, view in enumerate(frame.views):
            h, w = view.depth.shape
            m = np.zeros(h * w, dtype=np.int32)
            sel = (view_idx == v) & (labels >= 0)
            m[pix_idx[sel]] = ids[labels[sel]]
            m = m.reshape(h, w)
            st = self.cfg.stride
            if st > 1:  # nearest-neighbour upsampling of the sampled grid
                m = np.repeat(np.repeat(m[::st, ::st], st, axis=0), st, axis=1)[:h, :w]
                m[view.depth <= 0] = 0
            masks.append(np.ascontiguousarray(m))
        self.frame_index += 1
        seen = [t for t in self.tracks.values() if t.last_seen == self.frame_index - 1]
        timings = {"fuse": (t1 - t0) * 1e3, "plane": (t2 - t1) * 1e3, "cluster": (t3 - t2) * 1e3,
                   "track": (t4 - t3) * 1e3, "total": (time.perf_counter() - t0) * 1e3}
        return SegmentationResult(masks, seen, plane, timings)

    # -------------------------------------------------------------------------------------------------- the cloud
    def _fuse(self, frame: MultiViewFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Valid depth pixels of all views -> world points [N, 3] float32, colours [N, 3] uint8, view [N], pixel [N]."""
        pts, cols, vidx, pidx = [], [], [], []
        for v, view in enumerate(frame.views):
            cam = view.camera
            d = view.depth.reshape(-1)
            if self.cfg.stride > 1:
                valid = np.flatnonzero((d > 0) & self._grid(cam.width, cam.height))
            else:
                valid = np.flatnonzero(d > 0)
            rays = self._rays(cam)[valid]  # [M, 3] camera-frame direction with z = 1
            T = cam.T_world_cam.astype(np.float32)
            Rt = np.ascontiguousarray(T[:3, :3].T)  # contiguous: numpy's matmul is ~5x slower on a transposed view
            # x_world = R (ray * z) + t = z * (R ray) + t: rotate the (cached) rays, then scale, in float32.
            pts.append((rays @ Rt) * d[valid, None] + T[:3, 3])
            cols.append(view.color.reshape(-1, 3)[valid])
            vidx.append(np.full(len(valid), v, dtype=np.int32))
            pidx.append(valid)
        return np.concatenate(pts), np.concatenate(cols), np.concatenate(vidx), np.concatenate(pidx)

    def _grid(self, width: int, height: int) -> np.ndarray:
        """[H*W] bool: the pixels sampled with ``stride`` (cached)."""
        key = (width, height, self.cfg.stride)
        cache = self.__dict__.setdefault("_grid_cache", {})
        if key not in cache:
            g = np.zeros((height, width), dtype=bool)
            g[:: self.cfg.stride, :: self.cfg.stride] = True
            cache[key] = g.reshape(-1)
        return cache[key]

    def _rays(self, cam) -> np.ndarray:
        """Per-pixel rays (x, y, 1) of a camera, cached by intrinsics [H*W, 3] float32."""
        key = (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy)
        cache = self.__dict__.setdefault("_ray_cache", {})
        if key not in cache:
            cache[key] = pixel_rays(cam.width, cam.height, cam.K, np.float32).reshape(-1, 3)
        return cache[key]

    def _in_workspace(self, pts: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.cfg.workspace
        return (pts[:, 0] > x0) & (pts[:, 0] < x1) & (pts[:, 1] > y0) & (pts[:, 1] < y1)

    def _table_plane(self, pts: np.ndarray) -> np.ndarray:
        """RANSAC plane near z = 0 (the calibration's table), normal pointing up; falls back to z = 0."""
        default = np.array([0.0, 0.0, 1.0, 0.0])
        if not self.cfg.fit_plane:
            return default
        near = pts[(np.abs(pts[:, 2]) < 0.05) & self._in_workspace(pts)]
        if len(near) < 100:
            return default
        import open3d as o3d

        rng = np.random.default_rng(self.cfg.seed)
        if len(near) > 5000:  # RANSAC does not need every point
            near = near[rng.choice(len(near), 5000, replace=False)]
        o3d.utility.random.seed(self.cfg.seed)
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(near))
        plane, inliers = pcd.segment_plane(self.cfg.plane_threshold, 3, 200)
        plane = np.asarray(plane, dtype=np.float64)
        plane /= np.linalg.norm(plane[:3])
        if plane[2] < 0:
            plane = -plane
        if plane[2] < 0.95 or len(inliers) < 0.3 * len(near):  # not the table: trust the calibration
            return default
        return plane

    # ------------------------------------------------------------------------------------------------ clustering
    def _cluster(self, pts: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """Candidate points -> cluster label per point (-1 = dropped). Spatial components, then colour modes."""
        cfg = self.cfg
        labels = np.full(len(pts), -1, dtype=np.int64)
        if len(pts) == 0:
            return labels
        comp = _voxel_components(pts, cfg.voxel, cfg.neighbor_voxels)
        hue, chromatic = _hue(rgb, cfg.min_saturation, cfg.dark_level)
        next_label = 0
        for c in np.unique(comp):
            idx = np.flatnonzero(comp == c)
            if len(idx) < cfg.min_points:
                continue
            assign = _colour_classes(hue[idx], chromatic[idx], cfg.hue_bin_deg, cfg.hue_min_separation_deg,
                                     cfg.colour_min_fraction)
            if assign.max() > 0 and (assign < 0).any():  # a minority colour: its points take the nearest class
                from scipy.spatial import cKDTree

                ok = assign >= 0
                _, nn = cKDTree(pts[idx[ok]]).query(pts[idx[~ok]])
                assign[~ok] = assign[ok][nn]
            assign = np.maximum(assign, 0)
            for m in np.unique(assign):
                sub = idx[assign == m]
                if len(sub) < cfg.min_points:
                    continue
                # Two separate objects of one colour may touch only via an object of another colour: split again.
                sub_comp = _voxel_components(pts[sub], cfg.voxel, cfg.neighbor_voxels)
                for sc in np.unique(sub_comp):
                    part = sub[sub_comp == sc]
                    if len(part) >= cfg.min_points:
                        labels[part] = next_label
                        next_label += 1
        # Points of dropped fragments (mixed edge colours) join the nearest kept cluster if they touch it.
        lost = np.flatnonzero(labels < 0)
        kept = np.flatnonzero(labels >= 0)
        if len(lost) and len(kept):
            from scipy.spatial import cKDTree

            dist, nn = cKDTree(pts[kept]).query(pts[lost])
            near = dist < cfg.voxel
            labels[lost[near]] = labels[kept[nn[near]]]
        return labels

    def _external_labels(self, frame: MultiViewFrame, external: list[np.ndarray], pts: np.ndarray,
                         view_idx: np.ndarray, pix_idx: np.ndarray) -> np.ndarray:
        """Per-view external segments -> fused labels: segments whose 3D centroids are within merge_distance merge."""
        if len(external) != len(frame.views):
            raise ValueError(f"external masks: got {len(external)} for {len(frame.views)} views")
        seg_of_point = np.full(len(pts), -1, dtype=np.int64)
        centroids, owners = [], []
        for v, m in enumerate(external):
            flat = np.asarray(m).reshape(-1)
            sel = np.flatnonzero(view_idx == v)
            ext = flat[pix_idx[sel]]
            for eid in np.unique(ext[ext > 0]):
                members = sel[ext == eid]
                if len(members) < max(3, self.cfg.min_points // 4):
                    continue
                seg_of_point[members] = len(centroids)
                centroids.append(pts[members].mean(axis=0))
                owners.append(v)
        # Greedy merge: union segments of different views whose centroids are close.
        parent = list(range(len(centroids)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i in range(len(centroids)):
            for j in range(i + 1, len(centroids)):
                if owners[i] != owners[j] and np.linalg.norm(centroids[i] - centroids[j]) < self.cfg.merge_distance:
                    parent[find(i)] = find(j)
        roots = {r: k for k, r in enumerate(sorted({find(i) for i in range(len(centroids))}))}
        lut = np.array([roots[find(i)] for i in range(len(centroids))], dtype=np.int64)
        labels = np.full(len(pts), -1, dtype=np.int64)
        has = seg_of_point >= 0
        labels[has] = lut[seg_of_point[has]]
        return labels

    # -------------------------------------------------------------------------------------------------- tracking
    def _track(self, pts: np.ndarray, rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Cluster labels -> stable object ids (lookup table indexed by label)."""
        from scipy.optimize import linear_sum_assignment

        n = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
        ids = np.zeros(max(n, 1), dtype=np.int32)
        if n == 0:
            self._age_tracks(set())
            return ids
        sel = labels >= 0
        counts = np.bincount(labels[sel], minlength=n).astype(np.float64)
        cents = np.stack([np.bincount(labels[sel], weights=pts[sel, k], minlength=n) for k in range(3)], 1)
        cents /= np.maximum(counts, 1)[:, None]
        chroma = _chromaticity(rgb[sel])
        cols = np.stack([np.bincount(labels[sel], weights=chroma[:, k], minlength=n) for k in range(2)], 1)
        cols /= np.maximum(counts, 1)[:, None]
        track_ids = list(self.tracks)
        matched: dict[int, int] = {}
        if track_ids:
            # Constant-velocity prediction: a toppling cube moves several cm per frame at 30 fps.
            prev = np.stack([t.centroid + t.velocity * (t.missing + 1) for t in self.tracks.values()])
            prev_col = np.stack([self.tracks[t].color for t in track_ids])
            dist = np.linalg.norm(cents[:, None] - prev[None], axis=2)
            cdist = np.linalg.norm(cols[:, None] - prev_col[None], axis=2)
            # Colour matters as much as position: in a falling stack, cube k lands where cube k-1 was.
            cost = dist + self.cfg.colour_weight * cdist
            ok = (dist < self.cfg.match_distance) & (cdist < self.cfg.colour_gate)
            rows, cols_idx = linear_sum_assignment(np.where(ok, cost, 1e6))
            for r, c in zip(rows, cols_idx, strict=True):
                if ok[r, c]:
                    matched[r] = track_ids[c]
        # New objects are numbered in a deterministic order (by x, then y) so that the first frame is reproducible.
        for label in sorted(range(n), key=lambda i: (cents[i, 0], cents[i, 1])):
            if counts[label] == 0:
                continue
            oid = matched.get(label)
            velocity = np.zeros(3)
            if oid is None:
                oid = self._new_id()
            else:
                old = self.tracks[oid]
                velocity = (cents[label] - old.centroid) / (self.frame_index - old.last_seen)
            self.tracks[oid] = TrackedObject(oid, cents[label], cols[label], int(counts[label]), self.frame_index,
                                             velocity=velocity)
            ids[label] = oid
        self._age_tracks(set(ids[ids > 0].tolist()))
        return ids

    def _new_id(self) -> int:
        """The next free object id: 1, 2, ... wrapping after OBJECT_ID_MAX (the 16UC1 mask width) to ids no live
        track holds, so a segmenter running for days keeps within the one object-id width."""
        from vidyn_ros.types import OBJECT_ID_MAX

        while True:
            oid = self.next_id
            self.next_id = oid % OBJECT_ID_MAX + 1
            if oid not in self.tracks:
                return oid

    def _age_tracks(self, seen: set[int]) -> None:
        for oid in list(self.tracks):
            if oid not in seen:
                t = self.tracks[oid]
                t.missing += 1
                if t.missing > self.cfg.max_missing:
                    del self.tracks[oid]


# ------------------------------------------------------------------------------------------------------- helpers
def _chromaticity(rgb: np.ndarray) -> np.ndarray:
    """[N, 3] uint8 -> [N, 2] (r, g) / (r + g + b): unchanged by shading under white light."""
    c = rgb.astype(np.float64) + 1.0
    return c[:, :2] / c.sum(axis=1, keepdims=True)


def _voxel_components(pts: np.ndarray, voxel: float, reach: int) -> np.ndarray:
    """Connected components of occupied voxels (Chebyshev distance <= reach) -> component id per point."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    keys3 = np.floor(pts / voxel).astype(np.int64)
    keys3 -= keys3.min(axis=0)
    dims = keys3.max(axis=0) + 2 * reach + 1
    keys3 += reach
    flat = (keys3[:, 0] * dims[1] + keys3[:, 1]) * dims[2] + keys3[:, 2]
    uniq, inv = np.unique(flat, return_inverse=True)
    ux = uniq // (dims[1] * dims[2])
    uy = (uniq // dims[2]) % dims[1]
    uz = uniq % dims[2]
    rows, cols = [], []
    r = range(-reach, reach + 1)
    for dx in r:
        for dy in r:
            for dz in r:
                if (dx, dy, dz) <= (0, 0, 0):  # each undirected edge once
                    continue
                nb = ((ux + dx) * dims[1] + (uy + dy)) * dims[2] + (uz + dz)
                pos = np.searchsorted(uniq, nb)
                pos = np.minimum(pos, len(uniq) - 1)
                hit = uniq[pos] == nb
                rows.append(np.flatnonzero(hit))
                cols.append(pos[hit])
    rows_a = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    cols_a = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(rows_a)), (rows_a, cols_a)), shape=(len(uniq), len(uniq)))
    _, comp = connected_components(graph, directed=False)
    return comp[inv]


def _hue(rgb: np.ndarray, min_saturation: float, dark_level: int) -> tuple[np.ndarray, np.ndarray]:
    """[N, 3] uint8 -> (hue angle [deg] around the white point in rg-chromaticity, chromatic mask).

    Shading scales all channels (same chromaticity); specular highlights and shadows mostly change saturation, not
    hue — so colour classes are hue classes, plus one achromatic class (grey, black, white, very dark pixels).
    """
    d = _chromaticity(rgb) - 1.0 / 3.0
    sat = np.linalg.norm(d, axis=1)
    hue = np.degrees(np.arctan2(d[:, 1], d[:, 0])) % 360.0
    chromatic = (sat >= min_saturation) & (rgb.max(axis=1) >= dark_level)
    return hue, chromatic


def _colour_classes(hue: np.ndarray, chromatic: np.ndarray, bin_deg: float, min_sep_deg: float,
                    min_fraction: float) -> np.ndarray:
    """Colour class per point: 0 = achromatic, 1.. = hue peaks; -1 = a colour too rare to be an object of its own."""
    from scipy.ndimage import gaussian_filter1d, maximum_filter1d

    n = len(hue)
    out = np.full(n, -1, dtype=np.int64)
    if (~chromatic).sum() >= min_fraction * n:
        out[~chromatic] = 0
    if not chromatic.any():
        return out
    nb = round(360.0 / bin_deg)
    b = (hue[chromatic] / bin_deg).astype(np.int64) % nb
    hist = np.bincount(b, minlength=nb).astype(np.float64)
    smooth = gaussian_filter1d(hist, sigma=1.0, mode="wrap")
    radius = max(1, round(min_sep_deg / bin_deg))
    peaks = np.flatnonzero((smooth == maximum_filter1d(smooth, size=2 * radius + 1, mode="wrap")) & (smooth > 0))
    window = np.arange(-radius, radius + 1)
    mass = np.array([hist[(p + window) % nb].sum() for p in peaks])
    order = np.argsort(-mass)
    centres: list[float] = []
    for i in order:
        c = (peaks[i] + 0.5) * bin_deg
        if mass[i] >= min_fraction * n and all(_hue_dist(c, o) >= min_sep_deg for o in centres):
            centres.append(c)
    if not centres:
        return out
    dist = np.stack([_hue_dist(hue[chromatic], c) for c in centres], axis=1)
    out[chromatic] = 1 + np.argmin(dist, axis=1)
    return out


def _hue_dist(a, b):
    d = np.abs(np.asarray(a) - b) % 360.0
    return np.minimum(d, 360.0 - d)


# ------------------------------------------------------------------------------------------------------ evaluation
def match_ids(pred: list[np.ndarray], gt: list[np.ndarray]) -> dict[int, int]:
    """Predicted id -> ground-truth id, by Hungarian assignment on the total overlap over all given masks."""
    from scipy.optimize import linear_sum_assignment

    p_all = np.concatenate([m.reshape(-1) for m in pred])
    g_all = np.concatenate([m.reshape(-1) for m in gt])
    p_ids = np.unique(p_all[p_all > 0])
    g_ids = np.unique(g_all[g_all > 0])
    if len(p_ids) == 0 or len(g_ids) == 0:
        return {}
    both = (p_all > 0) & (g_all > 0)
    inter = np.zeros((len(p_ids), len(g_ids)))
    pi = np.searchsorted(p_ids, p_all[both])
    gi = np.searchsorted(g_ids, g_all[both])
    np.add.at(inter, (pi, gi), 1)
    rows, cols = linear_sum_assignment(-inter)
    return {int(p_ids[r]): int(g_ids[c]) for r, c in zip(rows, cols, strict=True) if inter[r, c] > 0}


def episode_metrics(pred_frames: list[list[np.ndarray]], gt_frames: list[list[np.ndarray]],
                    min_pixels: int = 20) -> dict[str, float]:
    """Mean IoU and id switches of an episode (frames x views masks).

    Predicted ids are mapped to ground-truth ids once per episode (Hungarian on total overlap), so an id switch
    costs IoU. IoU is averaged over (frame, view, ground-truth object with >= ``min_pixels`` pixels in that view).
    An id switch is a change, between consecutive frames where the object is visible, of the predicted id that
    overlaps the ground-truth object most (over all views).
    """
    mapping = match_ids([m for f in pred_frames for m in f], [m for f in gt_frames for m in f])
    ious = []
    last: dict[int, int] = {}
    switches = 0
    for pred, gt in zip(pred_frames, gt_frames, strict=True):
        overlap: dict[int, dict[int, int]] = {}
        for p, g in zip(pred, gt, strict=True):
            mapped = np.zeros_like(p)
            for pid, gid in mapping.items():
                mapped[p == pid] = gid
            for gid in np.unique(g[g > 0]):
                gm = g == gid
                if gm.sum() < min_pixels:
                    continue
                pm = mapped == gid
                ious.append((gm & pm).sum() / (gm | pm).sum())
                vals, cnt = np.unique(p[gm & (p > 0)], return_counts=True)
                d = overlap.setdefault(int(gid), {})
                for v, c in zip(vals, cnt, strict=True):
                    d[int(v)] = d.get(int(v), 0) + int(c)
        for gid, d in overlap.items():
            if not d:
                continue
            best = max(d, key=d.__getitem__)
            if gid in last and last[gid] != best:
                switches += 1
            last[gid] = best
    return {"mean_iou": float(np.mean(ious)) if ious else 0.0, "id_switches": switches, "n_ious": len(ious)}
