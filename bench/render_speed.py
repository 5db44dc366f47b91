"""Renderer speed: forward and forward+backward time vs number of Gaussians, resolution and backend.

CPU: torch backend, N in {1k, 5k, 20k} x {160x120, 320x240} x 4 cameras. CUDA (when present): both backends at
640x480 x 4 cameras with 50k Gaussians. The scene is a tabletop (a plane plus three boxes) covered by flat Gaussians
sized to their spacing, seen by four cameras from 0.7 m, so pixel coverage resembles the live scene's.
Writes a markdown table and JSON to bench/results/render_speed_<device>.{md,json}.

    .venv/bin/python bench/render_speed.py [--quick] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vidyn_ros.geometry import look_at
from vidyn_ros.render import render
from vidyn_ros.types import CameraModel, GaussianSet

RESULTS = Path(__file__).resolve().parent / "results"


def tabletop_scene(n: int, seed: int = 0, device: str = "cpu") -> GaussianSet:
    """n flat Gaussians on a 0.5 m table and three 6 cm boxes (object ids 0..3), surface-filling scales."""
    rng = np.random.default_rng(seed)
    n_box = n // 4
    n_table = n - n_box
    pts = [np.c_[rng.uniform(-0.25, 0.25, (n_table, 2)), np.zeros(n_table)]]
    normals = [np.tile([0.0, 0.0, 1.0], (n_table, 1))]
    ids = [np.zeros(n_table, dtype=np.int64)]
    centres = np.array([[-0.1, -0.05, 0.03], [0.08, 0.0, 0.03], [0.0, 0.12, 0.03]])
    per_box = np.array_split(np.arange(n_box), 3)
    for b, idx in enumerate(per_box):
        k = len(idx)
        face = rng.integers(0, 5, k)  # 4 sides + top
        uv = rng.uniform(-0.03, 0.03, (k, 2))
        axis = np.where(face < 4, face // 2, 2)
        sign = np.where(face < 4, np.where(face % 2 == 0, -1.0, 1.0), 1.0)
        p = np.zeros((k, 3))
        nrm = np.zeros((k, 3))
        for a in range(3):
            others = [o for o in range(3) if o != a]
            sel = axis == a
            p[sel, a] = 0.03 * sign[sel]
            p[np.ix_(sel, others)] = uv[sel]
            nrm[sel, a] = sign[sel]
        pts.append(p + centres[b])
        normals.append(nrm)
        ids.append(np.full(k, b + 1))
    means = np.concatenate(pts)
    nrm = np.concatenate(normals)
    # rotation taking z to the normal; flat along the normal, round in the surface
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, nrm)
    s = np.linalg.norm(axis, axis=1, keepdims=True)
    c = nrm @ z
    ang = np.arctan2(s[:, 0], c)
    axis = np.where(s > 1e-9, axis / np.maximum(s, 1e-9), np.array([1.0, 0.0, 0.0]))
    quats = np.c_[np.cos(ang / 2), axis * np.sin(ang / 2)[:, None]]
    area = 0.25 + 3 * 5 * 0.06**2
    spacing = math.sqrt(area / n)
    scales = np.tile([spacing, spacing, 0.1 * spacing], (n, 1))
    colors = np.where(np.concatenate(ids)[:, None] == 0, [0.6, 0.55, 0.5], rng.uniform(0.1, 0.9, (n, 3)))
    t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    return GaussianSet(
        means=t(means), quats=t(quats), log_scales=t(np.log(scales)), colors=t(colors),
        opacity_logits=t(np.full(n, 2.5)), object_ids=torch.as_tensor(np.concatenate(ids), device=device),
    )


def tabletop_cameras(n: int = 4, width: int = 160, height: int = 120) -> list[CameraModel]:
    """n cameras 0.7 m from the table centre, 40 degrees elevation, RealSense-like field of view."""
    f = 615.0 * width / 640.0
    K = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    cams = []
    for i in range(n):
        a = 2 * np.pi * i / n + 0.3
        eye = 0.7 * np.array([np.cos(a) * np.cos(0.7), np.sin(a) * np.cos(0.7), np.sin(0.7)])
        cams.append(CameraModel(f"cam{i}", width, height, K, look_at(eye, np.zeros(3))))
    return cams


def time_render(scene: GaussianSet, cams: list[CameraModel], backend: str, repeats: int) -> dict[str, float]:
    params = [scene.means, scene.quats, scene.log_scales, scene.colors, scene.opacity_logits]
    for p in params:
        p.requires_grad_(True)
    sync = torch.cuda.synchronize if scene.device.type == "cuda" else (lambda: None)
    fwd, full, cpu = [], [], []
    for i in range(repeats + 1):  # first run is warm-up (allocator, gsplat JIT)
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            render(scene, cams, backend=backend)
        sync()
        t1 = time.perf_counter()
        c1 = time.process_time()
        out = render(scene, cams, backend=backend)
        (out.rgb.mean() + out.depth.mean()).backward()
        sync()
        t2 = time.perf_counter()
        c2 = time.process_time()
        if i:
            fwd.append(t1 - t0)
            full.append(t2 - t1)
            cpu.append(c2 - c1)
    # Wall time is what a caller sees; CPU time (all threads) is steadier on a shared machine.
    return {
        "forward_ms": 1000 * float(np.median(fwd)),
        "forward_backward_ms": 1000 * float(np.median(full)),
        "forward_backward_min_ms": 1000 * float(np.min(full)),
        "forward_backward_cpu_ms": 1000 * float(np.median(cpu)),
        "alpha_mean": float(out.alpha.detach().mean()),
    }


def save_png(scene: GaussianSet, cams: list[CameraModel], path: Path) -> None:
    """The four views side by side (rgb over depth), to see what was timed."""
    import cv2

    with torch.no_grad():
        out = render(scene, cams)
    rgb = np.concatenate(list((out.rgb.clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)), axis=1)
    d = out.depth.cpu().numpy()
    d = np.concatenate(list(np.clip((d - 0.5) / 0.5, 0, 1)), axis=1)
    depth = cv2.applyColorMap((d * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)[..., ::-1]
    cv2.imwrite(str(path), np.concatenate([rgb, depth], axis=0)[..., ::-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="only 5k Gaussians at 160x120 on CPU")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from tqdm import tqdm

    cases = []
    if args.quick:
        cases.append(("torch", "cpu", 5000, 160, 120))
    else:
        for n in (1000, 5000, 20000):
            for w, h in ((160, 120), (320, 240)):
                cases.append(("torch", "cpu", n, w, h))
        if torch.cuda.is_available():
            for backend in ("gsplat", "torch"):
                for n in (5000, 50000):
                    cases.append((backend, "cuda", n, 640, 480))
    rows = []
    for backend, device, n, w, h in tqdm(cases, desc="render_speed"):
        scene = tabletop_scene(n, device=device)
        cams = tabletop_cameras(4, w, h)
        r = time_render(scene, cams, backend, args.repeats)
        rows.append({"backend": backend, "device": device, "gaussians": n, "width": w, "height": h, "cameras": 4, **r})
        tqdm.write(f"{backend:6s} {device:4s} N={n:6d} {w}x{h}x4  fwd {r['forward_ms']:8.1f} ms  "
                   f"fwd+bwd {r['forward_backward_ms']:8.1f} ms (min {r['forward_backward_min_ms']:.1f}, "
                   f"CPU {r['forward_backward_cpu_ms']:.1f})")
    tag = "cuda" if torch.cuda.is_available() and not args.quick else f"cpu{torch.get_num_threads()}t"
    RESULTS.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor() or
            platform.machine(), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "cpu_count": os.cpu_count(), "load_avg_1min_at_end": load}
    (RESULTS / f"render_speed_{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = ["| backend | device | Gaussians | resolution x cams | forward [ms] | forward+backward [ms] | "
             "fwd+bwd min [ms] | fwd+bwd CPU time [ms] |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['backend']} | {r['device']} | {r['gaussians']} | {r['width']}x{r['height']}x{r['cameras']} | "
              f"{r['forward_ms']:.1f} | {r['forward_backward_ms']:.1f} | {r['forward_backward_min_ms']:.1f} | "
              f"{r['forward_backward_cpu_ms']:.1f} |" for r in rows]
    lines += ["", f"torch {meta['torch']}, {meta['threads']} threads on {meta['cpu_count']} cores, {meta['machine']}, "
              f"GPU: {meta['gpu']}, 1-min load average {load}; median of repeats; 'CPU time' sums all threads "
              "(steadier than wall time on a shared machine)."]
    (RESULTS / f"render_speed_{tag}.md").write_text("\n".join(lines) + "\n")
    save_png(tabletop_scene(5000), tabletop_cameras(4, 160, 120), RESULTS / f"render_speed_{tag}.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
