"""vidyn_ros.msgs: every conversion goes through real CDR bytes (serialize -> deserialize) and back to numpy."""

import subprocess
import sys

import numpy as np
import pytest

from vidyn_ros import msgs
from vidyn_ros.errors import VidynError
from vidyn_ros.types import CameraFrame, CameraModel, MultiViewFrame, ObjectPose, RigFrame

RNG = np.random.default_rng(7)


def wire(msg, msgtype):
    """Round trip through CDR, as a bag or DDS would carry it."""
    raw = msgs.serialize(msg, msgtype)
    assert isinstance(raw, bytes)
    return msgs.deserialize(raw, msgtype)


def test_stamps_roundtrip():
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_732_412_345_678_901_234):
        assert msgs.stamp_to_ns(msgs.ns_to_stamp(ns)) == ns
    h = wire(msgs.header(1_500_000_123, "cam0_color_optical_frame"), "std_msgs/msg/Header")
    assert (h.stamp.sec, h.stamp.nanosec, h.frame_id) == (1, 500_000_123, "cam0_color_optical_frame")
    assert msgs.stamp_to_ns(h) == 1_500_000_123


@pytest.mark.parametrize(
    ("array", "encoding"),
    [
        (RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8), "rgb8"),
        (RNG.integers(0, 256, (12, 16), dtype=np.uint8), "mono8"),
        (RNG.integers(0, 65536, (12, 16), dtype=np.uint16), "16UC1"),
        (RNG.standard_normal((12, 16)).astype(np.float32), "32FC1"),
        (RNG.integers(-5, 5, (12, 16), dtype=np.int32), "32SC1"),
        (RNG.integers(0, 256, (12, 16, 4), dtype=np.uint8), "rgba8"),
    ],
)
def test_image_roundtrip_default_encodings(array, encoding):
    m = wire(msgs.image_msg(array, 42, "f"), msgs.IMAGE)
    assert m.encoding == encoding
    assert (m.height, m.width) == array.shape[:2]
    assert m.step == array.shape[1] * array.itemsize * (array.shape[2] if array.ndim == 3 else 1)
    out = msgs.image_to_array(m)
    assert out.dtype == array.dtype and np.array_equal(out, array)


