"""Scene quality on the simulated rig (``vidyn eval-scene``) and tracking of recorded frames (``vidyn track``).

Both drive a SceneEstimator over a frame sequence; evaluation also scores it against the rig's ground truth
(vidyn_ros/scene/metrics.py): centroid tracking error, rendered-vs-observed PSNR, object-id accuracy.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidyn_ros.types import MultiViewFrame

from .losses import psnr
from .metrics import CentroidTracker, id_accuracy
from .pipeline import SceneConfig, SceneEstimator


def versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers (written next to every result)."""
    from vidyn_ros.provenance import software_versions

    return software_versions("torch", "numpy", "open3d", "mujoco", "gsplat")


def side_by_side(observed: np.ndarray, rendered: np.ndarray, path: str | Path, labels: Sequence[str] = ()) -> Path:
    """PNG with one row per camera: observed | rendered | absolute difference ×4. Images [C,H,W,3] uint8."""
    from vidyn_ros.viz import image_grid

    rows, names = [], []
    for i, (o, r) in enumerate(zip(observed, rendered, strict=True)):
        diff = np.clip(np.abs(o.astype(np.int16) - r.astype(np.int16)) * 4, 0, 255).astype(np.uint8)
        rows.append([o, r, diff])
        name = labels[i] if i < len(labels) else f"view {i}"
        names.append([f"{name} {what}" for what in ("observed", "rendered", "|diff| x4")])
    return image_grid(rows, path, names, max_tile_width=observed.shape[2])  # full size: no downscaling


def render_psnr(est: SceneEstimator, frame: MultiViewFrame) -> tuple[float, np.ndarray, np.ndarray]:
    """(PSNR [dB] over all views, observed [C,H,W,3] uint8, rendered [C,H,W,3] uint8) at the scene's working
    resolution (the frames' size divided by ``SceneConfig.downscale``, where the Gaussians were fitted)."""
    from .init import make_targets

    t = make_targets(frame, est.cfg.downscale)
    rgb, _ = est.render(t.cameras)
    obs = (t.color.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    value = psnr(torch.from_numpy(rgb).float() / 255.0, torch.from_numpy(obs).float() / 255.0)
    return value, obs, rgb


@dataclass
class EpisodeResult:
    """Scores of one simulated episode."""

    scenario: str
    seed: int
    frames: int
    centroid_error_m: float  # mean over objects of each object's episode-mean error
    centroid_error_max_m: float
    centroid_error_per_object_m: dict[int, float]
    psnr_db: float  # mean over the evaluated frames
    psnr_first_db: float
    id_accuracy: float  # mean over the evaluated frames
    id_accuracy_objects: float
    gaussians: int
    init_s: float
    update_s: float  # mean tracking update time (frames after the first)
    hz: float
    side_by_side: str = ""
    extra: dict = field(default_factory=dict)


def run_episode(
    scenario: str,
    seed: int,
    n_frames: int,
    cfg: SceneConfig,
    *,
    render_scale: float = 0.25,
    eval_every: int = 10,
    pusher_velocity: Sequence[float] = (0.2, 0.0, 0.0),
    png: str | Path | None = None,
    progress: bool = True,
) -> EpisodeResult:
    """Simulate ``scenario`` (seed) for ``n_frames`` and run the scene on it, scoring against ground truth.

    PSNR and id accuracy are evaluated on the first frame, every ``eval_every`` frames and the last frame.
    """
    from vidyn_ros.rig.scenario import load_scenario
    from vidyn_ros.rig.sim import SimRig

    est = SceneEstimator(cfg)
    ct = CentroidTracker()
    psnrs: list[float] = []
    ids: list[dict[str, float]] = []
    update_s: list[float] = []
    init_s = float("nan")
    with SimRig(load_scenario(scenario), seed=seed, render_scale=render_scale) as rig:
        if rig.pusher_id is not None:
            rig.set_pusher_velocity(list(pusher_velocity))
        n = min(n_frames, rig.n_frames) if n_frames > 0 else rig.n_frames
        it: Iterable[int] = range(n)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"{scenario} seed {seed}", unit="frame", leave=False)
        last = None
        for i in it:
            rf = rig.step()
            up = est.update(rf.frame)
            if up.initialised:
                init_s = up.seconds
            else:
                update_s.append(up.seconds)
            ct.add(up.objects, rf.object_poses)
            if i == 0 or i == n - 1 or (eval_every > 0 and i % eval_every == 0):
                value, obs, rgb = render_psnr(est, rf.frame)
                psnrs.append(value)
                ids.append(id_accuracy(up.gaussians, rf.frame))
                last = (obs, rgb, [c.name for c in rf.frame.cameras])
    if png is not None and last is not None:
        side_by_side(last[0], last[1], png, last[2])
    mean_update = float(np.mean(update_s)) if update_s else float("nan")
    return EpisodeResult(
        scenario=scenario,
        seed=seed,
        frames=n,
        centroid_error_m=ct.mean(),
        centroid_error_max_m=ct.max(),
        centroid_error_per_object_m=ct.mean_per_object(),
        psnr_db=float(np.mean(psnrs)),
        psnr_first_db=psnrs[0],
        id_accuracy=float(np.mean([d["id_accuracy"] for d in ids])),
        id_accuracy_objects=float(np.mean([d["id_accuracy_objects"] for d in ids])),
        gaussians=len(est.gaussians) if est.gaussians is not None else 0,
        init_s=init_s,
        update_s=mean_update,
        hz=1.0 / mean_update if mean_update > 0 else float("nan"),
        side_by_side=str(png or ""),
        extra={"centroid_offset_m": {k: round(v, 5) for k, v in ct.offsets.items()}},
    )


