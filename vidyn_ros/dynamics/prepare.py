"""Recorded bag -> training episode (``data.Episode``), the way a real rig's data would be prepared.

1. ``vidyn track`` (the scene's tracker with its default masks: the deployed segmenter) turns the bag into
   per-Gaussian trajectories with stable particle ids: the pseudo position labels;
2. the bag's colour frames at the training resolution become the rendering targets;
3. /vidyn/cmd gives the pusher command in effect over each frame interval (the control);
4. the pusher's object id is the segmented object at the robot's own end-effector position (proprioception) in the
   first frame (``state.pusher_object_id``);
5. soft ids: each Gaussian's cross-view vote fractions over the deployed segmenter's masks of the first frame
   (rendering contributions Γ, as the paper's vote), expressed in the tracker's object ids.

Simulator ground truth (/vidyn/sim/object_poses, the bag's simulated /<cam>/mask) is not read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidyn_ros.errors import BagError

from .data import Episode
from .state import pusher_object_id

STALE_CMD_S = 0.5  # a command older than this is no longer in effect (the rigs zero a stale command too)


def track_bag(bag: str | Path, out_dir: Path, budget: int, seed: int, threads: int,
              extra: list[str] | None = None) -> dict[str, Any]:
    """Run ``vidyn track`` on ``bag`` into ``out_dir`` with its own defaults (the deployed segmenter's masks, the
    shipped graph's image downscale); returns its track.json."""
    from vidyn_ros.commands import track

    parser = argparse.ArgumentParser(prog="vidyn track")
    track.add_arguments(parser)
    argv = [str(bag), "--out", str(out_dir), "--budget", str(budget), "--seed", str(seed), "--threads", str(threads),
            *(extra or [])]
    track.run(parser.parse_args(argv))
    return json.loads((out_dir / "track.json").read_text())


def commands_per_frame(reader: Any, stamps_ns: np.ndarray) -> np.ndarray:
    """[T, 3] pusher velocity in effect from frame t to t+1: the latest /vidyn/cmd stamped at most half a frame
    after frame t, if it is not stale; 0 without commands."""
    from vidyn_ros import msgs

    out = np.zeros((len(stamps_ns), 3), dtype=np.float32)
    if msgs.CMD_TOPIC not in reader.topics:
        return out
    cmds = []
    for _t, _mt, _s, m in reader.decoded([msgs.CMD_TOPIC]):
        lin, _ang = msgs.twist_from_msg(m)
        cmds.append((msgs.stamp_to_ns(m.header), lin))
    if not cmds:
        return out
    cmds.sort(key=lambda c: c[0])
    cstamps = np.array([c[0] for c in cmds])
    half = int(np.median(np.diff(stamps_ns)) // 2) if len(stamps_ns) > 1 else 0
    for t, s in enumerate(stamps_ns):
        i = int(np.searchsorted(cstamps, s + half, side="right")) - 1
        if i >= 0 and (s - cstamps[i]) * 1e-9 <= STALE_CMD_S:
            out[t] = cmds[i][1]
    return out


@torch.no_grad()
def soft_ids_from_masks(gaussians: Any, cameras: list, masks: np.ndarray, hard_ids: np.ndarray,
                        labels: np.ndarray | None = None, min_contribution: float = 1e-3
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Vote fractions: per view, Γ over the masks (background = a mask of its own) normalised to sum 1 where the
    Gaussian contributes; averaged over the views that see it. Columns are mapped to the tracker's ids (each mask id
    to the hard id most of its Gaussians carry). Gaussians no view sees get one-hot of their hard id.

    ``labels``: the object ids of the columns (default: those in ``hard_ids``; must include them).
    Returns (soft [N, L] float32, labels [L] int64)."""
    from vidyn_ros.render import render

    out = render(gaussians, cameras, masks=torch.from_numpy(masks.astype(np.int64)) + 1, backend="torch")
    gamma = out.mask_contribution  # [C, M, N]
    ids = (out.mask_ids - 1).numpy()  # mask ids, 0 = background
    tot = gamma.sum(dim=1, keepdim=True)  # [C, 1, N]
    seen = tot > min_contribution
    frac = torch.where(seen, gamma / tot.clamp_min(1e-12), torch.zeros_like(gamma))
    n_views = seen.sum(dim=0).squeeze(0)  # [N]
    mean = frac.sum(dim=0) / n_views.clamp_min(1).unsqueeze(0)  # [M, N]
    mean = mean.T.numpy()  # [N, M]
    # map each mask id to the tracker id most of the Gaussians it wins carry
    win = mean.argmax(axis=1)
    labels = np.unique(hard_ids) if labels is None else np.asarray(labels)
    col_of = {}
    for m, mid in enumerate(ids):
        sel = (win == m) & (n_views.numpy() > 0)
        if mid == 0:
            col_of[m] = 0
        elif sel.any():
            vals, counts = np.unique(hard_ids[sel], return_counts=True)
            col_of[m] = int(vals[np.argmax(counts)])
    soft = np.zeros((len(hard_ids), len(labels)), dtype=np.float32)
    lab_index = {int(v): i for i, v in enumerate(labels)}
    for m, tid in col_of.items():
        if tid in lab_index:
            soft[:, lab_index[tid]] += mean[:, m]
    row = soft.sum(axis=1)
    none = row < 1e-6
    soft[~none] /= row[~none, None]
    soft[none] = 0
    soft[np.nonzero(none)[0], [lab_index[int(h)] for h in hard_ids[none]]] = 1.0
    return soft, labels.astype(np.int64)


def prepare_episode(bag: str | Path, out_dir: str | Path, *, budget: int = 2000, seed: int = 0, threads: int = 1,
                    pusher_xyz: tuple[float, float, float] | None = None, scenario: str = "",
                    track_args: list[str] | None = None) -> Episode:
    """Track ``bag`` and write the training episode to ``out_dir`` (see the module docstring). Frames are stored
    at the scene's working resolution (the deployed image downscale, e.g. 160x120 from 640x480)."""
    from vidyn_ros.bags import BagReader
    from vidyn_ros.scene.deployed import DeployedSegmenter
    from vidyn_ros.scene.init import estimate_background, make_targets
    from vidyn_ros.scene.ply import load_ply

    out_dir = Path(out_dir)
    track_dir = out_dir / "track"
    report = track_bag(bag, track_dir, budget, seed, threads, track_args)
    downscale = int((report.get("scene_config") or {}).get("downscale", 1))
    traj = np.load(track_dir / "trajectories.npz")
    g_last = load_ply(track_dir / "scene_last.ply")
    positions, quats = traj["positions"], traj["quats"]
    T, N = positions.shape[:2]
    if len(g_last) != N:
        raise BagError(f"{bag}: tracked scene has {len(g_last)} Gaussians but {N} trajectories")
    stamps = traj["stamps"].astype(np.int64)
    images = None
    cameras: list = []
    background = np.zeros(3, dtype=np.float32)
    soft = soft_labels = None
    with BagReader(bag) as reader:
        frames_seen = 0
        for frame in reader.multiview_frames(masks=False):
            if frames_seen >= T:
                break
            if frame.stamp_ns != stamps[frames_seen]:
                continue  # tracking skipped it (cannot happen with the same reader; be safe)
            tg = make_targets(frame, downscale, "cpu")
            img = (tg.color.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
            if images is None:
                images = np.zeros((T, *img.shape), dtype=np.uint8)
                cameras = list(tg.cameras)
                background = np.asarray(estimate_background(frame), dtype=np.float32)
                seg = DeployedSegmenter()(frame)  # the deployed segmenter, as on the tracker's first frame
                masks = np.stack([v.mask[::downscale, ::downscale][: img.shape[1], : img.shape[2]]
                                  for v in seg.views])
                g0 = g_last.subset(torch.from_numpy(np.isfinite(positions[0]).all(-1)))
                g0.means = torch.from_numpy(positions[0][np.isfinite(positions[0]).all(-1)])
                ids0 = g0.object_ids.numpy()
                s0, soft_labels = soft_ids_from_masks(g0, cameras, masks, ids0,
                                                      labels=np.unique(g_last.object_ids.numpy()))
                soft = np.zeros((N, len(soft_labels)), dtype=np.float32)
                soft[np.isfinite(positions[0]).all(-1)] = s0
                later = ~np.isfinite(positions[0]).all(-1)  # spawned after the first frame: one-hot
                col = {int(v): i for i, v in enumerate(soft_labels)}
                for i in np.nonzero(later)[0]:
                    oid = int(g_last.object_ids[i])
                    if oid in col:
                        soft[i, col[oid]] = 1.0
            images[frames_seen] = img
            frames_seen += 1
        if images is None or frames_seen < T:
            raise BagError(f"{bag}: read {frames_seen} frames back, the tracker used {T}")
        cmd = commands_per_frame(reader, stamps)
    object_ids = g_last.object_ids.numpy().astype(np.int64)
    pusher = None
    if pusher_xyz is not None:
        first = np.isfinite(positions[0]).all(-1)
        pusher = pusher_object_id(torch.from_numpy(object_ids[first]), torch.from_numpy(positions[0][first]),
                                  pusher_xyz)
    ep = Episode(
        name=out_dir.name, positions=positions.astype(np.float32), quats=quats.astype(np.float32),
        object_ids=object_ids, particle_ids=traj["particle_ids"].astype(np.int64),
        log_scales=g_last.log_scales.numpy().astype(np.float32), colors=g_last.colors.numpy().astype(np.float32),
        opacity_logits=g_last.opacity_logits.numpy().astype(np.float32), stamps_ns=stamps, cmd=cmd,
        cameras=cameras, background=background, images=images, pusher_id=pusher, soft_ids=soft,
        soft_id_labels=soft_labels, scenario=scenario,
    )  # fmt: skip
    source = {"bag": str(bag), "scenario": scenario, "pusher_xyz": list(pusher_xyz) if pusher_xyz else None,
              "pusher_id": pusher, "downscale": downscale, "budget": budget, "seed": seed, "track": report}
    ep.save(out_dir, source)
    return ep
