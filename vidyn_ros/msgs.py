"""numpy / dataclass <-> ROS 2 messages, without ROS.

Messages are *rosbags typestore* objects (``get_typestore(Stores.ROS2_KILTED)``) serialised to CDR bytes. Bags store
those bytes and nodes publish the very same bytes with rclpy (``publisher.publish(cdr)``; subscriptions with
``raw=True`` deliver bytes), so this module is the one conversion layer for bags, nodes and tests.

Message type names are the rosbags spelling: ``"sensor_msgs/msg/Image"``. Conventions (docs/ARCHITECTURE.md):
depth on the wire is 16UC1 millimetres (0 = no data), in the library float32 metres; quaternions are (w, x, y, z) in
the library and (x, y, z, w) in messages; camera frame ids are ``<cam>_color_optical_frame``.

Topic names (single source of truth, realsense-ros naming): :func:`color_topic`, :func:`depth_topic`,
:func:`info_topic`, :func:`mask_topic`, :func:`sim_mask_topic`, :data:`OBJECT_POSES_TOPIC`, :data:`CMD_TOPIC`,
:data:`CLOCK_TOPIC`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np

from vidyn_ros.errors import VidynError
from vidyn_ros.types import AppliedWrench, CameraFrame, CameraModel, MultiViewFrame, ObjectPose, RigFrame

__all__ = [
    "APPLIED_WRENCH_TOPIC",
    "CAMERA_INFO",
    "CLOCK",
    "CLOCK_TOPIC",
    "CMD_TOPIC",
    "DIAGNOSTICS_TOPIC",
    "DIAGNOSTIC_ARRAY",
    "IMAGE",
    "MARKER_ARRAY",
    "OBJECT_POSES_TOPIC",
    "PATH",
    "POINTCLOUD2",
    "POSE_ARRAY",
    "TF_MESSAGE",
    "TF_STATIC_TOPIC",
    "TWIST_STAMPED",
    "WORLD_FRAME",
    "WRENCH_STAMPED",
    "applied_wrench_from_msg",
    "calibration_pose",
    "camera_frame_id",
    "camera_from_info",
    "camera_info_msg",
    "camera_link_frame",
    "camera_name",
    "camera_names_from_topics",
    "camera_transforms",
    "clock_msg",
    "color_topic",
    "depth_from_msg",
    "depth_msg",
    "depth_topic",
    "deserialize",
    "diagnostic_array_msg",
    "header",
    "image_msg",
    "image_to_array",
    "info_topic",
    "marker",
    "marker_array_msg",
    "mask_from_msg",
    "mask_msg",
    "mask_topic",
    "multiview_from_messages",
    "ns_to_stamp",
    "object_poses_from_msg",
    "path_msg",
    "pointcloud2_msg",
    "pointcloud2_to_arrays",
    "pose_array_msg",
    "pose_from_msg",
    "pose_stamped_msg",
    "rig_frame_messages",
    "serialize",
    "sim_mask_topic",
    "stamp_to_ns",
    "tf_message",
    "transforms_from_tf_msg",
    "twist_from_msg",
    "twist_stamped_msg",
    "wrench_stamped_msg",
]

# --------------------------------------------------------------------------------------------------------------------
# Type store and (de)serialisation

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
POSE_ARRAY = "geometry_msgs/msg/PoseArray"
TWIST_STAMPED = "geometry_msgs/msg/TwistStamped"
WRENCH_STAMPED = "geometry_msgs/msg/WrenchStamped"
CLOCK = "rosgraph_msgs/msg/Clock"
DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
PATH = "nav_msgs/msg/Path"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"

OBJECT_POSES_TOPIC = "/vidyn/sim/object_poses"
PUSHER_POSE_TOPIC = "/vidyn/pusher/pose"  # the robot's own end-effector pose (proprioception), world frame
CMD_TOPIC = "/vidyn/cmd"
# A known external wrench of one actuator (actuation: a scenario's impulse events, a force-controlled poker): one
# WrenchStamped per change, held until the next one; frame "world", about the world origin (torque = p x force for a
# force applied at p, so the line of action is known). Makes mass identifiable (docs/physics.md).
APPLIED_WRENCH_TOPIC = "/vidyn/sim/applied_wrench"
CLOCK_TOPIC = "/clock"
DIAGNOSTICS_TOPIC = "/diagnostics"
TF_STATIC_TOPIC = "/tf_static"
WORLD_FRAME = "world"

# realsense-ros's <cam>_link (x forward, y left, z up) -> <cam>_color_optical_frame (x right, y down, z forward):
# the columns are the optical axes in link coordinates; quaternion (x, y, z, w) = (-0.5, 0.5, -0.5, 0.5).
R_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@cache
def _typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def __getattr__(name: str) -> Any:  # module-level lazy attribute: msgs.TYPESTORE
    if name == "TYPESTORE":
        return _typestore()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _t(msgtype: str) -> Any:
    """The typestore class for a message type name."""
    return _typestore().types[msgtype]


def serialize(msg: Any, msgtype: str | None = None) -> bytes:
    """Message -> CDR bytes (little endian, with the 4-byte encapsulation header rclpy expects)."""
    return bytes(_typestore().serialize_cdr(msg, msgtype or msg.__msgtype__))


def deserialize(raw: bytes | memoryview, msgtype: str) -> Any:
    """CDR bytes -> message. Raises VidynError (one line) for bytes that do not decode as ``msgtype``."""
    try:
        return _typestore().deserialize_cdr(raw, msgtype)
    except KeyError:
        raise VidynError(f"unknown message type {msgtype!r}") from None
    except Exception as err:  # rosbags raises assorted struct/index errors on short or foreign data
        raise VidynError(f"cannot decode {len(raw)} bytes as {msgtype}: {type(err).__name__}: {err}") from None


# --------------------------------------------------------------------------------------------------------------------
# Stamps and headers


def ns_to_stamp(ns: int) -> Any:
    """Nanoseconds since the epoch (or sim start) -> builtin_interfaces/Time."""
    ns = int(ns)
    return _t("builtin_interfaces/msg/Time")(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (or a Header) -> nanoseconds."""
    stamp = getattr(stamp, "stamp", stamp)
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header(stamp_ns: int, frame_id: str) -> Any:
    return _t("std_msgs/msg/Header")(stamp=ns_to_stamp(stamp_ns), frame_id=str(frame_id))


