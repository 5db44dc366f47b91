"""The simulated rig with real MuJoCo rendering (OSMesa on CPU): geometry, determinism, physics, pictures."""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")

import numpy as np
import pytest

from vidyn_ros.errors import ConfigError
from vidyn_ros.geometry import backproject, look_at, quat_wxyz_to_matrix
from vidyn_ros.rig.scenario import Scenario, load_scenario, parse_scenario, surface_distance
from vidyn_ros.rig.sim import SimRig
from vidyn_ros.types import CameraModel, RigFrame
from vidyn_ros.viz import colorize_depth, colorize_mask, contact_sheet

# Every shape, tilted and rotated, seen by two cameras with an off-centre principal point and fx != fy, so a wrong
# intrinsics convention (principal point sign, half-pixel offset, focal axis) shows up as millimetres of error.
GEOMETRY_DOC = {
    "name": "geometry",
    "duration_s": 1.0,
    "objects": [
        {"shape": "box", "size": [0.03, 0.02, 0.025], "position": [0.0, 0.0, 0.025], "rpy_deg": [0, 0, 30]},
        {"shape": "sphere", "size": [0.03], "position": [0.12, 0.05, 0.03]},
        {"shape": "cylinder", "size": [0.025, 0.04], "position": [-0.1, 0.08, 0.04]},
        {"shape": "capsule", "size": [0.02, 0.04], "position": [0.05, -0.12, 0.02], "rpy_deg": [90, 0, 20]},
        {"shape": "box", "size": [0.02, 0.02, 0.02], "position": [-0.08, -0.08, 0.08], "rpy_deg": [30, 40, 10],
         "velocity": [0.2, 0.1, 0.0], "angular_velocity": [1.0, 2.0, 0.0]},
    ],
    "cameras": {
        "width": 640, "height": 480, "fx": 400.0, "fy": 380.0, "cx": 330.0, "cy": 228.0,
        "poses": [
            {"name": "side", "position": [0.45, -0.3, 0.4], "look_at": [0.0, 0.0, 0.0]},
            {"name": "top", "position": [-0.1, 0.05, 0.6], "look_at": [0.0, 0.0, 0.0]},
        ],
    },
}


def surface_errors(rf: RigFrame, rig: SimRig, min_pixels: int = 5) -> dict[tuple[str, int], np.ndarray]:
    """{(camera, object id): distances [m] of back-projected mask pixels to the ground-truth surface}."""
    poses = {p.object_id: p for p in rf.object_poses}
    out = {}
    for v in rf.frame.views:
        pts = backproject(v.depth, v.camera.K, v.camera.T_world_cam)
        for oid in rig.object_ids:
            sel = (v.mask == oid) & (v.depth > 0)
            if sel.sum() < min_pixels:
                continue
            shape, size = rig.object_shapes[oid]
            out[(v.camera.name, oid)] = surface_distance(pts[sel], shape, size, poses[oid].position,
                                                         poses[oid].quat_wxyz)
    return out


def table_errors(rf: RigFrame) -> np.ndarray:
    """|z| [m] of back-projected table pixels (mask 0 with depth): the table is the z = 0 plane."""
    errs = []
    for v in rf.frame.views:
        pts = backproject(v.depth, v.camera.K, v.camera.T_world_cam)
        errs.append(np.abs(pts[(v.mask == 0) & (v.depth > 0)][:, 2]))
    return np.concatenate(errs)


@pytest.fixture(scope="module")
def geometry_scenario() -> Scenario:
    return parse_scenario(GEOMETRY_DOC, source="geometry.yaml")


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_depth_mask_and_intrinsics_are_consistent_with_ground_truth(geometry_scenario: Scenario, scale: float) -> None:
    with SimRig(geometry_scenario, seed=0, render_scale=scale) as rig:
        rig.step(render=False)
        rig.step(render=False)  # the flying box has moved and turned: poses and images come from the same state
        rf = rig.observe()
        assert [v.camera.width for v in rf.frame.views] == [round(640 * scale)] * 2
        errs = surface_errors(rf, rig)
        # every object is seen by both cameras
        assert {k for k in errs} == {(c, i) for c in ("side", "top") for i in range(1, 6)}
        for key, d in errs.items():
            p95 = float(np.percentile(d, 95))
            assert p95 < 0.005, f"{key}: 95th percentile {p95 * 1000:.2f} mm"
            assert p95 < 0.001, f"{key}: 95th percentile {p95 * 1000:.2f} mm (tessellation is ~0.3 mm)"
        table = table_errors(rf)
        assert table.size > 1000 and float(np.percentile(table, 99)) < 0.0005
        for v in rf.frame.views:
            # a mask pixel always has depth: perception may rely on it
            assert not np.any((v.mask > 0) & (v.depth == 0))


