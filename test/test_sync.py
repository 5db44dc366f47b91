"""Multi-view synchroniser: approximate-time grouping under jitter, reordering, duplicates and drops."""

import numpy as np
import pytest

from vidyn_ros.rig.sync import MultiViewSynchronizer, camera_topics, topic_part
from vidyn_ros.types import CameraModel

CAMS = ["cam0", "cam1", "cam2"]
PERIOD = 33_333_333  # 30 Hz
K = np.array([[100.0, 0, 15.5], [0, 100.0, 11.5], [0, 0, 1]])


def _model(name):
    return CameraModel(name=name, width=32, height=24, K=K)


def _parts(cam_idx, frame):
    """Content that encodes (camera, frame) so a test can check that parts were not mixed up."""
    color = np.full((24, 32, 3), frame % 250, np.uint8)
    color[0, 0] = cam_idx
    depth = np.full((24, 32), 1.0 + 0.01 * frame + 0.1 * cam_idx, np.float32)
    mask = np.full((24, 32), cam_idx + 1, np.int32)
    return {"color": color, "depth": depth, "mask": mask}


def _messages(n_frames, jitter_ns=0, seed=0, with_mask=False):
    """(camera, part, stamp, data, frame) for n frames of 3 cameras; each camera's stamp jitters around k*PERIOD."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_frames):
        for ci, cam in enumerate(CAMS):
            stamp = k * PERIOD + int(rng.integers(-jitter_ns, jitter_ns + 1)) if jitter_ns else k * PERIOD
            for part, data in _parts(ci, k).items():
                if part == "mask" and not with_mask:
                    continue
                out.append((cam, part, stamp, data, k))
    return out


def _sync(**kw):
    s = MultiViewSynchronizer(CAMS, **kw)
    for c in CAMS:
        s.add(c, "info", 0, _model(c))
    return s


def _check_frame(mv, k):
    assert [v.camera.name for v in mv.views] == CAMS
    for ci, v in enumerate(mv.views):
        assert v.color[0, 0, 0] == ci and v.color[1, 1, 0] == k % 250, "parts of different cameras/frames mixed"
        assert v.depth[0, 0] == pytest.approx(1.0 + 0.01 * k + 0.1 * ci)


def test_in_order_with_jitter_groups_every_frame():
    s = _sync(slop_ns=10_000_000)
    frames = []
    for cam, part, stamp, data, _ in _messages(20, jitter_ns=4_000_000):
        frames += s.add(cam, part, stamp, data)
    assert len(frames) == 20 and s.stats.emitted == 20
    for k, mv in enumerate(frames):
        _check_frame(mv, k)
        assert max(v.stamp_ns for v in mv.views) - min(v.stamp_ns for v in mv.views) <= 10_000_000
    assert s.stats.dropped_incomplete == s.stats.dropped_unmatched == s.stats.duplicates == 0


def test_jitter_beyond_slop_drops_sets_instead_of_mixing():
    s = _sync(slop_ns=2_000_000)
    msgs = _messages(10)
    # cam2's frame 4 is 12 ms late: outside the 2 ms slop, so frame 4 cannot form a set.
    msgs = [(c, p, st + (12_000_000 if (c == "cam2" and k == 4) else 0), d, k) for c, p, st, d, k in msgs]
    frames = []
    for cam, part, stamp, data, _ in msgs:
        frames += s.add(cam, part, stamp, data)
    frames += s.flush()
    ks = [round(f.stamp_ns / PERIOD) for f in frames]
    assert ks == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    for f in frames:
        _check_frame(f, round(f.stamp_ns / PERIOD))
    assert s.stats.dropped_unmatched == 3  # the three cameras' frame-4 views


def test_reordered_messages_within_latency_window():
    rng = np.random.default_rng(1)
    msgs = _messages(30, jitter_ns=3_000_000, seed=2)
    # Shuffle inside blocks of 9 messages (= one frame of 3 cameras x 3 parts would be one block; use ~1.5 frames).
    shuffled = []
    for i in range(0, len(msgs), 9):
        block = msgs[i : i + 9]
        shuffled += [block[j] for j in rng.permutation(len(block))]
    assert shuffled != msgs
    s = _sync(slop_ns=10_000_000, latency_ns=2 * PERIOD)
    frames = []
    for cam, part, stamp, data, _ in shuffled:
        frames += s.add(cam, part, stamp, data)
    frames += s.flush()
    assert len(frames) == 30
    for k, f in enumerate(frames):
        _check_frame(f, k)
    assert s.stats.late == 0


def test_whole_frame_reordering_without_latency_counts_late():
    msgs = _messages(6)
    # Move all of frame 2 after frame 3: with latency 0 the synchroniser has already moved on.
    f2 = [m for m in msgs if m[4] == 2]
    rest = [m for m in msgs if m[4] != 2]
    idx = max(i for i, m in enumerate(rest) if m[4] == 3) + 1
    order = rest[:idx] + f2 + rest[idx:]
    s = _sync(slop_ns=5_000_000)
    frames = []
    for cam, part, stamp, data, _ in order:
        frames += s.add(cam, part, stamp, data)
    assert [round(f.stamp_ns / PERIOD) for f in frames] == [0, 1, 3, 4, 5]
    assert s.stats.late == 6  # 3 cameras x (color, depth) of frame 2


def test_duplicates_are_ignored_and_counted():
    s = _sync(slop_ns=5_000_000)
    frames = []
    for m in _messages(5):
        cam, part, stamp, data, k = m
        frames += s.add(cam, part, stamp, data)
        if cam == "cam1" and part == "color":
            # A duplicate with different content must not replace the first copy.
            frames += s.add(cam, part, stamp, np.zeros_like(data))
    # Re-send an already emitted message.
    frames += s.add("cam0", "depth", 4 * PERIOD, np.zeros((24, 32), np.float32))
    assert len(frames) == 5
    for k, f in enumerate(frames):
        _check_frame(f, k)
    assert s.stats.duplicates == 6


def test_dropped_messages_give_incomplete_sets_that_are_dropped_and_counted():
    rng = np.random.default_rng(3)
    msgs = _messages(40, jitter_ns=2_000_000, seed=3, with_mask=False)
    keep = rng.random(len(msgs)) > 0.05  # lose 5% of the messages
    lost_frames = {m[4] for m, kept in zip(msgs, keep, strict=True) if not kept}
    s = _sync(slop_ns=8_000_000)
    frames = []
    for m, kept in zip(msgs, keep, strict=True):
        if kept:
            frames += s.add(*m[:4])
    frames += s.flush()
    got = [round(f.stamp_ns / PERIOD) for f in frames]
    assert got == sorted(set(range(40)) - lost_frames)
    for f in frames:
        _check_frame(f, round(f.stamp_ns / PERIOD))
    assert 0 < len(lost_frames) < 40
    # Every lost frame's surviving parts were dropped as incomplete views or unmatched complete views.
    assert s.stats.dropped_incomplete + s.stats.dropped_unmatched >= len(lost_frames)


def test_mask_required_and_optional():
    msgs = _messages(3, with_mask=True)
    s = _sync(slop_ns=1_000_000, require_mask=True)
    frames = []
    for m in msgs:
        if not (m[0] == "cam0" and m[1] == "mask" and m[4] == 1):
            frames += s.add(*m[:4])
    frames += s.flush()
    assert [round(f.stamp_ns / PERIOD) for f in frames] == [0, 2]
    assert all(v.mask is not None and v.mask.dtype == np.int32 for f in frames for v in f.views)
    s2 = _sync(slop_ns=1_000_000)  # masks optional: sets go out on color+depth
    frames2 = []
    for m in _messages(3, with_mask=False):
        frames2 += s2.add(*m[:4])
    assert len(frames2) == 3 and all(v.mask is None for v in frames2[0].views)


def test_sets_wait_for_camera_info_and_pose_comes_from_calibration():
    T = np.eye(4)
    T[:3, 3] = [0.1, 0.2, 0.3]
    s = MultiViewSynchronizer(CAMS, slop_ns=1_000_000, poses={"cam1": T})
    out = []
    for m in _messages(2):
        out += s.add(*m[:4])
    assert out == [] and s.stats.no_info >= 1
    for c in CAMS:
        out += s.add(c, "info", 0, _model(c))
    assert len(out) == 2  # the held-back frames 0 and 1 go out as soon as the last CameraInfo arrives
    for m in _messages(4)[12:]:  # frames 2 and 3 (3 cameras x 2 parts each)
        out += s.add(*m[:4])
    assert len(out) == 4
    np.testing.assert_allclose(out[0].view("cam1").camera.T_world_cam, T)
    t = out[0].to_torch()
    assert tuple(t["color"].shape) == (3, 24, 32, 3) and float(t["color"].max()) <= 1.0


def test_bounded_queue_when_a_camera_is_silent():
    s = _sync(slop_ns=1_000_000, queue_size=5)
    for m in _messages(50):
        if m[0] != "cam2":
            assert s.add(*m[:4]) == []
    assert s.stats.overflow >= 2 * 45
    assert all(len(s._ready[c]) <= 5 for c in CAMS)


def test_topic_helpers():
    assert topic_part("/cam3/aligned_depth_to_color/image_raw") == ("cam3", "depth")
    assert topic_part("/cam0/color/camera_info") == ("cam0", "info")
    assert topic_part("/vidyn/cmd") is None
    assert camera_topics("cam1", with_mask=True)["mask"] == "/cam1/mask"


def _offset_stream(n_frames, offsets_ns, jitter_ns=1_500_000, seed=3):
    """realsense-ros with enable_sync off: each camera's depth runs at the color rate but on its own clock, offset
    from the color stamps by up to a frame. Depth content encodes its own depth frame index; (cam, part, stamp, data)
    in stamp order, plus each camera's depth stamps."""
    rng = np.random.default_rng(seed)
    out, depth_stamps = [], {c: [] for c in CAMS}
    for k in range(n_frames):
        for ci, cam in enumerate(CAMS):
            parts = _parts(ci, k)
            c_stamp = k * PERIOD + 10 * PERIOD
            d_stamp = c_stamp + offsets_ns[ci] + int(rng.integers(-jitter_ns, jitter_ns + 1))
            depth_stamps[cam].append(d_stamp)
            out.append((cam, "color", c_stamp, parts["color"]))
            out.append((cam, "depth", d_stamp, np.full((24, 32), float(k), np.float32)))
    out.sort(key=lambda m: m[2])
    return out, depth_stamps


