"""`vidyn demo` with the closed loop at small scale (1 s of `push`, static backend): the rig steps in lockstep with the
mpc node's commands (one per frame, none missing), and the demo writes the video, the summary PNG and loop metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ros_domain

from vidyn_ros import msgs
from vidyn_ros.bags import BagReader

REPO = Path(__file__).resolve().parent.parent
DOMAIN = ros_domain(__name__)  # this module's own ROS domain in this test run (test/conftest.py)


def test_demo_closed_loop_writes_video_and_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa")}
    proc = subprocess.run(
        [sys.executable, "-m", "vidyn_ros.cli", "demo", "--out", str(out), "--seconds", "1", "--backend", "static",
         "--domain-id", str(DOMAIN)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("closed_loop.mp4", "closed_loop.png", "closed_loop_frame.png", "summary.txt", "tracking.png"):
        assert (out / name).is_file(), f"{name} missing"
    assert (out / "closed_loop.mp4").stat().st_size > 10_000

    doc = json.loads((out / "summary.json").read_text())
    rig = doc["run"]["nodes"]["sim_rig"]
    assert rig["frames"] == 30 and rig["lockstep_timeouts"] == 0
    loop = doc["closed_loop"]
    assert loop["backend"] == "static" and loop["plans"] >= 4  # replanning every 6th frame (0.2 s)
    with BagReader(out / "bag") as r:
        cmd_stamps = [msgs.stamp_to_ns(m.header) for _t, _mt, _s, m in r.decoded([msgs.CMD_TOPIC])]
        frame_stamps = [s for _t, _mt, s, _raw in r.messages(["/cam0/color/image_raw"])]
    # lockstep: exactly one command per frame, stamped with that frame's time
    assert cmd_stamps == frame_stamps
    text = (out / "summary.txt").read_text()
    assert "closed loop (static backend)" in text