@pytest.mark.parametrize("name", ["bowling", "cube_stack", "push"])
def test_shipped_scenarios_render_consistent_frames(name: str) -> None:
    scn = load_scenario(name)
    with SimRig(scn, seed=1, render_scale=0.25) as rig:
        assert [c.name for c in rig.cameras] == ["cam0", "cam1", "cam2", "cam3"]
        for cam, full in zip(rig.cameras, scn.cameras, strict=True):
            assert (cam.width, cam.height) == (160, 120)
            np.testing.assert_allclose(cam.K, full.scaled(0.25).K)
            np.testing.assert_allclose(cam.T_world_cam, full.T_world_cam)
        rig.set_pusher_velocity([0.1, 0.0, 0.0])
        for _ in range(9):
            rig.step(render=False)
        rf = rig.step()
        assert rig.time_s == pytest.approx(10 / 30) and rf.frame.stamp_ns == round(10 / 30 * 1e9)
        assert len(rf.frame.views) == 4
        for v in rf.frame.views:
            assert v.color.shape == (120, 160, 3) and v.color.dtype == np.uint8
            assert v.depth.shape == (120, 160) and v.depth.dtype == np.float32
            assert v.mask.shape == (120, 160) and v.mask.dtype == np.int32
            assert v.stamp_ns == rf.frame.stamp_ns
            assert v.color.std() > 20  # textured table, coloured objects: not a blank image
            nodata = v.depth == 0
            assert nodata.any() and not np.any(v.mask[nodata] > 0)  # sky beyond the table: no depth, background
            assert set(np.unique(v.mask)) <= {0, *rig.object_ids}
        expected_ids = len(scn.objects) + (1 if scn.pusher else 0)
        assert rig.object_ids == list(range(1, expected_ids + 1))
        assert [p.object_id for p in rf.object_poses] == rig.object_ids
        seen = set().union(*(set(np.unique(v.mask)) for v in rf.frame.views)) - {0}
        assert seen == set(rig.object_ids)  # every object, pusher included, appears in some mask
        errs = np.concatenate(list(surface_errors(rf, rig, min_pixels=3).values()))
        assert float(np.percentile(errs, 95)) < 0.005
        assert float(np.percentile(table_errors(rf), 99)) < 0.001


def test_render_only_matches_rig_cameras_and_renders_new_views(geometry_scenario: Scenario) -> None:
    with SimRig(geometry_scenario, render_scale=0.25) as rig:
        rf = rig.observe()
        again = rig.render_only([rig.cameras[1], rig.cameras[0]])
        np.testing.assert_array_equal(again.views[0].color, rf.frame.views[1].color)
        np.testing.assert_array_equal(again.views[1].depth, rf.frame.views[0].depth)
        np.testing.assert_array_equal(again.views[0].mask, rf.frame.views[1].mask)
        # a new camera: another pose, size and intrinsics; geometry must still be exact
        K = np.array([[150.0, 0, 70.0], [0, 140.0, 50.0], [0, 0, 1]])
        new = CameraModel("new", 128, 96, K, look_at(np.array([-0.3, -0.35, 0.3]), np.array([0.0, 0.0, 0.02])))
        mv = rig.render_only([new])
        assert mv.views[0].depth.shape == (96, 128) and mv.views[0].camera is new
        fake = RigFrame(frame=mv, object_poses=rf.object_poses)
        errs = surface_errors(fake, rig)
        assert len(errs) >= 4 and all(float(np.percentile(d, 95)) < 0.001 for d in errs.values())
        assert float(np.percentile(table_errors(fake), 99)) < 0.0005
        # the rig's own cameras are unchanged afterwards
        rig.step(render=False)
        rf2 = rig.observe()
        assert float(np.percentile(np.concatenate(list(surface_errors(rf2, rig).values())), 95)) < 0.001
        with pytest.raises(ValueError, match="exceeds the offscreen buffer"):
            rig.render_only([CameraModel("big", 2000, 100, K)])