@pytest.mark.parametrize("offsets_ms", [(14, -14, 0), (25, -30, 5)])
def test_depth_stamped_apart_from_color_pairs_the_nearest_depth(offsets_ms):
    offsets = [int(o * 1e6) for o in offsets_ms]
    stream, depth_stamps = _offset_stream(12, offsets)
    exact = _sync(slop_ns=2_000_000)  # identical stamps only (enable_sync on): nothing pairs
    assert sum(len(exact.add(*m)) for m in stream) == 0
    s = _sync(slop_ns=2_000_000, depth_slop_ns=PERIOD + 3_000_000)
    frames = []
    for m in stream:
        frames += s.add(*m)
    frames += s.flush()
    # every color frame goes out (the first one may lack a depth image before it when depth lags by most of a frame)
    assert len(frames) >= 11 and s.stats.emitted == len(frames)
    for mv in frames:
        k = round(mv.stamp_ns / PERIOD) - 10
        for ci, v in enumerate(mv.views):
            assert v.color[0, 0, 0] == ci and v.color[1, 1, 0] == k % 250  # colors of one frame, not mixed
            d_stamp = depth_stamps[CAMS[ci]][int(v.depth[0, 0])]
            nearest = min(depth_stamps[CAMS[ci]], key=lambda d: abs(d - v.stamp_ns))
            assert d_stamp == nearest and abs(d_stamp - v.stamp_ns) <= PERIOD + 3_000_000
    assert 0 < s.stats.last_depth_offset_ns <= max(abs(o) for o in offsets) + 1_500_000 + PERIOD


