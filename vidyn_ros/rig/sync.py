"""Multi-view synchroniser: N cameras' color / depth / mask / CameraInfo -> one MultiViewFrame per timestep.

message_filters (ApproximateTime) is not installable from PyPI, so this is a small ROS-free equivalent tailored to
RGB-D rigs. Two stages:

1. **Per camera**, the parts of one capture form a *view* keyed by its color stamp. A mask carries the color stamp
   (the segmenter and the simulated rig stamp it so). Aligned depth carries the color stamp when the driver
   synchronises the two streams (the simulated rig; realsense-ros with ``enable_sync: true``); with ``enable_sync``
   off, realsense-ros stamps depth with its own sensor time, up to a frame away from the color. ``depth_slop_ns``
   allows that: each color is paired with the depth image nearest in time within the slop, decided once a depth at
   or after the color stamp has arrived (so a nearer one cannot come later; this costs at most one depth period of
   latency when depth lags). An exact match always wins, so exactly stamped streams behave as with no slop. A depth
   image may serve two colors when the stream between them lost one. CameraInfo rarely changes: the latest one per
   camera is kept and attached to every view.
2. **Across cameras**, complete views are matched with an approximate-time policy: a set is emitted when every camera
   has a complete view and their color stamps span at most ``slop_ns``. A view that can no longer be part of any set
   (the other cameras' oldest views are already newer than it by more than the slop) is dropped and counted.

Robustness, each counted in :class:`SyncStats`: duplicated messages (same camera, part and stamp) are ignored; parts
older than the last emitted set are "late" and ignored; incomplete views (e.g. a color whose depth never came) are
dropped once a newer set is emitted; per-camera queues are bounded. Messages may arrive in any order within
``latency_ns``: with ``latency_ns > 0`` a set is only emitted once some message at least ``latency_ns`` newer than it
has arrived, which lets reordered messages catch up (at the cost of that much added latency). :meth:`flush` emits
what can still be emitted at the end of a stream.

Camera names are topic prefixes and may hold slashes: ``camera/camera`` for realsense-ros >= 4.51's default
``/camera/camera/color/image_raw`` (namespace + camera name), ``cam0`` for the vidyn layout ``/cam0/color/image_raw``.

Everything is numpy; consumers that want torch call :meth:`MultiViewFrame.to_torch`.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vidyn_ros.types import CameraFrame, CameraModel, MultiViewFrame

PARTS = ("color", "depth", "mask")

# Topic suffix (after /<cam>) -> part name, following the realsense-ros topic names of the topic contract.
TOPIC_SUFFIXES = {
    "/color/image_raw": "color",
    "/aligned_depth_to_color/image_raw": "depth",
    "/mask": "mask",
    "/color/camera_info": "info",
}


def topic_part(topic: str) -> tuple[str, str] | None:
    """``/cam0/color/image_raw`` -> ("cam0", "color"); ``/camera/camera/color/image_raw`` -> ("camera/camera",
    "color"); None for topics that are not camera parts."""
    for suffix, part in TOPIC_SUFFIXES.items():
        if topic.endswith(suffix):
            cam = topic[: -len(suffix)].strip("/")
            if cam:
                return cam, part
    return None


def camera_topics(camera: str, with_mask: bool = False) -> dict[str, str]:
    """Part name -> topic for one camera (color, depth, info and optionally mask)."""
    out = {part: f"/{camera.strip('/')}{suffix}" for suffix, part in TOPIC_SUFFIXES.items()}
    if not with_mask:
        del out["mask"]
    return out


@dataclass
class SyncStats:
    """Counters since construction. ``emitted`` sets were complete; the rest explain what was thrown away."""

    emitted: int = 0
    dropped_incomplete: int = 0  # views missing a part (or a camera's view unmatched) when a newer set went out
    dropped_unmatched: int = 0  # complete views that no other camera had a partner for within the slop
    duplicates: int = 0  # same camera/part/stamp seen twice
    late: int = 0  # parts older than the last emitted set
    overflow: int = 0  # views evicted because a camera's queue was full
    no_info: int = 0  # times a complete set was held back because a camera's CameraInfo had not arrived yet
    last_spread_ns: int = 0  # color stamp spread of the last emitted set
    last_depth_offset_ns: int = 0  # largest |depth stamp - color stamp| inside the last emitted set

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _View:
    stamp_ns: int  # the color stamp (or the mask's, until the color arrives)
    parts: dict[str, np.ndarray] = field(default_factory=dict)
    depth_stamp_ns: int | None = None


class MultiViewSynchronizer:
    """Approximate-time grouping of N cameras' RGB-D(+mask) parts into MultiViewFrames.

    Args:
        cameras: camera names, in the order the views appear in the emitted MultiViewFrame.
        slop_ns: largest allowed spread of the cameras' color stamps inside one set [ns] (e.g. half a frame period).
        require_mask: a view is complete only with a mask too (for consumers that need instance masks).
        latency_ns: hold sets back until a message this much newer arrived, so reordered messages can catch up.
        queue_size: most views kept per camera; older ones are evicted (and counted).
        poses: optional camera-to-world 4x4 per camera (from the rig calibration) put into each CameraModel.
        callback: called with each emitted MultiViewFrame (in addition to being returned by :meth:`add`).
        depth_slop_ns: largest |depth stamp - color stamp| of one camera's pair [ns]; 0 = identical stamps only.

    Thread-safe: :meth:`add` may be called from several subscription callbacks.
    """

    def __init__(
        self,
        cameras: list[str],
        slop_ns: int = 15_000_000,
        require_mask: bool = False,
        latency_ns: int = 0,
        queue_size: int = 30,
        poses: dict[str, np.ndarray] | None = None,
        callback: Callable[[MultiViewFrame], None] | None = None,
        depth_slop_ns: int = 0,
    ) -> None:
        if not cameras:
            raise ValueError("MultiViewSynchronizer needs at least one camera")
        if depth_slop_ns < 0:
            raise ValueError(f"depth_slop_ns must be >= 0, got {depth_slop_ns}")
        self.cameras = list(cameras)
        self.slop_ns = int(slop_ns)
        self.depth_slop_ns = int(depth_slop_ns)
        self.latency_ns = int(latency_ns)
        self.queue_size = int(queue_size)
        self.required = ("color", "depth", "mask") if require_mask else ("color", "depth")
        self.poses = dict(poses or {})
        self.callback = callback
        self.stats = SyncStats()
        self._lock = threading.Lock()
        self._pending: dict[str, dict[int, _View]] = {c: {} for c in self.cameras}  # color stamp -> view
        self._ready: dict[str, list[int]] = {c: [] for c in self.cameras}  # sorted stamps of complete views
        self._depths: dict[str, dict[int, np.ndarray]] = {c: {} for c in self.cameras}  # depth stamp -> image
        self._depth_used: dict[str, set[int]] = {c: set() for c in self.cameras}  # depth stamps paired with a view
        self._newest_depth: dict[str, int] = {}  # per camera: the newest depth stamp seen
        self._info: dict[str, CameraModel] = {}
        self._last_emitted: dict[str, int] = {}  # per camera: stamp used in the last set
        self._last_parts: dict[str, set[str]] = {}  # per camera: parts of that view (to tell duplicates from late)
        self._newest_ns = -(2**62)

    # ----------------------------------------------------------------------------------------------------- input
    def set_camera_info(self, camera: str, model: CameraModel) -> None:
        """Latest intrinsics of ``camera`` (its pose is replaced by ``poses[camera]`` when one was given)."""
        if camera not in self._pending:
            return
        if camera in self.poses:
            model = model.with_pose(self.poses[camera])
        with self._lock:
            self._info[camera] = model

    def add(self, camera: str, part: str, stamp_ns: int, data: np.ndarray | CameraModel) -> list[MultiViewFrame]:
        """Feed one message. ``part`` is color (HxWx3 uint8), depth (HxW float32 m), mask (HxW int) or info
        (a CameraModel). Returns the MultiViewFrames that became complete (usually zero or one)."""
        if part == "info":
            assert isinstance(data, CameraModel)
            self.set_camera_info(camera, data)
            with self._lock:
                out = self._emit_ready()
            return self._deliver(out)
        if camera not in self._pending or part not in PARTS:
            return []
        stamp_ns = int(stamp_ns)
        with self._lock:
            if part == "depth":
                if not self._add_depth(camera, stamp_ns, data):  # type: ignore[arg-type]
                    return []
            else:
                last = self._last_emitted.get(camera)
                if last is not None and stamp_ns <= last:
                    if stamp_ns == last and part in self._last_parts.get(camera, ()):
                        self.stats.duplicates += 1
                    else:  # e.g. an optional mask arriving after its view went out
                        self.stats.late += 1
                    return []
                view = self._pending[camera].setdefault(stamp_ns, _View(stamp_ns))
                if part in view.parts:
                    self.stats.duplicates += 1
                    return []
                view.parts[part] = data  # type: ignore[assignment]
            self._newest_ns = max(self._newest_ns, stamp_ns)
            self._complete_views(camera)
            self._bound(camera)
            out = self._emit_ready()
        return self._deliver(out)

    def _add_depth(self, camera: str, stamp_ns: int, depth: np.ndarray) -> bool:
        """Keep a depth image for pairing; False (counted) for a duplicate or one too old to pair with any color."""
        if stamp_ns in self._depths[camera]:
            self.stats.duplicates += 1
            return False
        last = self._last_emitted.get(camera)
        if last is not None and stamp_ns < last - self.depth_slop_ns:
            self.stats.late += 1
            return False
        self._depths[camera][stamp_ns] = depth
        self._newest_depth[camera] = max(self._newest_depth.get(camera, stamp_ns), stamp_ns)
        return True

    def _complete_views(self, camera: str, final: bool = False) -> None:
        """Pair the camera's views with depth images and mark the complete ones ready (oldest first)."""
        ready = self._ready[camera]
        for stamp, view in sorted(self._pending[camera].items()):
            if "depth" not in view.parts and "color" in view.parts:
                d = self._pick_depth(camera, stamp, final)
                if d is not None:
                    view.parts["depth"] = self._depths[camera][d]
                    view.depth_stamp_ns = d
                    self._depth_used[camera].add(d)
            if all(p in view.parts for p in self.required) and stamp not in ready:
                bisect.insort(ready, stamp)

    def _pick_depth(self, camera: str, stamp: int, final: bool) -> int | None:
        """The depth stamp nearest to the color ``stamp`` within the slop, once no nearer one can still come."""
        if stamp in self._depths[camera]:
            return stamp  # the exact match: nothing can be nearer
        if not final and self._newest_depth.get(camera, -(2**62)) < stamp:
            return None  # depth lags: the next depth image may be nearer than any so far
        near = [d for d in self._depths[camera] if abs(d - stamp) <= self.depth_slop_ns]
        return min(near, key=lambda d: (abs(d - stamp), d)) if near else None

    def _bound(self, camera: str) -> None:
        """Bounded memory: evict the oldest complete views, views that never complete, and unpaired depth."""
        ready, pending, depths = self._ready[camera], self._pending[camera], self._depths[camera]
        while len(ready) > self.queue_size:
            pending.pop(ready.pop(0), None)
            self.stats.overflow += 1
        while len(pending) > 2 * self.queue_size:  # parts that never complete: evict the oldest
            old = min(pending)
            pending.pop(old)
            if old in ready:
                ready.remove(old)
            self.stats.overflow += 1
        while len(depths) > 2 * self.queue_size:
            old = min(depths)
            depths.pop(old)
            if old not in self._depth_used[camera]:
                self.stats.overflow += 1
            self._depth_used[camera].discard(old)

    def flush(self) -> list[MultiViewFrame]:
        """End of stream: emit every set that is complete regardless of ``latency_ns``; count the rest as dropped."""
        with self._lock:
            for cam in self.cameras:
                self._complete_views(cam, final=True)
            out = self._emit_ready(ignore_latency=True)
            for cam in self.cameras:
                for stamp, view in self._pending[cam].items():
                    if stamp in self._ready[cam]:
                        self.stats.dropped_unmatched += 1
                    elif view.parts:
                        self.stats.dropped_incomplete += 1
                self.stats.dropped_incomplete += len(set(self._depths[cam]) - self._depth_used[cam])
                self._pending[cam].clear()
                self._ready[cam].clear()
                self._depths[cam].clear()
                self._depth_used[cam].clear()
        return self._deliver(out)

    # -------------------------------------------------------------------------------------------------- matching
    def _emit_ready(self, ignore_latency: bool = False) -> list[MultiViewFrame]:
        out: list[MultiViewFrame] = []
        while all(self._ready[c] for c in self.cameras):
            heads = {c: self._ready[c][0] for c in self.cameras}
            oldest_cam = min(heads, key=heads.__getitem__)
            pivot = max(heads.values())
            if not ignore_latency and self._newest_ns - pivot < self.latency_ns:
                break  # a reordered message older than the pivot may still arrive and change the match: wait
            if pivot - heads[oldest_cam] > self.slop_ns:
                # Every view of the newest-head camera is >= pivot, so the oldest head has no partner.
                self._drop(oldest_cam, heads[oldest_cam])
                self.stats.dropped_unmatched += 1
                continue
            if any(c not in self._info for c in self.cameras):
                # No intrinsics yet for some camera (CameraInfo travels on its own topic and may come later than
                # the images): hold the set; the bounded queues keep memory in check if it never comes.
                self.stats.no_info += 1
                break
            out.append(self._make_frame(heads))
        return out

    def _make_frame(self, heads: dict[str, int]) -> MultiViewFrame:
        views = []
        offset = 0
        for cam in self.cameras:
            stamp = heads[cam]
            view = self._pending[cam].pop(stamp)
            self._ready[cam].pop(0)
            # Everything older than the emitted view is now obsolete: incomplete views there can never be used.
            for old in [s for s in self._pending[cam] if s < stamp]:
                self._pending[cam].pop(old)
                self.stats.dropped_incomplete += 1
            # Depth images too old to pair with any later color; the ones never paired were lost views.
            for old in [d for d in self._depths[cam] if d < stamp - self.depth_slop_ns]:
                self._depths[cam].pop(old)
                if old not in self._depth_used[cam]:
                    self.stats.dropped_incomplete += 1
                self._depth_used[cam].discard(old)
            self._last_emitted[cam] = stamp
            self._last_parts[cam] = set(view.parts)
            if view.depth_stamp_ns is not None:
                offset = max(offset, abs(view.depth_stamp_ns - stamp))
            mask = view.parts.get("mask")
            views.append(
                CameraFrame(
                    camera=self._info[cam],
                    stamp_ns=stamp,
                    color=view.parts["color"],
                    depth=view.parts["depth"],
                    mask=None if mask is None else np.asarray(mask, dtype=np.int32),
                )
            )
        self.stats.emitted += 1
        self.stats.last_spread_ns = max(heads.values()) - min(heads.values())
        self.stats.last_depth_offset_ns = offset
        # The set is stamped with the first camera's stamp: a real capture time, not an average of several.
        return MultiViewFrame(stamp_ns=heads[self.cameras[0]], views=views)

    def _drop(self, cam: str, stamp: int) -> None:
        self._ready[cam].remove(stamp)
        self._pending[cam].pop(stamp, None)

    def _deliver(self, frames: list[MultiViewFrame]) -> list[MultiViewFrame]:
        if self.callback is not None:
            for f in frames:
                self.callback(f)
        return frames