def test_same_seed_same_frames_different_seed_different_start() -> None:
    frames = []
    for seed in (3, 3):
        with SimRig("push", seed=seed, render_scale=0.25) as rig:
            rig.set_pusher_velocity([0.1, 0.02, 0.0])
            for _ in range(4):
                rf = rig.step()
            frames.append(rf)
    a, b = frames
    for va, vb in zip(a.frame.views, b.frame.views, strict=True):
        np.testing.assert_array_equal(va.color, vb.color)
        np.testing.assert_array_equal(va.depth, vb.depth)
        np.testing.assert_array_equal(va.mask, vb.mask)
    for pa, pb in zip(a.object_poses, b.object_poses, strict=True):
        np.testing.assert_array_equal(pa.position, pb.position)

    scn = load_scenario("push")
    starts = []
    for seed in range(4):
        with SimRig(scn, seed=seed, render_scale=0.25, masks=False) as rig:
            starts.append(rig.object_poses())
    for i, o in enumerate(scn.objects):
        pos = np.stack([s[i].position for s in starts])
        assert np.ptp(pos[:, 0]) > 0.005, f"{o.name}: seeds give the same start"
        # within the ranges: position +- randomize.position, yaw within +- yaw_deg of the nominal orientation
        assert np.all(np.abs(pos - np.asarray(o.position)) <= np.asarray(o.randomize.position) + 1e-9)
        R0 = quat_wxyz_to_matrix(np.asarray(o.quat_wxyz))
        for s in starts:
            R = quat_wxyz_to_matrix(s[i].quat_wxyz)
            yaw = np.degrees(np.arctan2((R @ R0.T)[1, 0], (R @ R0.T)[0, 0]))
            assert abs(yaw) <= o.randomize.yaw_deg + 1e-6
    # reset(seed) reproduces a fresh rig's start
    with SimRig(scn, seed=0, render_scale=0.25, masks=False) as rig:
        rig.step(render=False)
        rig.reset(2)
        np.testing.assert_allclose(rig.object_poses()[0].position, starts[2][0].position)
        assert rig.time_s == 0.0


def test_state_save_and_restore() -> None:
    with SimRig("cube_stack", seed=0, render_scale=0.25) as rig:
        for _ in range(5):
            rig.step(render=False)
        state = rig.get_state()
        a = [rig.step() for _ in range(3)][-1]
        rig.set_state(state)
        assert rig.frame_index == 5
        b = [rig.step() for _ in range(3)][-1]
        np.testing.assert_array_equal(a.frame.views[0].depth, b.frame.views[0].depth)
        assert a.frame.stamp_ns == b.frame.stamp_ns
    # the pusher (a mocap body) and its held command are part of the state
    with SimRig("push", seed=0, render_scale=0.25, masks=False) as rig:
        rig.set_pusher_velocity([0.1, 0.0, 0.0])
        rig.step(render=False)
        state = rig.get_state()
        p_before = rig.object_poses()[-1].position.copy()
        rig.set_pusher_velocity([0.0, 0.2, 0.0])
        for _ in range(5):
            rig.step(render=False)
        rig.set_state(state)
        np.testing.assert_array_equal(rig.object_poses()[-1].position, p_before)
        np.testing.assert_array_equal(rig.pusher_velocity, [0.1, 0.0, 0.0])