def _duration(seconds: float) -> Any:
    ns = round(float(seconds) * 1e9)
    return _t("builtin_interfaces/msg/Duration")(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# --------------------------------------------------------------------------------------------------------------------
# Topic names (realsense-ros layout)


def color_topic(cam: str) -> str:
    return f"/{cam}/color/image_raw"


def depth_topic(cam: str) -> str:
    return f"/{cam}/aligned_depth_to_color/image_raw"


def info_topic(cam: str) -> str:
    return f"/{cam}/color/camera_info"


def mask_topic(cam: str) -> str:
    """Instance masks from perception (the segmenter node, or an external one): what the scene consumes."""
    return f"/{cam}/mask"


def sim_mask_topic(cam: str) -> str:
    """The simulated rig's true instance masks: ground truth, for evaluation only (like OBJECT_POSES_TOPIC)."""
    return f"/vidyn/sim/{cam}/mask"


def camera_name(cam: str) -> str:
    """The name of a camera given by its topic prefix: ``cam0`` -> ``cam0``; realsense-ros's ``camera/camera``
    (namespace + camera name) -> ``camera``. Frame ids and rig calibration keys use it, as realsense-ros does."""
    return cam.strip("/").rsplit("/", 1)[-1]


def calibration_pose(calibration: Mapping[str, np.ndarray], cam: str) -> np.ndarray | None:
    """The camera-to-world pose of ``cam`` (a name or topic prefix) in a rig calibration: under its own key, else
    under its :func:`camera_name`; None when the calibration has neither."""
    return calibration[cam] if cam in calibration else calibration.get(camera_name(cam))


def camera_frame_id(cam: str) -> str:
    """``cam0`` -> ``cam0_color_optical_frame``; a camera named by its topic prefix takes its :func:`camera_name`."""
    return f"{camera_name(cam)}_color_optical_frame"


def camera_link_frame(cam: str) -> str:
    """The camera body frame (x forward, y left, z up) of realsense-ros: ``cam0`` -> ``cam0_link``."""
    return f"{camera_name(cam)}_link"


def camera_names_from_topics(topics: Iterable[str]) -> list[str]:
    """Camera names that have a color topic among ``topics`` (sorted): ``/cam0/color/image_raw`` -> ``cam0``."""
    suffix = "/color/image_raw"
    return sorted(t[1 : -len(suffix)] for t in topics if t.startswith("/") and t.endswith(suffix) and len(t) > 17)


# --------------------------------------------------------------------------------------------------------------------
# Images

# encoding -> (numpy dtype, channels)
_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "16SC1": (np.dtype(np.int16), 1),
    "32SC1": (np.dtype(np.int32), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "64FC1": (np.dtype(np.float64), 1),
}

_LITTLE = sys.byteorder == "little"


def _default_encoding(a: np.ndarray) -> str:
    if a.ndim == 3 and a.dtype == np.uint8 and a.shape[2] == 3:
        return "rgb8"
    if a.ndim == 3 and a.dtype == np.uint8 and a.shape[2] == 4:
        return "rgba8"
    if a.ndim == 2:
        by_dtype = {np.uint8: "mono8", np.uint16: "16UC1", np.int16: "16SC1", np.int32: "32SC1", np.float32: "32FC1",
                    np.float64: "64FC1"}
        for dt, enc in by_dtype.items():
            if a.dtype == dt:
                return enc
    raise VidynError(f"no image encoding for an array of shape {a.shape} and dtype {a.dtype}")


def image_msg(array: np.ndarray, stamp_ns: int, frame_id: str, encoding: str | None = None) -> Any:
    """numpy image -> sensor_msgs/Image.

    Args:
        array: HxWx3 uint8 (-> rgb8), HxWx4 uint8 (-> rgba8), HxW uint8 (-> mono8), HxW uint16 (-> 16UC1),
            HxW int32 (-> 32SC1), HxW float32 (-> 32FC1).
        encoding: override, e.g. "bgr8" for HxWx3 uint8 already in BGR order or "mono16" for uint16; must match the
            array's dtype and channel count.
    """
    a = np.asarray(array)
    enc = encoding or _default_encoding(a)
    if enc not in _ENCODINGS:
        raise VidynError(f"unsupported image encoding {enc!r} (supported: {', '.join(_ENCODINGS)})")
    dtype, ch = _ENCODINGS[enc]
    shape_ok = (a.ndim == 2 and ch == 1) or (a.ndim == 3 and a.shape[2] == ch)
    if a.dtype != dtype or not shape_ok:
        raise VidynError(f"image encoding {enc!r} needs {dtype} with {ch} channel(s), got {a.dtype} {a.shape}")
    h, w = a.shape[:2]
    # One contiguous copy, viewed as bytes: no per-element Python work (a 640x480 rgb8 image takes ~1 ms).
    data = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return _t(IMAGE)(
        header=header(stamp_ns, frame_id),
        height=h,
        width=w,
        encoding=enc,
        is_bigendian=0 if (_LITTLE or dtype.itemsize == 1) else 1,
        step=w * ch * dtype.itemsize,
        data=data,
    )


def _raw_image(msg: Any) -> np.ndarray:
    """The message's pixels in its own encoding: HxW or HxWxC array (a view where possible)."""
    enc = msg.encoding
    if enc not in _ENCODINGS:
        raise VidynError(f"unsupported image encoding {enc!r} (supported: {', '.join(_ENCODINGS)})")
    dtype, ch = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * ch * dtype.itemsize
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if step < row or data.size < step * h or (h > 0 and data.size != step * h):
        raise VidynError(
            f"image {w}x{h} encoding {enc!r}: step {step} / data size {data.size} do not fit (need step >= {row}, "
            f"data = step*height = {step * h})"
        )
    rows = data.reshape(h, step)[:, :row] if step != row else data
    rows = np.ascontiguousarray(rows)  # drops row padding; a no-op copy-free view when step == row
    dt = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    out = rows.view(dt).astype(dtype, copy=False)
    return out.reshape((h, w) if ch == 1 else (h, w, ch))


def image_to_array(msg: Any, expect: str | Sequence[str] | None = None) -> np.ndarray:
    """sensor_msgs/Image -> numpy array.

    Args:
        msg: a sensor_msgs/Image (typestore object).
        expect: None returns the pixels in the message's own encoding (HxW or HxWxC). "rgb8" converts
            rgb8/bgr8/rgba8/bgra8/mono8 to HxWx3 uint8 RGB; "16UC1" accepts 16UC1/mono16 -> HxW uint16; "mono8",
            "32FC1", "32SC1" accept exactly that encoding. A sequence of encodings accepts any of them unchanged.

    Raises VidynError naming the encoding when the message cannot be given in the expected form, or when its
    step/size are inconsistent.
    """
    enc = msg.encoding
    if expect is None:
        return _raw_image(msg)
    if not isinstance(expect, str):
        if enc not in expect:
            raise VidynError(f"image encoding {enc!r} not accepted here (expected one of {list(expect)})")
        return _raw_image(msg)
    if expect == "rgb8":
        if enc not in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC3"):
            raise VidynError(f"image encoding {enc!r} cannot be read as a color image (expected rgb8/bgr8/rgba8)")
        a = _raw_image(msg)
        if enc == "mono8":
            return np.repeat(a[:, :, None], 3, axis=2)
        if enc in ("bgr8", "bgra8"):
            return np.ascontiguousarray(a[:, :, 2::-1])
        return np.ascontiguousarray(a[:, :, :3])
    if expect in ("16UC1", "mono16"):
        if enc not in ("16UC1", "mono16"):
            raise VidynError(f"image encoding {enc!r} is not a 16-bit single-channel image (expected 16UC1)")
        return _raw_image(msg)
    if enc != expect:
        raise VidynError(f"image encoding {enc!r} not accepted here (expected {expect!r})")
    return _raw_image(msg)


def depth_msg(depth_m: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """HxW float depth [m] -> 16UC1 millimetres. Rounded to the nearest mm; NaN, inf, <= 0 and > 65.535 m -> 0."""
    d = np.asarray(depth_m, dtype=np.float32)
    if d.ndim != 2:
        raise VidynError(f"depth must be HxW, got shape {d.shape}")
    with np.errstate(invalid="ignore"):
        mm = np.rint(d * 1000.0)
        valid = np.isfinite(mm) & (mm > 0) & (mm <= 65535)
    return image_msg(np.where(valid, mm, 0).astype(np.uint16), stamp_ns, frame_id, "16UC1")


def depth_from_msg(msg: Any) -> np.ndarray:
    """16UC1/mono16 millimetres or 32FC1 metres -> HxW float32 metres, 0 = no data (NaN/inf/negative -> 0)."""
    if msg.encoding in ("16UC1", "mono16"):
        return _raw_image(msg).astype(np.float32) * np.float32(0.001)
    if msg.encoding == "32FC1":
        d = _raw_image(msg).astype(np.float32, copy=True)
        d[~np.isfinite(d) | (d < 0)] = 0.0
        return d
    raise VidynError(
        f"depth image encoding {msg.encoding!r} not supported (expected 16UC1 millimetres or 32FC1 metres)"
    )


def mask_msg(mask: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """HxW integer instance ids (0 = background) -> 16UC1 image. Ids must lie in 0..65535."""
    m = np.asarray(mask)
    if m.ndim != 2 or not np.issubdtype(m.dtype, np.integer):
        raise VidynError(f"mask must be an HxW integer array, got {m.dtype} {m.shape}")
    if m.size and (int(m.min()) < 0 or int(m.max()) > 65535):
        raise VidynError(f"mask ids must lie in 0..65535 for 16UC1, got {int(m.min())}..{int(m.max())}")
    return image_msg(m.astype(np.uint16, copy=False), stamp_ns, frame_id, "16UC1")


def mask_from_msg(msg: Any) -> np.ndarray:
    """16UC1 / mono16 / mono8 / 8UC1 / 32SC1 instance-id image -> HxW int32."""
    if msg.encoding not in ("16UC1", "mono16", "mono8", "8UC1", "32SC1"):
        raise VidynError(f"mask image encoding {msg.encoding!r} not supported (expected 16UC1, mono8 or 32SC1)")
    return _raw_image(msg).astype(np.int32)


# --------------------------------------------------------------------------------------------------------------------
# CameraInfo


def camera_info_msg(camera: CameraModel, stamp_ns: int) -> Any:
    """CameraModel -> sensor_msgs/CameraInfo: K, P = [K | 0], R = I, D and distortion model, width/height."""
    K = np.asarray(camera.K, dtype=np.float64).reshape(3, 3)
    P = np.zeros((3, 4))
    P[:, :3] = K
    roi = _t("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return _t(CAMERA_INFO)(
        header=header(stamp_ns, camera_frame_id(camera.name)),
        height=int(camera.height),
        width=int(camera.width),
        distortion_model=str(camera.distortion_model),
        d=np.asarray(camera.D, dtype=np.float64).reshape(-1).copy(),
        k=K.reshape(-1).copy(),
        r=np.eye(3).reshape(-1),
        p=P.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )


def camera_from_info(msg: Any, name: str, T_world_cam: np.ndarray | None = None) -> CameraModel:
    """sensor_msgs/CameraInfo -> CameraModel (pose from the rig calibration; identity when not given)."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise VidynError(f"camera_info for {name!r}: focal lengths must be positive, got K={K.reshape(-1).tolist()}")
    return CameraModel(
        name=name,
        width=int(msg.width),
        height=int(msg.height),
        K=K,
        T_world_cam=np.eye(4) if T_world_cam is None else np.asarray(T_world_cam, dtype=np.float64),
        distortion_model=str(msg.distortion_model or "plumb_bob"),
        D=np.asarray(msg.d, dtype=np.float64).copy(),
    )


# --------------------------------------------------------------------------------------------------------------------
# Geometry messages


def _pose(position: Sequence[float], quat_wxyz: Sequence[float]) -> Any:
    p = [float(v) for v in position]
    w, x, y, z = (float(v) for v in quat_wxyz)
    return _t("geometry_msgs/msg/Pose")(
        position=_t("geometry_msgs/msg/Point")(x=p[0], y=p[1], z=p[2]),
        orientation=_t("geometry_msgs/msg/Quaternion")(x=x, y=y, z=z, w=w),
    )


def _vec3(v: Sequence[float]) -> Any:
    a = [float(x) for x in v]
    return _t("geometry_msgs/msg/Vector3")(x=a[0], y=a[1], z=a[2])


def pose_array_msg(poses: Sequence[ObjectPose], stamp_ns: int, frame_id: str = "world") -> Any:
    """Object poses -> geometry_msgs/PoseArray where pose k belongs to object id k+1.

    Object ids missing from ``poses`` (gaps) are sent as a pose with NaN position, which
    :func:`object_poses_from_msg` skips. Velocities are not carried by PoseArray.
    """
    by_id = {int(p.object_id): p for p in poses}
    if any(i < 1 for i in by_id):
        raise VidynError(f"object ids must be >= 1 (0 is the background), got {sorted(by_id)}")
    n = max(by_id, default=0)
    out = []
    for k in range(1, n + 1):
        p = by_id.get(k)
        out.append(_pose(p.position, p.quat_wxyz) if p is not None else _pose([np.nan] * 3, [1.0, 0.0, 0.0, 0.0]))
    return _t(POSE_ARRAY)(header=header(stamp_ns, frame_id), poses=out)


def object_poses_from_msg(msg: Any) -> list[ObjectPose]:
    """geometry_msgs/PoseArray (pose k = object id k+1) -> ObjectPose list (NaN placeholders skipped)."""
    out = []
    for k, p in enumerate(msg.poses):
        pos = np.array([p.position.x, p.position.y, p.position.z])
        if not np.all(np.isfinite(pos)):
            continue
        q = p.orientation
        out.append(ObjectPose(object_id=k + 1, position=pos, quat_wxyz=np.array([q.w, q.x, q.y, q.z])))
    return out


def camera_transforms(name: str, T_world_cam: np.ndarray | None) -> list[tuple[str, str, np.ndarray]]:
    """The static transforms of one camera as realsense-ros names them: ``world -> <cam>_link`` (when the pose is
    known) and ``<cam>_link -> <cam>_color_optical_frame`` (the optical frame sits at the link's origin). Each as
    (parent frame, child frame, 4x4 child-to-parent pose). ``T_world_cam`` is the optical frame's camera-to-world."""
    T_link_optical = np.eye(4)
    T_link_optical[:3, :3] = R_LINK_OPTICAL
    link = camera_link_frame(name)
    out = []
    if T_world_cam is not None:
        T_world_link = np.asarray(T_world_cam, dtype=np.float64) @ np.linalg.inv(T_link_optical)
        out.append((WORLD_FRAME, link, T_world_link))
    out.append((link, camera_frame_id(name), T_link_optical))
    return out


def tf_message(transforms: Sequence[tuple[str, str, np.ndarray]], stamp_ns: int) -> Any:
    """tf2_msgs/TFMessage from (parent, child, 4x4 child-to-parent) triples (e.g. :func:`camera_transforms`)."""
    from vidyn_ros.geometry import matrix_to_quat_wxyz

    out = []
    for parent, child, T in transforms:
        T = np.asarray(T, dtype=np.float64)
        w, x, y, z = matrix_to_quat_wxyz(T[:3, :3])
        out.append(_t("geometry_msgs/msg/TransformStamped")(
            header=header(stamp_ns, parent), child_frame_id=child,
            transform=_t("geometry_msgs/msg/Transform")(
                translation=_vec3(T[:3, 3]),
                rotation=_t("geometry_msgs/msg/Quaternion")(x=float(x), y=float(y), z=float(z), w=float(w)))))
    return _t(TF_MESSAGE)(transforms=out)


def transforms_from_tf_msg(msg: Any) -> list[tuple[str, str, np.ndarray]]:
    """TFMessage -> (parent, child, 4x4 child-to-parent) triples (inverse of :func:`tf_message`)."""
    from vidyn_ros.geometry import make_se3, quat_wxyz_to_matrix

    out = []
    for ts in msg.transforms:
        q, t = ts.transform.rotation, ts.transform.translation
        R = quat_wxyz_to_matrix(np.array([q.w, q.x, q.y, q.z]))
        out.append((ts.header.frame_id, ts.child_frame_id, make_se3(R, np.array([t.x, t.y, t.z]))))
    return out


def clock_msg(stamp_ns: int) -> Any:
    return _t(CLOCK)(clock=ns_to_stamp(stamp_ns))


def twist_stamped_msg(
    linear: Sequence[float], angular: Sequence[float] = (0.0, 0.0, 0.0), stamp_ns: int = 0, frame_id: str = "world"
) -> Any:
    """Velocity command: linear [m/s] and angular [rad/s] 3-vectors -> geometry_msgs/TwistStamped."""
    twist = _t("geometry_msgs/msg/Twist")(linear=_vec3(linear), angular=_vec3(angular))
    return _t(TWIST_STAMPED)(header=header(stamp_ns, frame_id), twist=twist)


def wrench_stamped_msg(wrench: AppliedWrench, frame_id: str = "world") -> Any:
    """AppliedWrench (force [N], torque about the origin [N m], world axes) -> geometry_msgs/WrenchStamped."""
    w = _t("geometry_msgs/msg/Wrench")(force=_vec3(wrench.force), torque=_vec3(wrench.torque))
    return _t(WRENCH_STAMPED)(header=header(wrench.stamp_ns, frame_id), wrench=w)


def applied_wrench_from_msg(msg: Any) -> AppliedWrench:
    """geometry_msgs/WrenchStamped in the world frame -> AppliedWrench (VidynError for another frame)."""
    if str(msg.header.frame_id) not in ("world", ""):
        raise VidynError(f"applied wrench: frame_id {msg.header.frame_id!r} is not 'world'")
    f, t = msg.wrench.force, msg.wrench.torque
    return AppliedWrench(stamp_ns=stamp_to_ns(msg.header.stamp), force=(float(f.x), float(f.y), float(f.z)),
                         torque=(float(t.x), float(t.y), float(t.z)))


def twist_from_msg(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """geometry_msgs/TwistStamped (or Twist) -> (linear [3], angular [3])."""
    t = getattr(msg, "twist", msg)
    return (np.array([t.linear.x, t.linear.y, t.linear.z]), np.array([t.angular.x, t.angular.y, t.angular.z]))


def pose_stamped_msg(position: Sequence[float], quat_wxyz: Sequence[float], stamp_ns: int,
                     frame_id: str = "world") -> Any:
    """A pose [m] + quaternion (w, x, y, z) -> geometry_msgs/PoseStamped."""
    return _t(POSE_STAMPED)(header=header(stamp_ns, frame_id), pose=_pose(position, quat_wxyz))


def pose_from_msg(msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """geometry_msgs/PoseStamped (or Pose) -> (position [3], quaternion wxyz [4])."""
    p = getattr(msg, "pose", msg)
    q = p.orientation
    return (np.array([p.position.x, p.position.y, p.position.z]), np.array([q.w, q.x, q.y, q.z]))


def path_msg(
    positions: np.ndarray, stamp_ns: int, frame_id: str = "world", quats_wxyz: np.ndarray | None = None
) -> Any:
    """Nx3 positions [m] (and optional Nx4 orientations) -> nav_msgs/Path; all poses share the path's stamp."""
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    q = np.tile([1.0, 0.0, 0.0, 0.0], (len(pos), 1)) if quats_wxyz is None else np.asarray(quats_wxyz).reshape(-1, 4)
    hdr = header(stamp_ns, frame_id)
    PoseStamped = _t("geometry_msgs/msg/PoseStamped")
    poses = [PoseStamped(header=hdr, pose=_pose(p, qq)) for p, qq in zip(pos, q, strict=True)]
    return _t(PATH)(header=hdr, poses=poses)


# --------------------------------------------------------------------------------------------------------------------
# PointCloud2

# PointField datatype constants (sensor_msgs/PointField)
_PF_DTYPES = {
    1: np.int8, 2: np.uint8, 3: np.int16, 4: np.uint16, 5: np.int32, 6: np.uint32, 7: np.float32, 8: np.float64,
}
_PF_CODES = {np.dtype(v): k for k, v in _PF_DTYPES.items()}


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Nx3 uint8 -> N float32 whose bits are 0x00RRGGBB (the PCL/RViz convention for an "rgb" field)."""
    c = rgb.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def _unpack_rgb(packed: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(packed).view(np.uint32)
    return np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], axis=1).astype(np.uint8)


def pointcloud2_msg(fields: Mapping[str, np.ndarray], stamp_ns: int, frame_id: str = "world") -> Any:
    """Per-point arrays -> unordered (height 1) sensor_msgs/PointCloud2 with packed fields in the given order.

    Args:
        fields: name -> [N] array. float64 is stored as float32, bool/uint8/uint16 as uint32, int64/int16 as int32
            (RViz reads float32/uint32/int32). A field "rgb" given as [N, 3] uint8 is packed into one float32
            (0x00RRGGBB bits) as PCL and RViz expect. Typical: x, y, z, rgb, opacity, object_id.
    """
    cols: list[tuple[str, np.ndarray]] = []
    n = None
    for name, arr in fields.items():
        a = np.asarray(arr)
        if name == "rgb" and a.ndim == 2 and a.shape[1] == 3:
            a = _pack_rgb(np.clip(a, 0, 255).astype(np.uint8) if a.dtype != np.uint8 else a)
        if a.ndim != 1:
            raise VidynError(f"point cloud field {name!r} must be 1-D [N] (or [N,3] uint8 for 'rgb'), got {a.shape}")
        if a.dtype.kind == "f":
            a = a.astype(np.float32, copy=False)
        elif a.dtype.kind == "b" or a.dtype in (np.uint8, np.uint16, np.uint64):
            a = a.astype(np.uint32)
        elif a.dtype.kind in "iu":
            a = a.astype(np.int32 if a.dtype.kind == "i" else np.uint32, copy=False)
        else:
            raise VidynError(f"point cloud field {name!r}: unsupported dtype {a.dtype}")
        if n is None:
            n = len(a)
        elif len(a) != n:
            raise VidynError(f"point cloud field {name!r} has {len(a)} points, expected {n}")
        cols.append((name, a))
    n = n or 0
    rec = np.empty(n, dtype=[(name, a.dtype) for name, a in cols])
    for name, a in cols:
        rec[name] = a
    PointField = _t("sensor_msgs/msg/PointField")
    pfields = [
        PointField(name=name, offset=rec.dtype.fields[name][1], datatype=_PF_CODES[a.dtype], count=1)
        for name, a in cols
    ]
    return _t(POINTCLOUD2)(
        header=header(stamp_ns, frame_id),
        height=1,
        width=n,
        fields=pfields,
        is_bigendian=not _LITTLE,
        point_step=rec.dtype.itemsize,
        row_step=rec.dtype.itemsize * n,
        data=rec.reshape(-1).view(np.uint8) if n else np.zeros(0, np.uint8),
        is_dense=True,
    )


def pointcloud2_to_arrays(msg: Any, unpack_rgb: bool = True) -> dict[str, np.ndarray]:
    """sensor_msgs/PointCloud2 -> name -> [N] (or [N, count]) arrays; "rgb"/"rgba" float32 -> [N, 3] uint8."""
    n = int(msg.width) * int(msg.height)
    step = int(msg.point_step)
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if data.size < n * step:
        raise VidynError(f"point cloud data has {data.size} bytes, expected {n * step} ({n} points x {step})")
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in _PF_DTYPES:
            raise VidynError(f"point cloud field {f.name!r}: unknown PointField datatype {f.datatype}")
        dt = np.dtype(_PF_DTYPES[f.datatype]).newbyteorder(">" if msg.is_bigendian else "<")
        names.append(f.name)
        formats.append((dt, (f.count,)) if f.count > 1 else dt)
        offsets.append(f.offset)
    rec_t = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step})
    if msg.height > 1 and msg.row_step != msg.width * step:  # padded rows: gather row by row
        rows = data.reshape(msg.height, msg.row_step)[:, : msg.width * step]
        data = np.ascontiguousarray(rows).reshape(-1)
    rec = data[: n * step].view(rec_t)
    out = {}
    for name in names:
        col = rec[name]
        col = col.astype(col.dtype.newbyteorder("="))
        if unpack_rgb and name in ("rgb", "rgba") and col.dtype == np.float32 and col.ndim == 1:
            col = _unpack_rgb(col)
        out[name] = col
    return out


# --------------------------------------------------------------------------------------------------------------------
# Diagnostics, markers

_LEVELS = {"ok": 0, "warn": 1, "error": 2, "stale": 3}


def diagnostic_array_msg(statuses: Sequence[Mapping[str, Any]], stamp_ns: int) -> Any:
    """Statuses -> diagnostic_msgs/DiagnosticArray.

    Args:
        statuses: dicts with ``name``, ``level`` (0 OK, 1 WARN, 2 ERROR, 3 STALE, or "ok"/"warn"/...), ``message``,
            optional ``hardware_id`` and ``values`` (dict; values are turned into strings, floats with 4 significant
            digits).
    """
    KeyValue = _t("diagnostic_msgs/msg/KeyValue")
    Status = _t("diagnostic_msgs/msg/DiagnosticStatus")
    out = []
    for s in statuses:
        level = s.get("level", 0)
        level = _LEVELS[level.lower()] if isinstance(level, str) else int(level)
        values = [
            KeyValue(key=str(k), value=f"{v:.4g}" if isinstance(v, float) else str(v))
            for k, v in (s.get("values") or {}).items()
        ]
        out.append(
            Status(
                level=level,
                name=str(s.get("name", "")),
                message=str(s.get("message", "")),
                hardware_id=str(s.get("hardware_id", "")),
                values=values,
            )
        )
    return _t(DIAGNOSTIC_ARRAY)(header=header(stamp_ns, ""), status=out)


_MARKER_TYPES = {
    "arrow": 0, "cube": 1, "sphere": 2, "cylinder": 3, "line_strip": 4, "line_list": 5, "cube_list": 6,
    "sphere_list": 7, "points": 8, "text": 9, "text_view_facing": 9, "mesh": 10, "triangle_list": 11,
}


def _color(c: Sequence[float]) -> Any:
    c = [float(v) for v in c]
    if len(c) == 3:
        c.append(1.0)
    return _t("std_msgs/msg/ColorRGBA")(r=c[0], g=c[1], b=c[2], a=c[3])


def marker(
    kind: str,
    marker_id: int,
    stamp_ns: int = 0,
    frame_id: str = "world",
    ns: str = "vidyn",
    position: Sequence[float] = (0.0, 0.0, 0.0),
    quat_wxyz: Sequence[float] = (1.0, 0.0, 0.0, 0.0),
    scale: Sequence[float] | float = (0.05, 0.05, 0.05),
    color: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    text: str = "",
    points: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    lifetime_s: float = 0.0,
    action: str = "add",
) -> Any:
    """One visualization_msgs/Marker.

    Args:
        kind: "cube", "sphere", "cylinder", "arrow", "text", "line_strip", "line_list", "sphere_list", "cube_list",
            "points". For "text", ``scale`` z is the text height [m]; for lines ``scale`` x is the line width.
        points: [M, 3] for lines / lists / points; colors: [M, 3|4] per-point colors in [0, 1].
        action: "add", "delete" or "deleteall".
    """
    if kind not in _MARKER_TYPES:
        raise VidynError(f"unknown marker kind {kind!r} (known: {', '.join(_MARKER_TYPES)})")
    if np.isscalar(scale):
        scale = (float(scale),) * 3
    Point = _t("geometry_msgs/msg/Point")
    pts = [] if points is None else [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in np.asarray(points)]
    cols = [] if colors is None else [_color(c) for c in np.asarray(colors)]
    texture = _t("sensor_msgs/msg/CompressedImage")(header=header(0, ""), format="", data=np.zeros(0, np.uint8))
    mesh_file = _t("visualization_msgs/msg/MeshFile")(filename="", data=np.zeros(0, np.uint8))
    return _t("visualization_msgs/msg/Marker")(
        header=header(stamp_ns, frame_id),
        ns=ns,
        id=int(marker_id),
        type=_MARKER_TYPES[kind],
        action={"add": 0, "modify": 0, "delete": 2, "deleteall": 3}[action],
        pose=_pose(position, quat_wxyz),
        scale=_vec3(scale),
        color=_color(color),
        lifetime=_duration(lifetime_s),
        frame_locked=False,
        points=pts,
        colors=cols,
        texture_resource="",
        texture=texture,
        uv_coordinates=[],
        text=str(text),
        mesh_resource="",
        mesh_file=mesh_file,
        mesh_use_embedded_materials=False,
    )


def marker_array_msg(markers: Sequence[Any | Mapping[str, Any]], stamp_ns: int | None = None,
                     frame_id: str = "world") -> Any:
    """Markers (Marker objects, or dicts of :func:`marker` keyword arguments incl. ``kind`` and ``marker_id``)
    -> visualization_msgs/MarkerArray. ``stamp_ns``/``frame_id`` fill dicts that do not give their own."""
    out = []
    for m in markers:
        if isinstance(m, Mapping):
            kw = {"stamp_ns": stamp_ns or 0, "frame_id": frame_id, **m}
            m = marker(**kw)
        out.append(m)
    return _t(MARKER_ARRAY)(markers=out)


# --------------------------------------------------------------------------------------------------------------------
# Rig frames <-> message sets


def rig_frame_messages(rig_frame: RigFrame | MultiViewFrame, include_ground_truth: bool = True) -> list[
        tuple[str, str, Any, int]]:
    """One rig frame -> [(topic, msgtype, msg, stamp_ns)]: per camera color (rgb8), depth (16UC1 mm), camera_info,
    mask (16UC1, when present); plus the ground-truth PoseArray on OBJECT_POSES_TOPIC (RigFrame only, if
    ``include_ground_truth``) and the applied wrenches on APPLIED_WRENCH_TOPIC (RigFrame only; actuation).

    A RigFrame is the simulator's output: its masks are the true instance ids, ground truth like the poses, and go to
    :func:`sim_mask_topic` (perception's /<cam>/mask comes from the segmenter). A plain MultiViewFrame's masks are
    taken as perception's and go to :func:`mask_topic`."""
    frame = rig_frame.frame if isinstance(rig_frame, RigFrame) else rig_frame
    masks_to = sim_mask_topic if isinstance(rig_frame, RigFrame) else mask_topic
    out: list[tuple[str, str, Any, int]] = []
    for v in frame.views:
        cam = v.camera.name
        stamp = int(v.stamp_ns)
        fid = camera_frame_id(cam)
        out.append((color_topic(cam), IMAGE, image_msg(v.color, stamp, fid, "rgb8"), stamp))
        out.append((depth_topic(cam), IMAGE, depth_msg(v.depth, stamp, fid), stamp))
        out.append((info_topic(cam), CAMERA_INFO, camera_info_msg(v.camera, stamp), stamp))
        if v.mask is not None:
            out.append((masks_to(cam), IMAGE, mask_msg(v.mask, stamp, fid), stamp))
    if include_ground_truth and isinstance(rig_frame, RigFrame):
        stamp = int(frame.stamp_ns)
        out.append((OBJECT_POSES_TOPIC, POSE_ARRAY, pose_array_msg(rig_frame.object_poses, stamp), stamp))
    if isinstance(rig_frame, RigFrame):  # actuation, not ground truth: always
        for w in rig_frame.wrenches:
            out.append((APPLIED_WRENCH_TOPIC, WRENCH_STAMPED, wrench_stamped_msg(w), int(w.stamp_ns)))
    return out


def multiview_from_messages(
    messages: Mapping[str, Any],
    cameras: Sequence[str] | None = None,
    calibration: Mapping[str, np.ndarray] | None = None,
    stamp_ns: int | None = None,
    masks_from: Callable[[str], str] | None = None,
) -> MultiViewFrame:
    """Decoded messages of one instant, keyed by topic -> MultiViewFrame.

    Each camera needs color, depth and camera_info messages; the mask is optional (from ``masks_from(cam)``,
    default :func:`mask_topic`; :func:`sim_mask_topic` reads a simulated rig's true masks). Camera poses come from
    ``calibration`` (name -> 4x4 camera-to-world, see :func:`calibration_pose`; identity when absent). ``cameras``
    defaults to every camera with a color topic in ``messages``. Raises VidynError naming the missing topic.
    """
    names = list(cameras) if cameras is not None else camera_names_from_topics(messages)
    if not names:
        raise VidynError(f"no camera color topic among {sorted(messages)}")
    views = []
    for cam in names:
        for topic in (color_topic(cam), depth_topic(cam), info_topic(cam)):
            if topic not in messages:
                raise VidynError(f"camera {cam!r}: no message on {topic}")
        color_m = messages[color_topic(cam)]
        T = None if calibration is None else calibration_pose(calibration, cam)
        model = camera_from_info(messages[info_topic(cam)], cam, T)
        color = image_to_array(color_m, "rgb8")
        depth = depth_from_msg(messages[depth_topic(cam)])
        if depth.shape != color.shape[:2]:
            raise VidynError(f"camera {cam!r}: depth {depth.shape} and color {color.shape[:2]} sizes differ")
        mt = (masks_from or mask_topic)(cam)
        mask = mask_from_msg(messages[mt]) if mt in messages else None
        views.append(CameraFrame(camera=model, stamp_ns=stamp_to_ns(color_m.header), color=color, depth=depth,
                                 mask=mask))
    return MultiViewFrame(stamp_ns=views[0].stamp_ns if stamp_ns is None else int(stamp_ns), views=views)