# Targets of the issue: centroid error per scenario [m], PSNR [dB], id accuracy.
TARGETS = {"push": 0.01, "cube_stack": 0.01, "bowling": 0.02}
PSNR_TARGET = 28.0
ID_TARGET = 0.95


def results_table(results: Sequence[EpisodeResult]) -> str:
    """Markdown table, one row per scenario (episodes averaged), with pass marks against the targets."""
    lines = [
        "| scenario | episodes | frames | centroid error mean / max [mm] | target [mm] | PSNR [dB] (first frame) "
        "| id accuracy (objects) | Gaussians | init [s] | update [ms] | pass |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    by: dict[str, list[EpisodeResult]] = {}
    for r in results:
        by.setdefault(r.scenario, []).append(r)
    for name, rs in by.items():
        err = float(np.mean([r.centroid_error_m for r in rs]))
        emax = float(np.max([r.centroid_error_max_m for r in rs]))
        ps = float(np.mean([r.psnr_db for r in rs]))
        ps0 = float(np.mean([r.psnr_first_db for r in rs]))
        acc = float(np.mean([r.id_accuracy for r in rs]))
        acc_o = float(np.mean([r.id_accuracy_objects for r in rs]))
        target = TARGETS.get(name, 0.02)
        ok = err < target and ps >= PSNR_TARGET and acc >= ID_TARGET
        lines.append(
            f"| {name} | {len(rs)} | {rs[0].frames} | {err * 1000:.2f} / {emax * 1000:.2f} | < {target * 1000:.0f} "
            f"| {ps:.2f} ({ps0:.2f}) | {acc * 100:.1f} % ({acc_o * 100:.1f} %) | {rs[0].gaussians} "
            f"| {np.mean([r.init_s for r in rs]):.1f} | {np.mean([r.update_s for r in rs]) * 1000:.0f} "
            f"| {'yes' if ok else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def write_results(results: Sequence[EpisodeResult], cfg: SceneConfig, out_dir: str | Path) -> tuple[Path, Path]:
    """eval_scene.md (table + command line) and eval_scene.json (everything, with versions)."""
    from vidyn_ros.errors import OutputError

    out = Path(out_dir)
    table = results_table(results)
    doc = {
        "command": "vidyn " + " ".join(sys.argv[1:]),
        "versions": versions(),
        "config": asdict(cfg),
        "created_unix": time.time(),
        "targets": {"centroid_error_m": TARGETS, "psnr_db": PSNR_TARGET, "id_accuracy": ID_TARGET},
        "episodes": [asdict(r) for r in results],
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        md = out / "eval_scene.md"
        md.write_text(f"Command: `{doc['command']}`\n\n{table}")
        js = out / "eval_scene.json"
        js.write_text(json.dumps(doc, indent=2, default=str))
    except OSError as err:
        raise OutputError(f"{out}: cannot write results ({err.strerror})") from None
    return md, js