def test_bowling_ball_knocks_pins() -> None:
    with SimRig("bowling", seed=0, render_scale=0.25, masks=False) as rig:
        start = rig.object_poses()
        assert start[0].linear_velocity[0] > 0.8  # the ball starts rolling towards the pins
        # ... spinning about world +y (velocities are reported in world axes, whatever the body's orientation)
        np.testing.assert_allclose(start[0].angular_velocity, [0.0, 33.3, 0.0], atol=1e-6)
        assert np.linalg.norm(start[1].linear_velocity) < 1e-9  # pins stand still
        for _ in range(45):
            rig.step(render=False)
        end = rig.object_poses()
    assert np.linalg.norm(end[0].position - start[0].position) > 0.3
    tilts = [np.degrees(np.arccos(np.clip(quat_wxyz_to_matrix(p.quat_wxyz)[2, 2], -1, 1))) for p in end[1:]]
    moved = [np.linalg.norm(e.position - s.position) for s, e in zip(start[1:], end[1:], strict=True)]
    assert sum(t > 45 for t in tilts) >= 3, tilts
    assert sum(m > 0.02 for m in moved) >= 3, moved


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cube_stack_topples(seed: int) -> None:
    with SimRig("cube_stack", seed=seed, render_scale=0.25, masks=False) as rig:
        start = rig.object_poses()
        for _ in range(60):
            rig.step(render=False)
        end = rig.object_poses()
    drops = [s.position[2] - e.position[2] for s, e in zip(start, end, strict=True)]
    assert drops[4] > 0.19, drops  # the top cube lands on the table (started at z = 0.225)
    assert sum(d > 0.02 for d in drops) >= 3, drops  # ... and the stack below it falls too
    assert all(e.position[2] > 0.02 for e in end)  # nothing sank into the table


def test_pusher_follows_velocity_commands_and_pushes(caplog: pytest.LogCaptureFixture) -> None:
    with SimRig("push", seed=0, render_scale=0.25, masks=False) as rig:
        pid = rig.pusher_id
        assert pid == len(rig.scenario.objects) + 1 and rig.object_names[pid] == "pusher"
        p0 = rig.object_poses()[pid - 1].position.copy()
        block0 = rig.object_poses()[0].position.copy()
        v = np.array([0.1, 0.05, 0.0])
        rig.set_pusher_velocity(v)
        for _ in range(15):
            rf = rig.step(render=False)
        assert rf is None
        poses = rig.object_poses()
        np.testing.assert_allclose(poses[pid - 1].position - p0, v * rig.time_s, atol=1e-3)
        np.testing.assert_allclose(poses[pid - 1].linear_velocity, v)
        # too fast: clamped to max_speed (0.3 m/s) along the commanded direction
        rig.set_pusher_velocity([3.0, 0.0, 0.0])
        np.testing.assert_allclose(rig.pusher_velocity, [rig.scenario.pusher.max_speed, 0, 0])
        # drive straight through the red block's start: it gets pushed along +x
        rig.reset(0)
        rig.set_pusher_velocity([0.1, 0.0, 0.0])
        for _ in range(60):
            rig.step(render=False)
        assert rig.object_poses()[0].position[0] - block0[0] > 0.03
        # the workspace bounds the pusher
        rig.set_pusher_velocity([0.0, -0.3, 0.0])
        for _ in range(90):
            rig.step(render=False)
        assert rig.object_poses()[pid - 1].position[1] == pytest.approx(rig.scenario.pusher.workspace[1])
    with SimRig("cube_stack", render_scale=0.25, masks=False) as rig, caplog.at_level(logging.WARNING):
        assert rig.pusher_id is None and len(rig.object_ids) == 5
        rig.set_pusher_velocity([0.1, 0, 0])
        rig.set_pusher_velocity([0.1, 0, 0])
        assert sum("no pusher" in r.message for r in caplog.records) == 1


def test_frames_iterates_the_whole_scenario(tmp_path: Path) -> None:
    doc = dict(GEOMETRY_DOC, duration_s=0.2)
    with SimRig(parse_scenario(doc), render_scale=0.125) as rig:
        stamps = [rf.frame.stamp_ns for rf in rig.frames()]
    assert len(stamps) == rig.n_frames == 6
    assert stamps == [round(k * 1e9 / 30) for k in range(6)]


def test_contact_sheet_and_colormaps(tmp_path: Path) -> None:
    from PIL import Image

    with SimRig("push", render_scale=0.25) as rig:
        frame = rig.step().frame
    out = contact_sheet(frame, tmp_path / "sheet" / "push.png", title="push t=1/30 s")
    img = np.asarray(Image.open(out))
    assert img.shape[1] == 3 * 160 and img.shape[0] > 4 * 120
    # the colour tile of row 0 is the camera image itself (tiles are not rescaled at 160 px)
    assert np.abs(img[18 + 14:18 + 14 + 120, :160].astype(int) - frame.views[0].color).mean() < 1.0

    depth = np.array([[0.0, 0.5], [1.0, 2.0]], dtype=np.float32)
    c = colorize_depth(depth, near=0.5, far=2.0)
    assert c.dtype == np.uint8 and c.shape == (2, 2, 3)
    assert c[0, 0].tolist() == [0, 0, 0]  # no data is black
    assert c[0, 1].sum() < c[1, 1].sum()  # near is darker than far
    m = colorize_mask(np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]]))
    assert len({tuple(px) for px in m[0]}) == 12  # all ids distinct