def test_color_conversions_to_rgb8():
    rgb = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    bgr = wire(msgs.image_msg(np.ascontiguousarray(rgb[:, :, ::-1]), 0, "f", "bgr8"), msgs.IMAGE)
    np.testing.assert_array_equal(msgs.image_to_array(bgr, "rgb8"), rgb)
    rgba = np.concatenate([rgb, np.full((6, 5, 1), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(msgs.image_to_array(wire(msgs.image_msg(rgba, 0, "f"), msgs.IMAGE), "rgb8"), rgb)
    mono = rgb[:, :, 0].copy()
    out = msgs.image_to_array(wire(msgs.image_msg(mono, 0, "f"), msgs.IMAGE), "rgb8")
    assert out.shape == (6, 5, 3) and np.array_equal(out[:, :, 2], mono)


def test_image_row_padding_and_big_endian():
    # A driver may pad rows (step > width * bytes per pixel) and send big-endian 16-bit data.
    a = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    m = msgs.image_msg(a, 0, "f", "mono16")
    padded = np.zeros((3, 10), np.uint8)
    padded[:, :8] = a.astype(">u2").view(np.uint8).reshape(3, 8)
    m.data, m.step, m.is_bigendian = padded.reshape(-1), 10, 1
    np.testing.assert_array_equal(msgs.image_to_array(wire(m, msgs.IMAGE), "16UC1"), a)


def test_wrong_encodings_raise_one_line_errors_naming_the_encoding():
    depth_as_color = msgs.image_msg(np.zeros((4, 4), np.uint16), 0, "f")
    with pytest.raises(VidynError, match="'16UC1'") as e:
        msgs.image_to_array(depth_as_color, "rgb8")
    assert "\n" not in str(e.value)
    color = msgs.image_msg(np.zeros((4, 4, 3), np.uint8), 0, "f")
    with pytest.raises(VidynError, match="'rgb8'"):
        msgs.depth_from_msg(color)
    with pytest.raises(VidynError, match="'rgb8'"):
        msgs.mask_from_msg(color)
    weird = msgs.image_msg(np.zeros((4, 4, 3), np.uint8), 0, "f")
    weird.encoding = "yuv422_yuy2"
    with pytest.raises(VidynError, match="'yuv422_yuy2'"):
        msgs.image_to_array(weird)
    short = msgs.image_msg(np.zeros((4, 4, 3), np.uint8), 0, "f")
    short.data = short.data[:-3]
    with pytest.raises(VidynError, match="step"):
        msgs.image_to_array(short)
    with pytest.raises(VidynError, match="'rgb8'"):  # encoding override that does not fit the array
        msgs.image_msg(np.zeros((4, 4), np.uint16), 0, "f", "rgb8")


def test_depth_millimetre_rounding_and_invalid_values():
    d = np.array([[0.0004, 0.0006, 1.2344, 1.2346], [np.nan, np.inf, -0.5, 0.0], [65.535, 65.5356, 70.0, 2.0]],
                 dtype=np.float32)
    m = wire(msgs.depth_msg(d, 5, "cam0_color_optical_frame"), msgs.IMAGE)
    assert m.encoding == "16UC1"
    mm = msgs.image_to_array(m)
    np.testing.assert_array_equal(mm, [[0, 1, 1234, 1235], [0, 0, 0, 0], [65535, 0, 0, 2000]])
    back = msgs.depth_from_msg(m)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, mm / 1000.0, atol=1e-7)
    # 32FC1 metres accepted too; NaN -> 0 (library convention: 0 = no data)
    f = wire(msgs.image_msg(np.array([[1.5, np.nan]], np.float32), 0, "f"), msgs.IMAGE)
    np.testing.assert_array_equal(msgs.depth_from_msg(f), [[1.5, 0.0]])


def test_mask_roundtrip_and_accepted_encodings():
    mask = RNG.integers(0, 7, (10, 12)).astype(np.int32)
    m = wire(msgs.mask_msg(mask, 0, "f"), msgs.IMAGE)
    assert m.encoding == "16UC1"
    out = msgs.mask_from_msg(m)
    assert out.dtype == np.int32 and np.array_equal(out, mask)
    np.testing.assert_array_equal(msgs.mask_from_msg(msgs.image_msg(mask.astype(np.uint8), 0, "f")), mask)
    np.testing.assert_array_equal(msgs.mask_from_msg(msgs.image_msg(mask, 0, "f")), mask)  # 32SC1
    with pytest.raises(VidynError, match="65535"):
        msgs.mask_msg(np.array([[70000]]), 0, "f")


def test_camera_info_roundtrip():
    K = np.array([[615.2, 0.0, 321.4], [0.0, 614.9, 239.1], [0.0, 0.0, 1.0]])
    T = np.eye(4)
    T[:3, 3] = [0.1, -0.2, 0.9]
    D = np.array([0.1, -0.05, 0.001, 0.002, 0.0])
    cam = CameraModel("cam1", 640, 480, K, T, "plumb_bob", D)
    m = wire(msgs.camera_info_msg(cam, 77), msgs.CAMERA_INFO)
    assert m.header.frame_id == "cam1_color_optical_frame" and msgs.stamp_to_ns(m.header) == 77
    P = np.asarray(m.p).reshape(3, 4)
    np.testing.assert_allclose(P[:, :3], K)
    np.testing.assert_allclose(P[:, 3], 0.0)
    np.testing.assert_allclose(np.asarray(m.r).reshape(3, 3), np.eye(3))
    back = msgs.camera_from_info(m, "cam1", T)
    assert (back.width, back.height, back.distortion_model, back.name) == (640, 480, "plumb_bob", "cam1")
    np.testing.assert_allclose(back.K, K)
    np.testing.assert_allclose(back.D, D)
    np.testing.assert_allclose(back.T_world_cam, T)
    np.testing.assert_allclose(msgs.camera_from_info(m, "cam1").T_world_cam, np.eye(4))


def test_pointcloud2_with_rgb_packing():
    n = 50
    xyz = RNG.standard_normal((n, 3)).astype(np.float32)
    rgb = RNG.integers(0, 256, (n, 3), dtype=np.uint8)
    oid = RNG.integers(0, 4, n)
    m = wire(
        msgs.pointcloud2_msg({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "rgb": rgb, "opacity": np.ones(n),
                              "object_id": oid}, 9, "world"),
        msgs.POINTCLOUD2,
    )
    assert [f.name for f in m.fields] == ["x", "y", "z", "rgb", "opacity", "object_id"]
    assert [f.offset for f in m.fields] == [0, 4, 8, 12, 16, 20] and m.point_step == 24 and m.width == n
    assert [f.datatype for f in m.fields] == [7, 7, 7, 7, 7, 5]  # FLOAT32 x5, INT32
    # The rgb float's bits are 0x00RRGGBB, as PCL / RViz decode them.
    raw = np.asarray(m.data).reshape(n, 24)[:, 12:16].copy().view("<u4").reshape(n)
    np.testing.assert_array_equal(raw >> 16, rgb[:, 0])
    np.testing.assert_array_equal(raw & 255, rgb[:, 2])
    out = msgs.pointcloud2_to_arrays(m)
    np.testing.assert_array_equal(out["x"], xyz[:, 0])
    np.testing.assert_array_equal(out["rgb"], rgb)
    np.testing.assert_array_equal(out["object_id"], oid)
    assert out["object_id"].dtype == np.int32
    with pytest.raises(VidynError, match="'y'"):
        msgs.pointcloud2_msg({"x": np.zeros(3), "y": np.zeros(4)}, 0)


def test_pose_array_roundtrip_with_gap():
    poses = [ObjectPose(1, np.array([0.1, 0.2, 0.03]), np.array([0.9238795, 0, 0, 0.3826834])),
             ObjectPose(3, np.array([-0.1, 0.0, 0.05]), np.array([1.0, 0, 0, 0]))]
    m = wire(msgs.pose_array_msg(poses, 11), msgs.POSE_ARRAY)
    assert m.header.frame_id == "world" and len(m.poses) == 3
    assert m.poses[0].orientation.w == pytest.approx(0.9238795) and m.poses[0].orientation.z == pytest.approx(0.3826834)
    back = msgs.object_poses_from_msg(m)
    assert [p.object_id for p in back] == [1, 3]
    np.testing.assert_allclose(back[0].position, poses[0].position)
    np.testing.assert_allclose(back[0].quat_wxyz, poses[0].quat_wxyz)


def test_twist_clock_path_diagnostics_markers():
    lin, ang = msgs.twist_from_msg(wire(msgs.twist_stamped_msg([0.05, -0.02, 0.0], [0, 0, 0.3], 5), msgs.TWIST_STAMPED))
    np.testing.assert_allclose(lin, [0.05, -0.02, 0.0])
    np.testing.assert_allclose(ang, [0, 0, 0.3])
    assert msgs.stamp_to_ns(wire(msgs.clock_msg(3_000_000_001), msgs.CLOCK).clock) == 3_000_000_001
    path = wire(msgs.path_msg(np.arange(12.0).reshape(4, 3), 8), msgs.PATH)
    assert len(path.poses) == 4 and path.poses[3].pose.position.z == 11.0
    diag = wire(msgs.diagnostic_array_msg(
        [{"name": "scene", "level": "warn", "message": "slow", "values": {"fps": 3.14159, "n": 5}}], 1),
        msgs.DIAGNOSTIC_ARRAY)
    st = diag.status[0]
    assert (st.level, st.name, st.message) == (1, "scene", "slow")
    assert {kv.key: kv.value for kv in st.values} == {"fps": "3.142", "n": "5"}
    ma = wire(msgs.marker_array_msg([
        {"kind": "cube", "marker_id": 1, "position": (1, 2, 3), "scale": (0.1, 0.2, 0.3), "color": (1, 0, 0)},
        {"kind": "text", "marker_id": 2, "text": "id 1"},
        {"kind": "line_strip", "marker_id": 3, "points": np.zeros((5, 3)), "scale": 0.01},
    ], 4), msgs.MARKER_ARRAY)
    assert [mk.type for mk in ma.markers] == [1, 9, 4]
    assert ma.markers[0].pose.position.z == 3.0 and ma.markers[0].color.a == 1.0
    assert ma.markers[1].text == "id 1" and len(ma.markers[2].points) == 5
    with pytest.raises(VidynError, match="'blob'"):
        msgs.marker("blob", 1)


def _rig_frame(stamp=1_000_000_000):
    cams = [CameraModel(f"cam{i}", 8, 6, np.array([[10.0, 0, 3.5], [0, 10.0, 2.5], [0, 0, 1]])) for i in range(2)]
    views = [CameraFrame(c, stamp, RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8),
                         RNG.uniform(0.3, 2.0, (6, 8)).astype(np.float32), RNG.integers(0, 3, (6, 8)).astype(np.int32))
             for c in cams]
    return RigFrame(MultiViewFrame(stamp, views), [ObjectPose(1, np.array([0.0, 0.0, 0.02]), np.array([1.0, 0, 0, 0]))])


def test_rig_frame_messages_and_multiview_roundtrip():
    rf = _rig_frame()
    items = msgs.rig_frame_messages(rf)
    topics = [t for t, *_ in items]
    # a RigFrame is the simulator's output: its masks are ground truth, on /vidyn/sim/<cam>/mask like the poses
    assert topics == ["/cam0/color/image_raw", "/cam0/aligned_depth_to_color/image_raw", "/cam0/color/camera_info",
                      "/vidyn/sim/cam0/mask", "/cam1/color/image_raw", "/cam1/aligned_depth_to_color/image_raw",
                      "/cam1/color/camera_info", "/vidyn/sim/cam1/mask", msgs.OBJECT_POSES_TOPIC]
    # a plain MultiViewFrame's masks are perception's: /<cam>/mask
    assert [t for t, *_ in msgs.rig_frame_messages(rf.frame) if t.endswith("mask")] == ["/cam0/mask", "/cam1/mask"]
    assert all(s == rf.frame.stamp_ns for *_, s in items)
    assert items[0][2].header.frame_id == "cam0_color_optical_frame"
    decoded = {t: wire(m, mt) for t, mt, m, _ in items}
    assert all(v.mask is None for v in msgs.multiview_from_messages(decoded).views)  # no perception masks
    mv = msgs.multiview_from_messages(decoded, masks_from=msgs.sim_mask_topic)
    assert [v.camera.name for v in mv.views] == ["cam0", "cam1"] and mv.stamp_ns == rf.frame.stamp_ns
    for a, b in zip(rf.frame.views, mv.views, strict=True):
        np.testing.assert_array_equal(a.color, b.color)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_allclose(a.depth, b.depth, atol=0.0005 + 1e-6)  # millimetre quantisation
    del decoded["/cam1/aligned_depth_to_color/image_raw"]
    with pytest.raises(VidynError, match="/cam1/aligned_depth_to_color/image_raw"):
        msgs.multiview_from_messages(decoded)
    assert len(msgs.rig_frame_messages(rf, include_ground_truth=False)) == 8


def test_msgs_does_not_import_rclpy():
    code = "import vidyn_ros.msgs as m, sys; m.serialize(m.clock_msg(1)); print('rclpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_cdr_bytes_are_what_rclpy_reads_and_writes():
    """The nodes publish these bytes through rclpy: its own (de)serialiser must agree with ours, both ways."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseArray, TwistStamped
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from visualization_msgs.msg import MarkerArray

    rgb = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    img = deserialize_message(msgs.serialize(msgs.image_msg(rgb, 1_000_000_007, "cam0_color_optical_frame")), Image)
    assert (img.encoding, img.height, img.width, img.step) == ("rgb8", 3, 4, 12)
    assert bytes(img.data) == rgb.tobytes() and img.header.stamp.nanosec == 7 and img.header.stamp.sec == 1
    cam = CameraModel("cam0", 4, 3, np.array([[5.0, 0, 1.5], [0, 6.0, 1.0], [0, 0, 1]]))
    info = deserialize_message(msgs.serialize(msgs.camera_info_msg(cam, 0)), CameraInfo)
    assert list(info.k) == [5.0, 0, 1.5, 0, 6.0, 1.0, 0, 0, 1] and info.distortion_model == "plumb_bob"
    pc = deserialize_message(msgs.serialize(msgs.pointcloud2_msg(
        {"x": np.array([1.0, 2.0]), "object_id": np.array([3, 4])}, 0)), PointCloud2)
    assert [f.name for f in pc.fields] == ["x", "object_id"] and pc.point_step == 8 and pc.width == 2
    pa = deserialize_message(msgs.serialize(msgs.pose_array_msg(
        [ObjectPose(1, np.array([0.1, 0.2, 0.3]), np.array([0.0, 1.0, 0.0, 0.0]))], 0)), PoseArray)
    assert pa.poses[0].position.y == 0.2 and pa.poses[0].orientation.x == 1.0
    tw = deserialize_message(msgs.serialize(msgs.twist_stamped_msg([0.1, 0, 0], [0, 0, 0.5], 3)), TwistStamped)
    assert tw.twist.linear.x == 0.1 and tw.twist.angular.z == 0.5
    ma = deserialize_message(msgs.serialize(msgs.marker_array_msg(
        [{"kind": "text", "marker_id": 2, "text": "obj 2"}, {"kind": "line_strip", "marker_id": 3,
                                                           "points": np.ones((2, 3))}], 0)), MarkerArray)
    assert ma.markers[0].text == "obj 2" and len(ma.markers[1].points) == 2
    da = deserialize_message(msgs.serialize(msgs.diagnostic_array_msg(
        [{"name": "n", "level": 2, "message": "m", "values": {"k": "v"}}], 0)), DiagnosticArray)
    assert da.status[0].level == b"\x02" and da.status[0].values[0].value == "v"
    # and the other way: a message built by rclpy (as a realsense driver publishes it) decodes here
    r = Image(encoding="bgr8", height=1, width=2, step=6, data=[1, 2, 3, 4, 5, 6])
    out = msgs.image_to_array(msgs.deserialize(serialize_message(r), msgs.IMAGE), "rgb8")
    np.testing.assert_array_equal(out, [[[3, 2, 1], [6, 5, 4]]])
