"""Rig calibration from one capture of the ChArUco board, checked against the simulated rig's true camera poses."""

import os

import cv2
import numpy as np
import pytest

from vidyn_ros.errors import CameraError, ConfigError
from vidyn_ros.geometry import look_at
from vidyn_ros.paths import config_dir
from vidyn_ros.rig.calibration import CharucoTarget, calibrate_rig, detect_corners, load_target, pose_errors
from vidyn_ros.rig.calibration_io import load_rig_calibration
from vidyn_ros.types import CameraModel

os.environ.setdefault("MUJOCO_GL", "osmesa")

TARGET = CharucoTarget()


@pytest.fixture(scope="module")
def capture():
    from vidyn_ros.rig.scenario import load_scenario
    from vidyn_ros.rig.sim import SimRig

    with SimRig(load_scenario("calibration"), seed=0, render_scale=1.0, masks=False) as rig:
        truth = {c.name: c.T_world_cam for c in rig.cameras}
        frame = rig.observe().frame
        # Two more cameras the ring does not have: higher and closer with another focal length, and one looking away.
        base = rig.cameras[0]
        K2 = base.K.copy()
        K2[0, 0] = K2[1, 1] = 330.0
        extra = [
            CameraModel(name="high", width=base.width, height=base.height, K=K2,
                        T_world_cam=look_at([0.1, -0.45, 0.65], [0.05, 0.02, 0.0])),
            CameraModel(name="away", width=base.width, height=base.height, K=base.K,
                        T_world_cam=look_at([0.3, 0.3, 0.3], [1.5, 1.5, 0.3])),
        ]
        extra_frame = rig.render_only(extra, masks=False)
    return frame, truth, extra_frame


def test_board_corners_in_world_match_the_texture_geometry():
    """Corners detected in the board image itself, mapped with the scenario texture rule, equal corner_points_world."""
    img = cv2.imread(str(config_dir() / "scenarios" / "charuco_board.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(img, TARGET.image(200))  # the shipped texture is the default target
    ids, px = detect_corners(img, TARGET)
    assert len(ids) == 24
    h, w = img.shape
    hx, hy, hz = TARGET.box_half_size()
    # docs/scenarios.md: continuous pixel (u, v) -> body (hx (2u/W - 1), hy (1 - 2v/H), hz); OpenCV centres = u - 0.5.
    u, v = px[:, 0] + 0.5, px[:, 1] + 0.5
    body = np.stack([hx * (2 * u / w - 1), hy * (1 - 2 * v / h), np.full(len(u), hz)], axis=1)
    world = body + np.array([0.0, 0.0, hz])  # the board box centre is at z = hz (scenario: position [0, 0, 0.001])
    np.testing.assert_allclose(world, TARGET.corner_points_world()[ids], atol=1e-4)


def test_sim_rig_calibration_is_within_half_a_degree_and_5_mm(capture):
    frame, truth, extra = capture
    est = calibrate_rig(frame, TARGET)
    assert set(est) == set(truth)
    for name, e in est.items():
        rot, trans = pose_errors(e.T_world_cam, truth[name])
        assert rot < 0.5 and trans < 0.005, (name, rot, trans)
        assert len(e.corner_ids) >= 20 and e.rms_px < 1.0
    # A camera off the ring, with another focal length, is calibrated as well.
    high = calibrate_rig(extra, TARGET, skip_failed=True)
    assert set(high) == {"high"}
    rot, trans = pose_errors(high["high"].T_world_cam, extra.view("high").camera.T_world_cam)
    assert rot < 0.5 and trans < 0.005, (rot, trans)


def test_camera_that_does_not_see_the_board_is_named(capture):
    _, _, extra = capture
    with pytest.raises(CameraError, match=r"^away: ChArUco board not found \(0 corners detected, need 6\)"):
        calibrate_rig(extra, TARGET)


def test_cli_from_realsense_recordings_of_the_sim_rig(capture, tmp_path, capsys):
    """The whole path a real rig takes: RealSense recordings -> vidyn calibrate --recordings -> YAML with serials."""
    from vidyn_ros.cli import main
    from vidyn_ros.rig.realsense import record_views

    frame, truth, _ = capture
    paths = [str(p) for p in record_views([frame] * 4, tmp_path, serials=[f"12345{i}" for i in range(len(truth))])]
    out = tmp_path / "calib" / "rig.yaml"
    code = main(["calibrate", "--recordings", *paths, "--names", *truth, "--out", str(out)])
    assert code == 0
    poses = load_rig_calibration(out)
    for name, T in poses.items():
        rot, trans = pose_errors(T, truth[name])
        assert rot < 0.5 and trans < 0.005, (name, rot, trans)
    assert "serial: '123450'" in out.read_text()
    assert (tmp_path / "calib" / "rig_detections.png").stat().st_size > 10_000
    assert "cam3" in capsys.readouterr().out


def test_shipped_calibration_matches_the_sim_rig(capture):
    _, truth, _ = capture
    poses = load_rig_calibration(config_dir() / "rig_calibration.yaml")
    for name, T in truth.items():
        rot, trans = pose_errors(poses[name], T)
        assert rot < 0.5 and trans < 0.005


def test_target_yaml_errors(tmp_path):
    good = tmp_path / "t.yaml"
    good.write_text("type: charuco\nsquares: [5, 4]\nsquare_length: 0.03\nmarker_length: 0.02\n")
    assert load_target(good).squares == (5, 4)
    bad = tmp_path / "b.yaml"
    bad.write_text("squares: [5, 4]\nsquare_lenght: 0.03\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: square_lenght: unknown key"):
        load_target(bad)
    bad.write_text("dictionary: DICT_NOPE\n")
    with pytest.raises(ConfigError, match="dictionary: unknown ArUco dictionary 'DICT_NOPE'"):
        load_target(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_target(tmp_path / "missing.yaml")


def test_cli_from_a_bag_and_bad_sources(capture, tmp_path, capsys):
    from vidyn_ros.bags import BagWriter
    from vidyn_ros.cli import main

    frame, truth, _ = capture
    with BagWriter(tmp_path / "bag") as w:
        w.write_rig_frame(frame, ground_truth=False)
    out = tmp_path / "from_bag.yaml"
    assert main(["calibrate", "--bag", str(tmp_path / "bag"), "--out", str(out)]) == 0
    for name, T in load_rig_calibration(out).items():
        rot, trans = pose_errors(T, truth[name])
        assert rot < 0.5 and trans < 0.005, (name, rot, trans)
    capsys.readouterr()
    # Bad input: one line on stderr, exit code 2, nothing written.
    assert main(["calibrate", "--bag", str(tmp_path / "nope"), "--out", str(tmp_path / "x.yaml")]) == 2
    assert main(["calibrate", "--recordings", str(tmp_path / "nope.db3"), "--out", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "nope.db3 not found" in err[1] and "Traceback" not in "".join(err)
    assert not (tmp_path / "x.yaml").exists()