def test_restitution_makes_objects_bounce() -> None:
    # three spheres dropped from 0.2 m (bottom 0.18 m above the table); rebound height ~ e^2 x drop height
    doc = {
        "fps": 60,
        "objects": [
            {"name": "e08", "shape": "sphere", "size": [0.02], "position": [-0.1, 0, 0.2], "restitution": 0.8},
            {"name": "e05", "shape": "sphere", "size": [0.02], "position": [0.0, 0, 0.2], "restitution": 0.5},
            {"name": "dull", "shape": "sphere", "size": [0.02], "position": [0.1, 0, 0.2]},
        ],
        "cameras": {"ring": {"count": 1}},
    }
    with SimRig(parse_scenario(doc), render_scale=0.125, masks=False) as rig:
        z = []
        for _ in range(45):
            rig.step(render=False)
            z.append([p.position[2] for p in rig.object_poses()])
    z = np.array(z) - 0.02  # height of the sphere's bottom
    first_contact = np.argmax(z < 0.005, axis=0)
    rebound = [z[first_contact[i] + 1:, i].max() for i in range(3)]
    e = np.sqrt(np.clip(rebound, 0.0, None) / 0.18)
    assert 0.7 < e[0] < 0.9, e
    assert 0.4 < e[1] < 0.6, e
    assert rebound[2] < 0.003, rebound


def test_depth_noise_and_min_depth(geometry_scenario: Scenario, caplog: pytest.LogCaptureFixture) -> None:
    from dataclasses import replace

    exact = SimRig(geometry_scenario, render_scale=0.25)
    noisy = SimRig(replace(geometry_scenario, depth_noise_at_1m=0.002, min_depth=0.55), render_scale=0.25)
    with exact, noisy:
        a, b, b2 = exact.observe(), noisy.observe(), noisy.observe()
        for va, vb, vb2 in zip(a.frame.views, b.frame.views, b2.frame.views, strict=True):
            np.testing.assert_array_equal(vb.depth, vb2.depth)  # seeded: a re-render is identical
            both = (va.depth > 0) & (vb.depth > 0)
            # residuals divided by z^2 have the requested std at 1 m
            r = (vb.depth[both] - va.depth[both]) / va.depth[both] ** 2
            assert 0.0017 < r.std() < 0.0023 and abs(r.mean()) < 0.0003
            assert vb.depth[vb.depth > 0].min() >= 0.55
            assert np.any((va.depth > 0) & (va.depth < 0.55))  # the top camera sees closer than 0.55 m
    # objects that start inside each other or the table are reported
    doc = {"objects": [{"shape": "box", "size": [0.02, 0.02, 0.02], "position": [0, 0, 0.01]}],
           "cameras": {"ring": {"count": 1}}}
    with caplog.at_level(logging.WARNING), SimRig(parse_scenario(doc), masks=False):
        pass
    assert [r.message for r in caplog.records] == ["scenario 'scenario', seed 0: table and obj1 start 10.0 mm inside "
                                                   "each other"]


