"""Scenario YAML: the shipped scenarios load, user-written files work, bad files fail with file + key in one line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from vidyn_ros.errors import ConfigError
from vidyn_ros.rig.scenario import (
    Scenario,
    load_scenario,
    parse_scenario,
    scenario_names,
    shape_sdf,
    surface_distance,
)

MINIMAL = {
    "objects": [{"shape": "box", "size": [0.02, 0.02, 0.02], "position": [0.0, 0.0, 0.02]}],
    "cameras": {"ring": {"count": 2}},
}


def write(tmp_path: Path, doc: dict | str, name: str = "user.yaml") -> Path:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return p


@pytest.mark.parametrize("name", ["bowling", "cube_stack", "push"])
def test_shipped_scenarios_load(name: str) -> None:
    assert name in scenario_names()
    scn = load_scenario(name)
    assert isinstance(scn, Scenario) and scn.name == name
    assert scn.fps == 30 and scn.n_frames == round(scn.duration_s * 30)
    # an integer number of physics steps per frame, no longer than the requested dt
    assert scn.substeps * scn.physics_dt == pytest.approx(1.0 / scn.fps)
    assert scn.physics_dt <= 0.002 + 1e-12
    assert len(scn.cameras) == 4 and [c.name for c in scn.cameras] == ["cam0", "cam1", "cam2", "cam3"]
    for cam in scn.cameras:
        assert (cam.width, cam.height) == (640, 480)
        assert 380 <= cam.fx <= 390 and cam.cx == pytest.approx(320.0)
        # every camera looks at the table: its optical axis points down and towards the origin
        z = cam.T_world_cam[:3, 2]
        assert z[2] < -0.3
        assert np.dot(z[:2], -cam.T_world_cam[:2, 3]) > 0
    # objects rest on (or above) the table, and the colours are distinct
    for o in scn.objects:
        assert o.position[2] > 0
    colors = {o.color for o in scn.objects}
    assert len(colors) == len(scn.objects)


def test_shipped_scenario_contents() -> None:
    bowling = load_scenario("bowling")
    assert bowling.objects[0].shape == "sphere" and bowling.objects[0].velocity[0] > 0.5
    assert sum(o.name.startswith("pin") for o in bowling.objects) == 10
    push = load_scenario("push")
    assert push.pusher is not None and 2 <= len(push.objects) <= 4
    assert load_scenario("cube_stack").pusher is None
    assert all(o.shape == "box" for o in load_scenario("cube_stack").objects)


def test_load_by_path_equals_by_name() -> None:
    by_name = load_scenario("push")
    by_path = load_scenario(by_name.source)
    assert by_path.objects == by_name.objects and by_path.pusher == by_name.pusher


def test_user_scenario_with_explicit_poses_and_all_shapes(tmp_path: Path) -> None:
    doc = {
        "name": "mine",
        "duration_s": 1.0,
        "fps": 15,
        "physics": {"dt": 0.005, "gravity": [0, 0, -9.8]},
        "table": {"texture": "noise", "half_size": [0.4, 0.3]},
        "render": {"shadows": True},
        "objects": [
            {"name": "b", "shape": "box", "size": [0.02, 0.03, 0.04], "position": [0, 0, 0.04], "mass": 0.3,
             "color": "orange", "rpy_deg": [0, 0, 90], "friction": 0.4},
            {"shape": "sphere", "size": 0.03, "position": [0.1, 0, 0.03], "randomize": {"position": [0.01, 0.01, 0]}},
            {"shape": "cylinder", "size": [0.02, 0.05], "position": [-0.1, 0, 0.05], "quat_wxyz": [2, 0, 0, 0]},
            {"shape": "capsule", "size": [0.015, 0.03], "position": [0, 0.1, 0.1], "velocity": [0, 0, 1]},
        ],
        "pusher": {"position": [0.2, 0.2, 0.05]},
        "cameras": {
            "width": 320, "height": 240,
            "poses": [
                {"name": "left", "position": [0.5, 0.0, 0.5], "look_at": [0, 0, 0]},
                {"position": [0.0, 0.0, 0.8], "rotation_wxyz": [0, 1, 0, 0]},
            ],
        },
    }
    scn = load_scenario(write(tmp_path, doc))
    assert scn.name == "mine" and scn.fps == 15 and scn.n_frames == 15
    assert scn.substeps == math.ceil((1 / 15) / 0.005)
    assert [c.name for c in scn.cameras] == ["left", "cam1"]
    assert scn.cameras[0].fx == pytest.approx(386.0 / 2)  # D455-like default scaled to the width
    assert scn.cameras[1].T_world_cam[:3, 2] == pytest.approx([0, 0, -1])  # rotation_wxyz (w=0, x=1): looks down
    assert [o.name for o in scn.objects] == ["b", "obj2", "obj3", "obj4"]
    assert scn.objects[0].friction[0] == 0.4 and scn.objects[0].color == pytest.approx((0.95, 0.45, 0.05))
    assert scn.objects[0].quat_wxyz == pytest.approx((math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)))
    assert scn.objects[1].size == (0.03,)
    assert scn.objects[2].quat_wxyz == (1.0, 0.0, 0.0, 0.0)  # normalised
    assert scn.table.texture == "noise" and scn.render.shadows
    assert scn.pusher is not None and scn.pusher.position == (0.2, 0.2, 0.05)


def test_minimal_scenario_gets_defaults(tmp_path: Path) -> None:
    scn = load_scenario(write(tmp_path, MINIMAL, "tiny.yaml"))
    assert scn.name == "tiny" and scn.fps == 30 and scn.pusher is None
    assert len(scn.cameras) == 2 and scn.cameras[0].width == 640
    assert scn.objects[0].name == "obj1"


def bad(tmp_path: Path, doc: dict | str) -> str:
    p = write(tmp_path, doc, "bad.yaml")
    with pytest.raises(ConfigError) as info:
        load_scenario(p)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(p) in msg, msg
    return msg


def with_(**changes) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(MINIMAL))
    for path, value in changes.items():
        node = doc
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return doc


def test_malformed_yaml(tmp_path: Path) -> None:
    msg = bad(tmp_path, "objects: [\n  {shape: box\ncameras: {ring: {count: 2}}\n")
    assert "not valid YAML" in msg and "line" in msg


def test_unknown_keys_are_errors(tmp_path: Path) -> None:
    doc = with_()
    doc["objects"][0]["colour"] = "red"
    msg = bad(tmp_path, doc)
    assert "objects[0].colour: unknown key" in msg
    assert "objects[0].colour" in msg
    doc = with_()
    doc["framerate"] = 30
    assert "framerate: unknown key" in bad(tmp_path, doc)
    doc = with_()
    doc["cameras"]["ring"]["radus"] = 1.0
    assert "cameras.ring.radus: unknown key" in bad(tmp_path, doc)


def test_wrong_types(tmp_path: Path) -> None:
    assert "fps: expected a number, got a string ('fast')" in bad(tmp_path, with_(fps="fast"))
    assert "objects[0].size: expected 3 numbers for box, got 2" in bad(
        tmp_path, with_(objects__0__size=[0.1, 0.1]))
    assert "objects[0].shape: expected one of box, sphere, cylinder, capsule, got 'cone'" in bad(
        tmp_path, with_(objects__0__shape="cone"))
    assert "objects[0].mass: must be > 0.0" in bad(tmp_path, with_(objects__0__mass=0))
    assert "objects[0].position: expected 3 numbers, got 2" in bad(tmp_path, with_(objects__0__position=[0, 0]))
    assert "objects[0].color: unknown colour 'chartreuse'" in bad(tmp_path, with_(objects__0__color="chartreuse"))
    assert "cameras.ring.count: expected an integer, got a number (2.5)" in bad(
        tmp_path, with_(cameras__ring__count=2.5))
    assert "objects: expected a non-empty list" in bad(tmp_path, with_(objects=[]))
    assert "physics.dt: 0.04 s is longer than one frame" in bad(tmp_path, with_(fps=60, physics={"dt": 0.04}))
    assert "render.shadows: expected true or false" in bad(tmp_path, with_(render={"shadows": "yes"}))


def test_zero_cameras(tmp_path: Path) -> None:
    assert "cameras.ring.count: need at least 1 camera, got 0" in bad(tmp_path, with_(cameras={"ring": {"count": 0}}))
    assert "cameras.poses: need at least 1 camera" in bad(tmp_path, with_(cameras={"poses": []}))
    assert "cameras: give exactly one of 'ring'" in bad(tmp_path, with_(cameras={"width": 640}))


def test_missing_keys_and_duplicates(tmp_path: Path) -> None:
    doc = with_()
    del doc["cameras"]
    assert "cameras: missing required key" in bad(tmp_path, doc)
    doc = with_()
    del doc["objects"][0]["position"]
    assert "objects[0].position: missing required key" in bad(tmp_path, doc)
    doc = with_()
    doc["objects"].append(dict(doc["objects"][0]))
    doc["objects"][0]["name"] = doc["objects"][1]["name"] = "a"
    assert "objects[1].name: duplicate object name 'a'" in bad(tmp_path, doc)
    assert "objects[0].name: 'pusher' is reserved" in bad(tmp_path, with_(objects__0__name="pusher"))
    assert "objects[0].name: 'table' is reserved" in bad(tmp_path, with_(objects__0__name="table"))
    cams = {"poses": [{"position": [1, 0, 1]}]}
    assert "cameras.poses[0]: give exactly one of 'look_at' or 'rotation_wxyz'" in bad(tmp_path, with_(cameras=cams))


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: scenario file not found"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"no_such_scenario: no such scenario.*shipped: bowling, .*cube_stack.*push"):
        load_scenario("no_such_scenario")


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    assert "(top level): expected a mapping, got a list of 2" in bad(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match=r"<scenario>: objects: missing required key"):
        parse_scenario({"cameras": {"ring": {"count": 1}}})


def test_shape_sdf_matches_analytic_distances() -> None:
    pts = np.array([[0.1, 0, 0], [0, 0, 0], [0.05, 0.05, 0]])
    assert shape_sdf(pts, "sphere", [0.05]) == pytest.approx([0.05, -0.05, math.hypot(0.05, 0.05) - 0.05])
    assert shape_sdf(pts, "box", [0.02, 0.03, 0.04]) == pytest.approx([0.08, -0.02, math.hypot(0.03, 0.02)])
    cyl = shape_sdf(np.array([[0.0, 0, 0.1], [0.05, 0, 0], [0.03, 0, 0.06]]), "cylinder", [0.02, 0.05])
    assert cyl == pytest.approx([0.05, 0.03, math.hypot(0.01, 0.01)])
    cap = shape_sdf(np.array([[0.0, 0, 0.1], [0.05, 0, 0.01]]), "capsule", [0.02, 0.05])
    assert cap == pytest.approx([0.03, 0.03])
    # a posed box: a point 1 cm above the top face of a box rotated 90 deg about z and lifted 0.1 m
    q = np.array([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)])
    d = surface_distance(np.array([[0.0, 0.0, 0.15]]), "box", [0.1, 0.02, 0.04], np.array([0, 0, 0.1]), q)
    assert d == pytest.approx([0.01])


def test_restitution_and_direct_solref(tmp_path: Path) -> None:
    from vidyn_ros.rig.scenario import restitution_solref

    k, b = restitution_solref(0.5)
    zeta = -b / (2 * math.sqrt(-k))
    assert math.exp(-zeta * math.pi / math.sqrt(1 - zeta**2)) == pytest.approx(0.5)
    scn = load_scenario(write(tmp_path, with_(objects__0__restitution=0.5)))
    assert scn.objects[0].solref == pytest.approx((k, b))
    scn = load_scenario(write(tmp_path, with_(objects__0__solref=[-20000, -10])))
    assert scn.objects[0].solref == (-20000.0, -10.0)
    assert "objects[0].solref: expected [time_constant > 0" in bad(tmp_path, with_(objects__0__solref=[-1, 2]))
    doc = with_(objects__0__restitution=0.5)
    doc["objects"][0]["solref"] = [0.02, 1]
    assert "give at most one of 'solref' and 'restitution'" in bad(tmp_path, doc)
    assert "objects[0].restitution: must be <= 0.99" in bad(tmp_path, with_(objects__0__restitution=1.5))


def test_camera_below_the_table_is_an_error_naming_it(tmp_path: Path) -> None:
    doc = dict(MINIMAL, cameras={"poses": [
        {"name": "top", "position": [0.0, 0.5, 0.6], "look_at": [0, 0, 0]},
        {"name": "under", "position": [0.3, 0.0, -0.2], "look_at": [0, 0, 0.05]},
    ]})
    with pytest.raises(ConfigError, match=r"user\.yaml: cameras\.poses\[1\]\.position: camera 'under' is at "
                                          r"z = -0\.2 m, not above the table") as info:
        load_scenario(write(tmp_path, doc))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"cameras\.ring\.height: camera 'cam0' is at z = -0\.1 m"):
        load_scenario(write(tmp_path, dict(MINIMAL, cameras={"ring": {"count": 2, "height": -0.1}})))


def test_calibration_with_a_camera_below_the_table_warns(tmp_path: Path, caplog) -> None:
    from vidyn_ros.geometry import look_at
    from vidyn_ros.rig.calibration_io import load_rig_calibration, save_rig_calibration

    f = save_rig_calibration(tmp_path / "calib.yaml", {"cam0": look_at(np.array([0.5, 0, 0.5]), np.zeros(3)),
                                                       "cam7": look_at(np.array([0.5, 0, -0.3]), np.zeros(3))})
    assert set(load_rig_calibration(f)) == {"cam0", "cam7"}
    assert "cam7 is at z = -0.300 m, not above the table" in caplog.text and "cam0" not in caplog.text