def decode_message(part: str, msgtype: str, cdr: bytes, camera: str) -> tuple[int, np.ndarray | CameraModel]:
    """CDR bytes of one camera part -> (stamp_ns, numpy array or CameraModel), via vidyn_ros.msgs.

    Depth arrives as 16UC1 millimetres and leaves as float32 metres; masks as int32 ids.
    """
    from vidyn_ros import msgs  # imported here: msgs pulls in the rosbags typestore

    msg = msgs.deserialize(cdr, msgtype)
    stamp_ns = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
    if part == "info":
        return stamp_ns, msgs.camera_from_info(msg, name=camera)
    if part == "depth":
        return stamp_ns, msgs.depth_from_msg(msg)
    if part == "mask":
        return stamp_ns, msgs.mask_from_msg(msg)
    return stamp_ns, msgs.image_to_array(msg)


class TopicSynchronizer:
    """Node helper: feed (topic, msgtype, cdr bytes) as they come off DDS or a bag; get MultiViewFrames.

    Wraps :class:`MultiViewSynchronizer` with the topic contract (``/<cam>/color/image_raw`` ...) and the message
    decoding, so a node only forwards raw subscription bytes. Cameras are topic prefixes (``cam0``,
    ``camera/camera``); each emitted view's CameraModel is named after its prefix.
    """

    def __init__(self, cameras: list[str], with_mask: bool = False, mask_suffix: str = "mask", **kwargs) -> None:
        cameras = [c.strip("/") for c in cameras]
        self.sync = MultiViewSynchronizer(cameras, require_mask=with_mask, **kwargs)
        self.with_mask = with_mask
        # Masks may come from another topic than /<cam>/mask (e.g. an external segmenter on /<cam>/sam/mask).
        self.mask_suffix = "/" + mask_suffix.strip("/")
        types = {"color": "sensor_msgs/msg/Image", "depth": "sensor_msgs/msg/Image", "mask": "sensor_msgs/msg/Image",
                 "info": "sensor_msgs/msg/CameraInfo"}
        self._route: dict[str, tuple[str, str]] = {}  # topic -> (camera, part)
        self._types: dict[str, str] = {}
        for cam in cameras:
            for part, topic in camera_topics(cam, False).items():
                self._route[topic], self._types[topic] = (cam, part), types[part]
            if with_mask:
                topic = f"/{cam}{self.mask_suffix}"
                self._route[topic], self._types[topic] = (cam, "mask"), types["mask"]

    def topics(self) -> dict[str, str]:
        """topic -> ROS message type, for every topic the synchroniser consumes."""
        return dict(self._types)

    def add_message(self, topic: str, msgtype: str, cdr: bytes) -> list[MultiViewFrame]:
        """One raw message; topics other than this synchroniser's are ignored."""
        where = self._route.get("/" + topic.lstrip("/"))
        if where is None:
            return []
        cam, part = where
        stamp_ns, data = decode_message(part, msgtype, cdr, cam)
        return self.sync.add(cam, part, stamp_ns, data)