def test_fixed_textured_board_maps_image_onto_top_face(tmp_path: Path) -> None:
    from PIL import Image

    # a 300x200 image on a 0.3 m x 0.2 m board: 1 mm per texel; a red square at texel columns 30..79, rows 20..69
    img = np.full((200, 300, 3), 255, np.uint8)
    img[20:70, 30:80] = (255, 0, 0)
    Image.fromarray(img).save(tmp_path / "board.png")
    doc = {
        "objects": [
            {"name": "board", "shape": "box", "size": [0.15, 0.1, 0.0025], "position": [0.05, -0.02, 0.0025],
             "rpy_deg": [0, 0, 90], "fixed": True, "texture": "board.png"},
            {"name": "ball", "shape": "sphere", "size": [0.02], "position": [0.05, -0.02, 0.1]},
        ],
        "cameras": {"width": 320, "height": 240, "fx": 300.0, "fy": 300.0, "cx": 160.0, "cy": 120.0,
                    "poses": [{"position": [0.3, 0.2, 0.6], "look_at": [0.05, -0.02, 0.0]}]},
    }
    (tmp_path / "board.yaml").write_text(__import__("yaml").safe_dump(doc))
    scn = load_scenario(tmp_path / "board.yaml")
    assert scn.objects[0].fixed and scn.objects[0].texture == (tmp_path / "board.png").resolve()
    assert scn.objects[0].color == (1.0, 1.0, 1.0)
    with SimRig(scn, render_scale=1.0) as rig:
        for _ in range(20):
            rig.step(render=False)  # the ball falls onto the board, the board does not move
        rf = rig.observe()
        board = rf.object_poses[0]
        np.testing.assert_allclose(board.position, [0.05, -0.02, 0.0025], atol=1e-9)
        assert np.linalg.norm(board.linear_velocity) == 0.0
        assert rf.object_poses[1].position[2] == pytest.approx(0.005 + 0.02, abs=0.002)  # ball rests on the board
        v = rf.frame.views[0]
        red = (v.color[..., 0] > 150) & (v.color[..., 1] < 80) & (v.color[..., 2] < 80) & (v.mask == 1)
        assert red.sum() > 100
        pts = backproject(v.depth, v.camera.K, v.camera.T_world_cam)[red]
        # texel (col, row) -> board frame: x = hx * (2 (col + 0.5) / W - 1), y = hy * (1 - 2 (row + 0.5) / H)
        centre_board = np.array([0.15 * (2 * 55.0 / 300 - 1), 0.1 * (1 - 2 * 45.0 / 200), 0.0025])
        R = quat_wxyz_to_matrix(board.quat_wxyz)
        expected = board.position + R @ centre_board
        np.testing.assert_allclose(pts.mean(axis=0), expected, atol=0.001)  # measured: 0.4 mm
        errs = surface_errors(rf, rig)
        assert float(np.percentile(errs[("cam0", 1)], 95)) < 0.001
    # an image MuJoCo cannot read: one line naming the scenario file
    (tmp_path / "broken.png").write_bytes(b"not a png")
    doc["objects"][0]["texture"] = "broken.png"
    (tmp_path / "broken.yaml").write_text(__import__("yaml").safe_dump(doc))
    with pytest.raises(ConfigError, match=r"broken\.yaml: MuJoCo cannot build this scenario: .*") as info:
        SimRig(load_scenario(tmp_path / "broken.yaml"))
    assert "\n" not in str(info.value)
    # a missing image or another format is refused with file and key
    doc["objects"][0]["texture"] = "nope.png"
    (tmp_path / "bad.yaml").write_text(__import__("yaml").safe_dump(doc))
    with pytest.raises(ConfigError, match=r"bad\.yaml: objects\[0\]\.texture: image file not found"):
        load_scenario(tmp_path / "bad.yaml")


@pytest.mark.parametrize("option", ["antialias", "shadows"])
def test_render_options_change_only_colour(geometry_scenario: Scenario, option: str) -> None:
    from dataclasses import replace

    fancy = replace(geometry_scenario, render=replace(geometry_scenario.render, **{option: True}))
    with SimRig(geometry_scenario, render_scale=0.25) as plain, SimRig(fancy, render_scale=0.25) as other:
        a, b = plain.observe().frame, other.observe().frame
    for va, vb in zip(a.views, b.views, strict=True):
        np.testing.assert_array_equal(va.depth, vb.depth)
        np.testing.assert_array_equal(va.mask, vb.mask)
        diff = np.abs(va.color.astype(int) - vb.color.astype(int)).max(axis=-1)
        # antialiasing touches the edges, shadows darken patches of the table; neither repaints the whole image
        # (shadow rendering adds the lights in separate passes: +-1 rounding everywhere, hence the threshold)
        changed = diff > 12
        assert 0.001 < changed.mean() < 0.2, changed.mean()
        assert np.median(diff) <= 1
        if option == "shadows":
            assert np.all(vb.color[changed].astype(int).sum(-1) < va.color[changed].astype(int).sum(-1) + 12)
