"""Scenario ``events``: known forces / impulses on objects (actuation that makes mass identifiable), applied by the
MuJoCo rig and published as wrenches about the world origin."""

from __future__ import annotations

import numpy as np
import pytest

from vidyn_ros import msgs
from vidyn_ros.errors import ConfigError
from vidyn_ros.rig.scenario import parse_scenario
from vidyn_ros.types import AppliedWrench

BASE = {
    "duration_s": 1.0,
    "objects": [
        {"name": "block", "shape": "box", "size": [0.03, 0.03, 0.03], "mass": 0.2, "position": [0.0, 0.05, 0.03],
         "friction": 0.5},
        {"name": "ball", "shape": "sphere", "size": 0.03, "mass": 0.1, "position": [0.2, 0.0, 0.03]},
    ],
    "cameras": {"width": 64, "height": 48, "ring": {"count": 1}},
}


def _scenario(events):
    return parse_scenario({**BASE, "events": events}, source="ev.yaml")


def test_events_parse_impulse_and_force():
    scn = _scenario([{"object": "block", "time_s": 0.1, "impulse": [0.05, 0.0, 0.0]},
                     {"object": "ball", "time_s": 0.5, "force": [0.0, 2.0, 0.0], "duration_s": 0.05}])
    a, b = scn.events
    assert a.object_index == 0 and a.duration_s == pytest.approx(scn.physics_dt)
    assert a.impulse == pytest.approx((0.05, 0.0, 0.0))
    assert b.object_index == 1 and b.force == (0.0, 2.0, 0.0) and b.impulse == pytest.approx((0.0, 0.1, 0.0))
    assert parse_scenario(BASE).events == ()


@pytest.mark.parametrize("events,message", [
    ([{"object": "cube", "time_s": 0.1, "impulse": [1, 0, 0]}], "events[0].object: no object named 'cube'"),
    ([{"object": "block", "time_s": 0.1}], "events[0]: give exactly one of 'force'"),
    ([{"object": "block", "time_s": 0.1, "impulse": [1, 0, 0], "force": [1, 0, 0]}], "exactly one of"),
    ([{"object": "block", "time_s": 2.0, "impulse": [1, 0, 0]}], "events[0].time_s: 2.0 s is not before the end"),
    ([{"object": "block", "time_s": 0.1, "impulse": [1, 0]}], "events[0].impulse: expected 3 numbers"),
    ([{"object": "block", "time_s": 0.1, "force": [1, 0, 0], "duration_s": 0.2},
      {"object": "ball", "time_s": 0.2, "impulse": [1, 0, 0]}], "events[1]: overlaps events[0]"),
    ([{"object": "block", "time_s": 0.1, "impulse": [1, 0, 0], "speed": 3}], "events[0].speed: unknown key"),
    ({"object": "block"}, "events: expected a list"),
])
def test_bad_events_are_one_line_errors(events, message):
    with pytest.raises(ConfigError) as err:
        _scenario(events)
    assert message in str(err.value) and str(err.value).startswith("ev.yaml: ")
    assert "\n" not in str(err.value)


def test_rig_applies_the_impulse_and_reports_the_wrench():
    from vidyn_ros.rig.sim import SimRig

    scn = _scenario([{"object": "block", "time_s": 2 / 30, "impulse": [0.05, 0.0, 0.0]}])
    with SimRig(scn, render_scale=1.0) as rig:
        frames = [rig.step() for _ in range(4)]
        poses = rig.object_poses()
    assert [len(f.wrenches) for f in frames] == [0, 0, 2, 0]
    on, off = frames[2].wrenches
    step_ns = scn.physics_dt * 1e9
    assert on.stamp_ns == round(2 / 30 * 1e9) and off.stamp_ns == pytest.approx(on.stamp_ns + step_ns, abs=1)
    assert on.force == pytest.approx((0.05 / scn.physics_dt, 0.0, 0.0)) and off.force == (0.0, 0.0, 0.0)
    # the line of action passes through the block's centre of mass (0, 0.05, 0.03)
    p = np.asarray(on.line_point())
    assert abs(p[1] - 0.05) < 1e-3 and abs(p[2] - 0.03) < 1e-3
    # MuJoCo: dv = J / m (less the friction over the next frames: mu g t = 0.5 * 9.81 * 0.067 s ~ 0.33 m/s...)
    v = poses[0].linear_velocity
    assert 0.25 - 0.5 * 9.81 * (2 / 30) - 0.03 < v[0] < 0.25 and abs(v[1]) < 1e-3
    assert np.linalg.norm(poses[1].linear_velocity) < 1e-3  # the ball was not touched
    # on the wire: WrenchStamped in the world frame, round trip
    out = msgs.rig_frame_messages(frames[2])
    wrench = [(t, m) for t, _mt, m, _s in out if t == msgs.APPLIED_WRENCH_TOPIC]
    assert len(wrench) == 2
    back = msgs.applied_wrench_from_msg(msgs.deserialize(msgs.serialize(wrench[0][1]), msgs.WRENCH_STAMPED))
    assert back.stamp_ns == on.stamp_ns
    np.testing.assert_allclose(back.force, on.force, rtol=1e-6)
    np.testing.assert_allclose(back.torque, on.torque, rtol=1e-6)


def test_wrench_line_point_and_rejects_other_frames():
    w = AppliedWrench(0, force=(2.0, 0.0, 0.0), torque=tuple(np.cross([0.3, 0.1, 0.02], [2.0, 0.0, 0.0])))
    np.testing.assert_allclose(w.line_point(), [0.0, 0.1, 0.02], atol=1e-12)
    assert AppliedWrench(0, (0.0, 0.0, 0.0)).line_point() is None
    m = msgs.wrench_stamped_msg(w, frame_id="base_link")
    from vidyn_ros.errors import VidynError

    with pytest.raises(VidynError, match="is not 'world'"):
        msgs.applied_wrench_from_msg(m)