def test_exact_depth_stamp_wins_over_a_nearer_slop_match():
    s = _sync(slop_ns=1_000_000, depth_slop_ns=PERIOD)
    out = []
    for m in _messages(5):  # identical color/depth stamps, with a generous depth slop: pairs exactly as before
        out += s.add(*m[:4])
    assert len(out) == 5
    for k, mv in enumerate(out):
        _check_frame(mv, k)
    assert s.stats.last_depth_offset_ns == 0 and s.stats.dropped_incomplete == 0


@pytest.mark.parametrize("layout", ["flat", "namespaced"])
def test_topic_synchronizer_realsense_ros_layouts(layout):
    """/cam0/color/image_raw (vidyn, older realsense-ros) and /camera/camera/color/image_raw (realsense-ros >= 4.51:
    namespace + camera name); colour and depth stamped up to a frame apart (enable_sync off)."""
    from vidyn_ros import msgs
    from vidyn_ros.rig.sync import TopicSynchronizer

    cams = ["cam0", "cam1"] if layout == "flat" else ["camera/camera", "rig2/cam1"]
    sync = TopicSynchronizer(cams, slop_ns=2_000_000, depth_slop_ns=PERIOD)
    assert set(sync.topics()) == {f"/{c}/{s}" for c in cams for s in
                                  ("color/image_raw", "aligned_depth_to_color/image_raw", "color/camera_info")}
    out = []
    for k in range(4):
        for ci, cam in enumerate(cams):
            t = (k + 1) * PERIOD
            frame_id = msgs.camera_frame_id(cam)
            model = CameraModel(name=cam, width=32, height=24, K=K)
            items = [(f"/{cam}/color/camera_info", msgs.CAMERA_INFO, msgs.camera_info_msg(model, t)),
                     (f"/{cam}/color/image_raw", msgs.IMAGE, msgs.image_msg(_parts(ci, k)["color"], t, frame_id)),
                     (f"/{cam}/aligned_depth_to_color/image_raw", msgs.IMAGE,
                      msgs.depth_msg(_parts(ci, k)["depth"], t + (11_000_000, -13_000_000)[ci], frame_id))]
            for topic, mt, m in items:
                out += sync.add_message(topic, mt, msgs.serialize(m, mt))
    out += sync.sync.flush()
    assert len(out) == 4
    for k, mv in enumerate(out):
        assert [v.camera.name for v in mv.views] == cams
        for ci, v in enumerate(mv.views):
            assert v.color[1, 1, 0] == k and v.depth[0, 0] == pytest.approx(1.0 + 0.01 * k + 0.1 * ci, abs=1e-3)
    assert sync.add_message("/camera/color/image_raw", msgs.IMAGE, b"") == []  # not one of its topics: ignored
