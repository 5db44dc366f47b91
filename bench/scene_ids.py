"""Object ids at initialisation, scored against simulator truth: vote rules and the mask downscale convention.

The deployed path's first frame (4 cameras at 640x480, the scene at image_downscale 4, 5000 Gaussians, 60 iterations;
masks from the weight-free segmenter, and the simulator's true masks as the oracle row). The Gaussians are fitted
once per scenario and mask source; then the ids are voted with each rule and each way of shrinking the masks to the
working resolution, and scored against the true object each Gaussian lies on (nearest true surface,
``vidyn_ros.metrics.true_object_ids``), the segmenter's ids associated with true ids first (``scene.metrics``).

    .venv/bin/python bench/scene_ids.py          # bench/results/scene_ids.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "osmesa")

# (label, min_contribution, fallback: "fused" pixel label | "background", vote at all)
RULES = [
    ("paper (every view votes, threshold 0.001)", 0.001, "fused", True),
    ("threshold 0.05, no vote -> fused pixel id (default)", 0.05, "fused", True),
    ("threshold 0.2, no vote -> fused pixel id", 0.2, "fused", True),
    ("threshold 0.2, no vote -> background", 0.2, "background", True),
    ("no vote (fused pixel id only)", 0.0, "fused", False),
]


def top_left(labels: torch.Tensor, s: int) -> torch.Tensor:
    """The old convention: each block's top-left pixel ((s - 1) / 2 pixels off the scaled pixel centre)."""
    h, w = labels.shape[1] // s, labels.shape[2] // s
    return labels[:, : h * s : s, : w * s : s]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", nargs="+", default=["push", "cube_stack", "bowling"])
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)

    from vidyn_ros.render import set_cpu_threads
    from vidyn_ros.rig.sim import SimRig
    from vidyn_ros.scene.deployed import DeployedSegmenter, scene_config
    from vidyn_ros.scene.evaluate import versions
    from vidyn_ros.scene.init import (
        FitConfig,
        downscale_labels,
        estimate_background,
        fit_gaussians,
        fuse_views,
        init_gaussians,
        make_targets,
        split_budget,
    )
    from vidyn_ros.scene.metrics import IdAssociation, truth_metrics
    from vidyn_ros.scene.voting import vote_object_ids

    set_cpu_threads(1)
    results = []
    for scn in args.scenarios:
        with SimRig(scn, seed=0, render_scale=1.0) as rig:
            rf = rig.step()
            for masks in ("segmenter", "oracle"):
                frame = DeployedSegmenter(width=640)(rf.frame) if masks == "segmenter" else rf.frame
                cfg = scene_config(640)
                torch.manual_seed(cfg.seed)
                cloud = split_budget(fuse_views(frame, stride=cfg.downscale), cfg.budget, cfg.object_share, cfg.seed)
                g = init_gaussians(cloud, frame.cameras)
                targets = make_targets(frame, cfg.downscale)
                fit = FitConfig(**{**cfg.fit.__dict__, "iterations": cfg.init_iters,
                                   "background": estimate_background(frame)})
                g, _ = fit_gaussians(g, targets, fit)
                fused = g.object_ids.clone()
                full = torch.from_numpy(np.stack([v.mask for v in frame.views]).astype(np.int64))
                for convention, shrink in (("centre (default)", downscale_labels), ("top-left (before)", top_left)):
                    small = shrink(full, cfg.downscale)
                    for label, thr, fallback, vote in RULES:
                        if convention != "centre (default)" and "default" not in label:
                            continue  # the convention is compared under the default rule
                        gv = g.clone()
                        if vote:
                            fb = fused if fallback == "fused" else torch.zeros_like(fused)
                            gv.object_ids = vote_object_ids(g, targets.cameras, small, min_contribution=thr,
                                                            fallback=fb)
                            with torch.no_grad():
                                from vidyn_ros.render import render

                                out = render(g, targets.cameras, masks=small + 1)
                            best = out.mask_contribution.max(dim=1).values  # [C, N]
                            voted = ((best >= thr).any(dim=0) & (fused > 0)).float().sum() / (fused > 0).sum()
                        else:
                            voted = torch.tensor(float("nan"))
                        s = truth_metrics(gv, rig.object_shapes, rf.object_poses,
                                          IdAssociation(oracle=masks == "oracle"))
                        row = {"scenario": scn, "masks": masks, "convention": convention, "rule": label,
                               "object_gaussians_voting": float(voted), "id_accuracy": s["id_accuracy"],
                               "id_accuracy_objects": s["id_accuracy_objects"]}
                        results.append(row)
                        print(row, flush=True)
    lines = [f"Command: `python {' '.join(sys.argv)}` (first frame; 4 x 640x480, downscale 4, 5000 Gaussians, "
             f"60 iterations; load average {os.getloadavg()[0]:.1f})", "",
             "| scenario | masks | mask downscale | vote rule | object Gaussians that vote "
             "| id accuracy all / objects |",
             "| --- | --- | --- | --- | ---: | --- |"]
    for r in results:
        v = "-" if np.isnan(r["object_gaussians_voting"]) else f"{100 * r['object_gaussians_voting']:.0f} %"
        lines.append(f"| {r['scenario']} | {'oracle masks' if r['masks'] == 'oracle' else 'segmenter'} | "
                     f"{r['convention']} | {r['rule']} | {v} | {100 * r['id_accuracy']:.1f} % / "
                     f"{100 * r['id_accuracy_objects']:.1f} % |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scene_ids.md").write_text("\n".join(lines) + "\n")
    (out / "scene_ids.json").write_text(json.dumps({"command": "python " + " ".join(sys.argv),
                                                    "versions": versions(), "rows": results}, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
