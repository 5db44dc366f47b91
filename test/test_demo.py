"""`vidyn demo` end to end at small scale (1 s of `push` at 160x120): the rig runs in lockstep with the live scene,
so the bag holds a scene update for every frame, and the demo writes scene.png, tracking.png and scene metrics that
say the scene tracked the simulated world."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ros_domain

from vidyn_ros.bags import BagReader

REPO = Path(__file__).resolve().parent.parent
DOMAIN = ros_domain(__name__)  # this module's own ROS domain in this test run (test/conftest.py)


def test_demo_runs_the_scene_in_lockstep_and_reports_it(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa")}
    proc = subprocess.run(
        [sys.executable, "-m", "vidyn_ros.cli", "demo", "--no-mpc", "--out", str(out), "--seconds", "1",
         "--scale", "0.25",
         "--scene-width", "160", "--domain-id", str(DOMAIN)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("summary.txt", "summary.json", "contact_sheet.png", "scene.png", "tracking.png", "scene.ply"):
        assert (out / name).is_file(), f"{name} missing"

    doc = json.loads((out / "summary.json").read_text())
    rig = doc["run"]["nodes"]["sim_rig"]
    assert rig["frames"] == 30 and rig["lockstep_timeouts"] == 0
    # Lockstep: the scene published an update for every frame the rig published, and the recorder got them all.
    with BagReader(out / "bag") as r:
        counts = {t: len(list(r.messages([t]))) for t in r.topics if t.startswith("/vidyn/scene/")}
        frame_stamps = [s for _t, _m, s, _raw in r.messages(["/cam0/color/image_raw"])]
        scene_stamps = [s for _t, _m, s, _raw in r.messages(["/vidyn/scene/gaussians"])]
        # the scene's masks came from the segmenter node (/<cam>/mask); the simulator's true ones are evaluation only
        mask_counts = {t: r.topics[t].count for t in ("/cam0/mask", "/vidyn/sim/cam0/mask")}
    assert mask_counts == {"/cam0/mask": 30, "/vidyn/sim/cam0/mask": 30}, mask_counts
    assert set(counts) == {"/vidyn/scene/gaussians", "/vidyn/scene/objects",
                           *(f"/vidyn/scene/render/cam{i}" for i in range(4))}
    assert set(counts.values()) == {30}, counts
    assert scene_stamps == frame_stamps

    scene = doc["scene"]
    assert scene["frames"] == 30 and scene["objects"] >= 3
    assert scene["centroid_error_mean_m"] < 0.005 and scene["centroid_error_max_m"] < 0.02
    assert scene["gaussians"] > 1000
    assert min(scene["psnr_last_frame_db"].values()) > 25.0
    assert scene["ground_truth_travel_m"]["4"] > 0.05  # the pusher moved (id 4), and was tracked while it did
    text = (out / "summary.txt").read_text()
    assert "scene centroid error vs ground truth over 30 frames" in text
