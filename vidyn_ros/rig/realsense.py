"""Intel RealSense cameras (pyrealsense2) and RealSense SDK recordings, without ROS.

One code path for hardware and recordings played in real time: an ``rs.pipeline`` started from an ``rs.config``
that either names a device serial (``enable_device``) or a recording (``enable_device_from_file``), depth aligned to
color with ``rs.align``. Recordings played not in real time (every frame, at the reader's pace) start the recording's
playback sensors directly instead (see ``RealSenseCamera._start_playback``). What comes out is a
:class:`~vidyn_ros.types.CameraFrame` (color uint8 RGB, depth float32 metres in the color camera's geometry) and a
:class:`~vidyn_ros.types.CameraModel` built from the SDK's color intrinsics.

* :class:`RealSenseCamera` opens one camera / recording and reads frames; bad input raises CameraError (one line).
* :class:`CameraSupervisor` runs N cameras, each on its own thread, reporting frames and status changes through
  callbacks; a camera that fails or disconnects is retried every ``reconnect_s`` while the others keep going. The
  ``realsense`` node is a thin wrapper around it.
* :func:`write_recording` makes a RealSense recording (rosbag2 .db3, librealsense's own format) from numpy arrays with
  ``rs.software_device`` + ``rs.recorder``: how the tests and the ingest benchmark exercise this module without a
  camera.

Recordings as cameras: a recording that reaches its end counts as a disconnection (unless ``repeat``); it is
reconnected when the file at that path is replaced by a new one (different size or modification time), which is how
the tests simulate a camera coming back.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidyn_ros.errors import CameraError
from vidyn_ros.types import CameraFrame, CameraModel, MultiViewFrame

log = logging.getLogger(__name__)

SYNC_MODES = {"default": 0, "master": 1, "slave": 2}
UNASSIGNED = "unassigned"  # serial of a camera left without a device (more cameras configured than connected)


class CameraDisconnectedError(CameraError):
    """A running camera stopped delivering: unplugged, or its recording ended."""


def _rs():
    """The pyrealsense2 module (CameraError when it is missing)."""
    # librealsense 2.59 brings its own DDS libraries. When pyrealsense2 is loaded *before* rclpy in one process, the
    # process segfaults at exit once an rclpy node has existed (free() of a bad pointer in the exit handlers; measured
    # here with nothing but the two imports, an rclpy node and exit). Loading rclpy first is safe, so load it first
    # whenever it is installed; the library stays usable without ROS.
    try:
        import rclpy  # noqa: F401
    except ImportError:
        pass
    try:
        import pyrealsense2 as rs
    except ImportError as err:  # pragma: no cover - pyrealsense2 is a hard requirement of the camera layer
        raise CameraError("pyrealsense2 is not installed (pip install pyrealsense2)") from err
    return rs


# ------------------------------------------------------------------------------------------------------- configuration
@dataclass
class RealSenseConfig:
    """One camera of the rig.

    Attributes:
        name: camera name = topic prefix (``/<name>/color/image_raw``).
        serial: device serial number; "" = the only / next connected camera.
        recording: path of a RealSense recording (.db3 / .bag) to play instead of hardware.
        width, height, fps: color and depth stream mode (depth is aligned to color, so both share it).
        exposure_us: color exposure [µs]; 0 = auto exposure.
        laser_power: projector power [mW]; < 0 = device default.
        emitter_enabled: projector on/off; None = device default.
        sync_mode: hardware sync, "default" | "master" | "slave" (``inter_cam_sync_mode`` 0/1/2).
        realtime: play recordings at their recorded pace (False: every frame, as fast as the consumer reads them;
            deterministic, for tests and offline processing: real-time playback skips frames on a starved CPU).
        repeat: loop recordings (otherwise the end of a recording is a disconnection).
        timeout_ms: longest wait for a frame before checking whether the camera is still there.
    """

    name: str = "cam0"
    serial: str = ""
    recording: str = ""
    width: int = 640
    height: int = 480
    fps: int = 30
    exposure_us: float = 0.0
    laser_power: float = -1.0
    emitter_enabled: bool | None = None
    sync_mode: str = "default"
    realtime: bool = True
    repeat: bool = False
    timeout_ms: int = 1000

    def source(self) -> str:
        return f"recording {self.recording}" if self.recording else f"camera serial {self.serial or '(any)'}"


def connected_devices() -> list[dict[str, str]]:
    """Connected RealSense devices: [{"serial", "name", "usb"}]. Empty without cameras."""
    rs = _rs()
    out = []
    for dev in rs.context().query_devices():
        info = {}
        for key, field in (("serial", rs.camera_info.serial_number), ("name", rs.camera_info.name),
                           ("usb", rs.camera_info.usb_type_descriptor)):
            info[key] = dev.get_info(field) if dev.supports(field) else ""
        out.append(info)
    return out


# ------------------------------------------------------------------------------------------------------- intrinsics
def distortion_to_ros(model, coeffs: Sequence[float]) -> tuple[str, np.ndarray]:
    """librealsense distortion model + coeffs -> (ROS CameraInfo distortion_model, D).

    Brown-Conrady (and its inverse, and "none") are the ROS ``plumb_bob`` model with the same coefficient order
    (k1, k2, p1, p2, k3); Kannala-Brandt4 is ROS ``equidistant`` (k1..k4), as realsense-ros maps them.
    """
    rs = _rs()
    c = np.asarray(list(coeffs), dtype=np.float64)
    if model == rs.distortion.kannala_brandt4:
        return "equidistant", c[:4]
    brown = (rs.distortion.brown_conrady, rs.distortion.inverse_brown_conrady, rs.distortion.modified_brown_conrady)
    if model in brown:
        return "plumb_bob", c[:5]
    if model == rs.distortion.none:
        return "plumb_bob", np.zeros(5)
    # F-theta and others have no ROS equivalent; plumb_bob with the SDK coefficients is what realsense-ros publishes.
    return "plumb_bob", c[:5]


def camera_model_from_intrinsics(intr, name: str, T_world_cam: np.ndarray | None = None) -> CameraModel:
    """``rs.intrinsics`` -> CameraModel (K from fx, fy, ppx, ppy; distortion mapped to its ROS name)."""
    K = np.array([[intr.fx, 0.0, intr.ppx], [0.0, intr.fy, intr.ppy], [0.0, 0.0, 1.0]], dtype=np.float64)
    dist_model, D = distortion_to_ros(intr.model, intr.coeffs)
    return CameraModel(name=name, width=int(intr.width), height=int(intr.height), K=K,
                       T_world_cam=np.eye(4) if T_world_cam is None else np.asarray(T_world_cam, dtype=np.float64),
                       distortion_model=dist_model, D=D)


# ---------------------------------------------------------------------------------------------------------- a camera
class RealSenseCamera:
    """One RealSense camera or recording, read through an ``rs.pipeline`` with depth aligned to color.

    Usage::

        cam = RealSenseCamera(RealSenseConfig(name="cam0", recording="x.db3"))
        cam.open()                 # CameraError: no camera / unknown serial / missing or corrupt recording
        frame = cam.read()         # CameraFrame or None on timeout; CameraDisconnectedError when it is gone
        cam.close()
    """

    def __init__(self, config: RealSenseConfig, T_world_cam: np.ndarray | None = None, queue_size: int = 8) -> None:
        self.config = config
        self.T_world_cam = T_world_cam
        self.model: CameraModel | None = None
        self.serial = ""
        self.device_name = ""
        self._pipe = None
        self._align = None
        self._playback = None
        self._latest: dict = {}  # stream -> the last few unpaired frames
        self._used: dict = {}  # stream -> frame number of the last frame put into a pair
        self._pair: tuple = ()
        self._composer = None
        self._composed = None
        self.last_arrival_s = 0.0
        self._stamp_offset = 0  # added to the SDK stamps of a recording that started over [ns]
        self._last_stamp: int | None = None
        self._queue: collections.deque = collections.deque(maxlen=queue_size)
        self._cv = threading.Condition()
        self.dropped = 0  # framesets evicted because the consumer fell behind
        self._file_sig: tuple[int, int] | None = None
        self._sensors: list = []  # non-real-time playback: the playback device's started sensors (no pipeline)
        self._device = None
        self._rs_context = None
        self._stopping = False  # close() under way: playback callbacks stop waiting for room in the queue
        self._pairing = threading.Lock()  # sensors call back from their own threads
        self._all_started = threading.Event()  # non-real-time playback: every sensor started (frames may flow)

    # ------------------------------------------------------------------------------------------------- open/close
    def open(self) -> None:
        rs = _rs()
        cfg = self.config
        if cfg.recording:
            path = Path(cfg.recording)
            if not path.is_file():
                raise CameraError(f"{cfg.name}: recording {path} not found")
            self._file_sig = file_signature(path)
        with self._cv:
            self._queue.clear()
            self._stopping = False
        self._latest, self._used = {}, {}
        if cfg.recording and not cfg.realtime:
            streams = self._start_playback(path)
        else:
            streams = self._start_pipeline()
        self.model = camera_model_from_intrinsics(streams[rs.stream.color].as_video_stream_profile().get_intrinsics(),
                                                  cfg.name, self.T_world_cam)
        log.info("%s: opened %s (serial %s, %s)", cfg.name, cfg.source(), self.serial, self.device_name)

    def _device_info(self, dev) -> None:
        info = _rs().camera_info
        self.serial = dev.get_info(info.serial_number) if dev.supports(info.serial_number) else ""
        self.device_name = dev.get_info(info.name) if dev.supports(info.name) else ""

    def _check_streams(self, streams: dict) -> None:
        rs = _rs()
        if rs.stream.color not in streams or rs.stream.depth not in streams:
            have = ", ".join(str(s).split(".")[-1] for s in streams)
            raise CameraError(f"{self.config.name}: {self.config.source()} needs color and depth streams (has: {have})")

    def _start_aligner(self) -> None:
        rs = _rs()
        self._align = rs.align(rs.stream.color)
        self._composer = rs.processing_block(self._compose)
        self._composed = rs.frame_queue(2)
        self._composer.start(self._composed)

    def _start_pipeline(self) -> dict:
        """Hardware, or a recording played in real time: an ``rs.pipeline``. Returns the streams by type."""
        rs = _rs()
        cfg = self.config
        rs_cfg = rs.config()
        if cfg.recording:
            path = Path(cfg.recording)
            try:
                rs_cfg.enable_device_from_file(str(path), repeat_playback=cfg.repeat)
            except RuntimeError as err:
                raise CameraError(f"{cfg.name}: cannot play recording {path}: {err}") from None
        else:
            serials = [d["serial"] for d in connected_devices()]
            if cfg.serial == UNASSIGNED:
                raise CameraError(f"{cfg.name}: no serial configured and no unassigned camera connected "
                                  f"(connected: {', '.join(serials) or 'none'})")
            if cfg.serial and cfg.serial not in serials:
                raise CameraError(
                    f"{cfg.name}: no camera with serial {cfg.serial} (connected: {', '.join(serials) or 'none'})")
            if not serials:
                raise CameraError(f"{cfg.name}: no RealSense camera connected")
            if cfg.serial:
                rs_cfg.enable_device(cfg.serial)
            rs_cfg.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.rgb8, cfg.fps)
            rs_cfg.enable_stream(rs.stream.depth, cfg.width, cfg.height, rs.format.z16, cfg.fps)
        pipe = rs.pipeline()
        try:
            # A callback, not wait_for_frames: the pipeline's own queue drops framesets whenever the consumer is a
            # little late (seen with recordings on a busy CPU); this callback only queues them (bounded, drop-oldest).
            profile = pipe.start(rs_cfg, self._on_frameset)
        except RuntimeError as err:
            what = f"recording {cfg.recording} is not a playable RealSense recording" if cfg.recording \
                else f"cannot start {cfg.source()} at {cfg.width}x{cfg.height}@{cfg.fps}"
            raise CameraError(f"{cfg.name}: {what} ({err})") from None
        try:
            dev = profile.get_device()
            self._device_info(dev)
            if cfg.recording:
                self._playback = dev.as_playback()
                self._playback.set_real_time(True)
            else:
                self._apply_options(dev)
            streams = {s.stream_type(): s for s in profile.get_streams()}
            self._check_streams(streams)
        except BaseException:
            pipe.stop()
            raise
        self._start_aligner()
        self._pipe = pipe
        return streams

    def _start_playback(self, path: Path) -> dict:
        """A recording played not in real time: its playback device's sensors started directly, no pipeline.

        librealsense reads such a playback one frame at a time and hands the next frame over only once the callback
        of the previous one has returned. So ``_on_sensor_frame`` waiting for room in the reader's queue stalls the
        playback (nothing is dropped, whatever the CPU load), and once the playback reports ``stopped`` every frame
        has been queued. (The pipeline instead starts the playback in real time before it can be switched, and its
        syncer drops a frame it sees a second time after a rewind: frame 0 went missing on a busy CPU.)
        """
        rs = _rs()
        cfg = self.config
        ctx = rs.context()
        try:
            dev = ctx.load_device(str(path))
        except RuntimeError as err:
            raise CameraError(f"{cfg.name}: recording {path} is not a playable RealSense recording ({err})") from None
        self._device_info(dev)
        playback = dev.as_playback()
        playback.set_real_time(False)  # before any sensor starts: no frame goes out at the recorded pace
        streams: dict = {}
        chosen: list = []  # (sensor, [profiles]) for the first color and the first depth stream
        for sensor in dev.query_sensors():
            mine = []
            for prof in sensor.get_stream_profiles():
                stype = prof.stream_type()
                if stype in (rs.stream.color, rs.stream.depth) and stype not in streams:
                    streams[stype] = prof
                    mine.append(prof)
            if mine:
                chosen.append((sensor, mine))
        self._check_streams(streams)
        self._start_aligner()
        self._rs_context, self._device, self._playback = ctx, dev, playback
        opened = []
        self._all_started.clear()
        try:
            for sensor, profiles in chosen:
                sensor.open(profiles)
                opened.append(sensor)
            self._sensors = opened
            # The playback starts reading with the first sensor started and drops frames of sensors not started yet:
            # the callbacks hold the first frame (and with it the playback) until every sensor has started.
            for sensor in opened:
                sensor.start(self._on_sensor_frame)
        except RuntimeError as err:
            self._sensors = opened
            self.close()
            raise CameraError(f"{cfg.name}: cannot play recording {path}: {err}") from None
        finally:
            self._all_started.set()
        return streams

    def _apply_options(self, dev) -> None:
        """Exposure, laser and hardware sync on a real device (recordings are read-only)."""
        rs = _rs()
        cfg = self.config
        for sensor in dev.query_sensors():
            is_depth = sensor.is_depth_sensor()

            def setopt(opt, value, sensor=sensor):
                if sensor.supports(opt):
                    sensor.set_option(opt, float(value))

            if is_depth:
                if cfg.laser_power >= 0:
                    setopt(rs.option.laser_power, cfg.laser_power)
                if cfg.emitter_enabled is not None:
                    setopt(rs.option.emitter_enabled, 1.0 if cfg.emitter_enabled else 0.0)
                if cfg.sync_mode not in SYNC_MODES:
                    raise CameraError(f"{cfg.name}: sync_mode {cfg.sync_mode!r} (choose from {', '.join(SYNC_MODES)})")
                setopt(rs.option.inter_cam_sync_mode, SYNC_MODES[cfg.sync_mode])
            elif sensor.supports(rs.option.enable_auto_exposure):  # the RGB sensor
                if cfg.exposure_us > 0:
                    setopt(rs.option.enable_auto_exposure, 0)
                    setopt(rs.option.exposure, cfg.exposure_us)
                else:
                    setopt(rs.option.enable_auto_exposure, 1)
            # Timestamps in the host clock domain, so stamps of several cameras are comparable.
            setopt(rs.option.global_time_enabled, 1)

    def close(self) -> None:
        with self._cv:
            self._stopping = True  # a playback callback waiting for room returns (its frame is not needed any more)
            self._cv.notify_all()
        for sensor in self._sensors:
            for action in (sensor.stop, sensor.close):
                try:
                    action()
                except RuntimeError:  # stopped already (the recording ended) or never started
                    pass
        self._sensors = []
        if self._pipe is not None:
            try:
                self._pipe.stop()
            except RuntimeError:
                pass
        self._pipe = None
        self._playback = self._device = self._rs_context = None
        # Drop every SDK object and kept frame now: the processing block holds a bound method of this camera (a
        # reference cycle), so without this they live until interpreter exit, where librealsense destroying them
        # after its own globals crashed the process (segfault at the end of a test run).
        self._composer = self._composed = self._align = None
        self._latest, self._used, self._pair = {}, {}, ()
        with self._cv:
            self._queue.clear()

    @property
    def is_open(self) -> bool:
        return self._pipe is not None or bool(self._sensors)

    def __enter__(self) -> RealSenseCamera:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------------ read
    def read(self, timeout_ms: int | None = None) -> CameraFrame | None:
        """Next aligned color + depth frame, or None on timeout. Raises CameraDisconnectedError when the camera is gone
        (unplugged, or the recording ended)."""
        if not self.is_open:
            raise CameraError(f"{self.config.name}: read() before open()")
        rs = _rs()
        timeout = int(timeout_ms if timeout_ms is not None else self.config.timeout_ms)
        with self._cv:
            self._cv.wait_for(lambda: bool(self._queue), timeout=timeout / 1000.0)
            frames = self._queue.popleft() if self._queue else None
            self._cv.notify_all()  # room in the queue: a non-real-time playback hands over its next frame
        if frames is None:
            if not self._gone():
                return None
            with self._cv:  # queued between the wait and the check (a stopped playback queues nothing more)
                frames = self._queue.popleft() if self._queue else None
            if frames is None and self._sensors and self.config.repeat:
                self.close()  # a non-real-time playback loops by starting over (the pipeline loops by itself)
                self.open()
                return None
            if frames is None:
                what = "recording ended" if self.config.recording else "camera disconnected"
                raise CameraDisconnectedError(f"{self.config.name}: {what} ({self.config.source()})")
        self.last_arrival_s = frames[2]  # perf_counter() when the SDK handed the pair over (for latency figures)
        self._pair = frames[:2]
        self._composer.invoke(frames[0])
        frames = self._composed.wait_for_frame(1000).as_frameset()
        aligned = self._align.process(frames)
        depth_f, color_f = aligned.get_depth_frame(), aligned.get_color_frame()
        color = np.asanyarray(color_f.get_data())
        if color_f.get_profile().format() == rs.format.bgr8:
            color = color[..., ::-1]
        depth_raw_units = np.asanyarray(depth_f.get_data())
        # The SDK reports units as float32 (0.0010000000475); rounding keeps 810 mm -> 0.81 m exactly as on the wire.
        units = round(float(depth_f.get_units() or 0.001), 7)
        # SDK timestamps are milliseconds (double): round at the microsecond, below that it is float noise.
        stamp = round(color_f.get_timestamp() * 1000.0) * 1000 + self._stamp_offset
        if self.config.recording and self._last_stamp is not None and stamp <= self._last_stamp:
            # A recording that loops (repeat) or was replaced starts over in time: keep the stamps increasing, as a
            # camera's would (synchronisers downstream drop anything older than what they already emitted).
            period = round(1e9 / max(1, self._fps(color_f)))
            self._stamp_offset += self._last_stamp + period - stamp
            stamp = self._last_stamp + period
        self._last_stamp = stamp
        return CameraFrame(
            camera=self.model,
            stamp_ns=stamp,
            # A copy: a view would keep the SDK frame (and its slot in librealsense's bounded frame pool) alive for
            # as long as the consumer holds the image.
            color=np.array(color, dtype=np.uint8, order="C"),
            depth=depth_raw_units.astype(np.float32) * np.float32(units),
        )

    def _on_sensor_frame(self, frame) -> None:
        """Playback sensor thread (non-real-time): pair and queue, waiting while the queue is full."""
        self._all_started.wait()
        with self._pairing:
            self._on_frameset(frame, wait_for_room=True)

    def _on_frameset(self, frame, wait_for_room: bool = False) -> None:
        """SDK thread: pair depth and color frames and queue the pairs.

        The pipeline's syncer does not always hand out a capture's depth and color together: on a busy CPU it emits
        single-stream sets, and it completes sets with the previous frame of the other stream ((d2, c1) then
        (d2, c2)). So frames are paired here by timestamp (within half a frame period), each frame used once.
        """
        rs = _rs()
        frames = list(frame.as_frameset()) if frame.is_frameset() else [frame]
        for f in frames:
            stype = f.get_profile().stream_type()
            if stype not in (rs.stream.depth, rs.stream.color):
                continue
            number = f.get_frame_number()
            if number == self._used.get(stype):
                continue  # a frame re-sent to complete a set; it was paired already
            f.keep()
            other_type = rs.stream.color if stype == rs.stream.depth else rs.stream.depth
            mine = self._latest.setdefault(stype, collections.deque(maxlen=4))
            others = self._latest.setdefault(other_type, collections.deque(maxlen=4))
            half_period_ms = 500.0 / max(1, self._fps(f))
            match = next((o for o in others if abs(o.get_timestamp() - f.get_timestamp()) <= half_period_ms), None)
            if match is None:
                mine.append(f)  # wait for its partner (the other stream may lag a few frames)
                continue
            # Frames older than this pair can no longer be paired in order: forget them.
            while others and others[0] is not match:
                others.popleft()
            others.popleft()
            mine.clear()
            depth, color = (f, match) if stype == rs.stream.depth else (match, f)
            self._used = {rs.stream.depth: depth.get_frame_number(), rs.stream.color: color.get_frame_number()}
            with self._cv:
                if wait_for_room:  # the playback waits for this callback: back-pressure, nothing dropped
                    self._cv.wait_for(lambda: len(self._queue) < self._queue.maxlen or self._stopping)
                    if self._stopping:
                        return
                if len(self._queue) == self._queue.maxlen:
                    self.dropped += 1
                self._queue.append((depth, color, time.perf_counter()))
                self._cv.notify_all()

    def _compose(self, _frame, source) -> None:
        """Processing block: make one frameset out of the current (depth, color) pair, for ``rs.align``."""
        source.frame_ready(source.allocate_composite_frame(list(self._pair)))

    @staticmethod
    def _fps(frame) -> int:
        try:
            return int(frame.get_profile().fps())
        except RuntimeError:
            return 30

    def _gone(self) -> bool:
        rs = _rs()
        if self._playback is not None:
            return self._playback.current_status() == rs.playback_status.stopped
        if self.serial:
            return self.serial not in {d["serial"] for d in connected_devices()}
        return False

    def replaced_since_open(self) -> bool:
        """For recordings: has the file at the path been replaced since it was opened (a 'reconnect')?"""
        path = Path(self.config.recording)
        return path.is_file() and file_signature(path) != self._file_sig


def file_signature(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns)


# -------------------------------------------------------------------------------------------------- N cameras
@dataclass
class CameraStatus:
    name: str
    state: str  # "streaming" | "waiting" | "disconnected" | "error"
    message: str
    frames: int = 0


class CameraSupervisor:
    """Runs N cameras on their own threads; frames and status changes go to callbacks.

    ``on_frame(name, CameraFrame)`` is called from the camera's thread; ``on_status(CameraStatus)`` on every state
    change (streaming / disconnected / error with a one-line message). A camera that cannot be opened or that
    disconnects is retried every ``reconnect_s`` while the other cameras keep streaming. A recording that ended is
    reopened only when the file was replaced (or when it loops by itself with ``repeat``).
    """

    def __init__(
        self,
        configs: Sequence[RealSenseConfig],
        on_frame: Callable[[str, CameraFrame], None],
        on_status: Callable[[CameraStatus], None] | None = None,
        poses: dict[str, np.ndarray] | None = None,
        reconnect_s: float = 1.0,
    ) -> None:
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise CameraError(f"camera names must be unique, got {names}")
        self.configs = list(configs)
        self.on_frame = on_frame
        self.on_status = on_status or (lambda s: None)
        self.poses = poses or {}
        self.reconnect_s = reconnect_s
        self.status: dict[str, CameraStatus] = {c.name: CameraStatus(c.name, "waiting", "not started") for c in configs}
        self.cameras: dict[str, RealSenseCamera] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for cfg in self.configs:
            t = threading.Thread(target=self._run, args=(cfg,), name=f"realsense-{cfg.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def _set(self, name: str, state: str, message: str) -> None:
        st = self.status[name]
        if st.state != state or st.message != message:
            st.state, st.message = state, message
            self.on_status(CameraStatus(name, state, message, st.frames))

    def _run(self, cfg: RealSenseConfig) -> None:
        cam = RealSenseCamera(cfg, self.poses.get(cfg.name))
        self.cameras[cfg.name] = cam
        ended_sig: tuple[int, int] | None = None  # signature of a recording that already ended
        while not self._stop.is_set():
            if not cam.is_open:
                if cfg.recording and ended_sig is not None:
                    p = Path(cfg.recording)
                    if not p.is_file() or file_signature(p) == ended_sig:
                        self._stop.wait(self.reconnect_s)
                        continue
                try:
                    cam.open()
                    ended_sig = None
                    self._set(cfg.name, "streaming", f"{cfg.name}: streaming from {cfg.source()}")
                except (CameraError, RuntimeError) as err:  # RuntimeError: any other SDK failure while opening
                    cam.close()
                    self._set(cfg.name, "error", str(err) if isinstance(err, CameraError) else f"{cfg.name}: {err}")
                    self._stop.wait(self.reconnect_s)
                    continue
            try:
                frame = cam.read()
            except CameraDisconnectedError as err:
                if cfg.recording:
                    ended_sig = cam._file_sig
                cam.close()
                self._set(cfg.name, "disconnected", f"{err}; retrying every {self.reconnect_s:g} s")
                continue
            except RuntimeError as err:
                # An SDK failure mid-stream (e.g. a frame that never came out of align): without this the camera's
                # thread would end with a traceback and the camera would never be retried. Reopen it instead.
                cam.close()
                self._set(cfg.name, "error", f"{cfg.name}: {err}; reopening in {self.reconnect_s:g} s")
                self._stop.wait(self.reconnect_s)
                continue
            if frame is None:
                continue
            self.status[cfg.name].frames += 1
            try:
                self.on_frame(cfg.name, frame)
            except Exception as err:  # a consumer bug must not stop the camera thread
                log.warning("%s: frame callback failed: %s: %s", cfg.name, type(err).__name__, err)
        cam.close()


# ---------------------------------------------------------------------------------------------------- recordings
def write_recording(
    path: str | Path,
    colors: Sequence[np.ndarray],
    depths_mm: Sequence[np.ndarray],
    K_color: np.ndarray,
    K_depth: np.ndarray | None = None,
    fps: int = 30,
    serial: str = "000000000001",
    start_ms: float = 1.7e12,
    coeffs: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0),
    distortion: str = "brown_conrady",
    depth_to_color: np.ndarray | None = None,
    depth_units: float = 0.001,
    pace: bool = True,
) -> Path:
    """Write a RealSense recording of given color / depth frames with ``rs.software_device`` + ``rs.recorder``.

    Args:
        colors: frames, each HxWx3 uint8 RGB.
        depths_mm: frames, each HxW uint16 depth in ``depth_units`` (default millimetres), in the depth camera's
            geometry (K_depth, same size as color here).
        K_color, K_depth: 3x3 intrinsics (K_depth defaults to K_color).
        fps: stream rate; frame k is stamped ``start_ms + k * 1000 / fps`` [ms] (system_time domain).
        serial: serial number stored as the device's info.
        coeffs, distortion: color distortion (an ``rs.distortion`` name) and its 5 coefficients.
        depth_to_color: 4x4 depth-to-color extrinsics (identity by default) used by ``rs.align``.
        pace: feed the frames at ``fps`` in wall time. The recorder logs each frame at its arrival time and real-time
            playback replays those times, so an unpaced recording would play back in a burst (and librealsense's
            pipeline drops frames it cannot hand out in time).
    Returns the path written (a rosbag2 sqlite3 file in librealsense's layout).
    """
    rs = _rs()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()  # the recorder appends to an existing file otherwise
    if len(colors) != len(depths_mm) or not colors:
        raise ValueError("write_recording needs the same, non-zero number of color and depth frames")
    h, w = colors[0].shape[:2]
    K_depth = K_color if K_depth is None else K_depth

    def intrinsics(K, model, c):
        i = rs.intrinsics()
        i.width, i.height = w, h
        i.fx, i.fy, i.ppx, i.ppy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
        i.model = model
        i.coeffs = [float(v) for v in c]
        return i

    dev = rs.software_device()
    dev.register_info(rs.camera_info.serial_number, serial)
    dev.register_info(rs.camera_info.name, "vidyn software RealSense")
    depth_sensor = dev.add_sensor("Stereo Module")
    color_sensor = dev.add_sensor("RGB Camera")
    depth_sensor.add_read_only_option(rs.option.depth_units, depth_units)
    streams = []
    for uid, (stype, fmt, bpp, K, model, c) in enumerate(
        (
            (rs.stream.depth, rs.format.z16, 2, K_depth, rs.distortion.none, (0, 0, 0, 0, 0)),
            (rs.stream.color, rs.format.rgb8, 3, K_color, getattr(rs.distortion, distortion), coeffs),
        )
    ):
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid = stype, 0, uid
        vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = w, h, fps, bpp, fmt
        vs.intrinsics = intrinsics(K, model, c)
        streams.append(vs)
    depth_profile = depth_sensor.add_video_stream(streams[0])
    color_profile = color_sensor.add_video_stream(streams[1])
    T = np.eye(4) if depth_to_color is None else np.asarray(depth_to_color, dtype=np.float64)
    ext = rs.extrinsics()
    ext.rotation = [float(v) for v in T[:3, :3].T.reshape(-1)]  # librealsense stores column-major
    ext.translation = [float(v) for v in T[:3, 3]]
    depth_profile.register_extrinsics_to(color_profile, ext)

    recorder = rs.recorder(str(path), dev)
    queue = rs.frame_queue(2 * len(colors) + 4)  # the frames only need somewhere to go; the recorder taps the sensors
    depth_sensor.open(depth_profile)
    color_sensor.open(color_profile)
    depth_sensor.start(queue)
    color_sensor.start(queue)
    t0 = time.monotonic()
    try:
        for k, (color, depth) in enumerate(zip(colors, depths_mm, strict=True)):
            if pace:
                time.sleep(max(0.0, t0 + k / fps - time.monotonic()))
            stamp = start_ms + k * 1000.0 / fps
            for sensor, prof, pixels, bpp in (
                (depth_sensor, depth_profile, np.ascontiguousarray(depth, dtype=np.uint16), 2),
                (color_sensor, color_profile, np.ascontiguousarray(color, dtype=np.uint8), 3),
            ):
                f = rs.software_video_frame()
                f.pixels = pixels
                f.bpp = bpp
                f.stride = w * bpp
                f.timestamp = stamp
                f.domain = rs.timestamp_domain.system_time
                f.frame_number = k
                f.profile = prof.as_video_stream_profile()
                if bpp == 2:
                    f.depth_units = depth_units
                sensor.on_video_frame(f)
            while queue.poll_for_frame():  # keep the queue drained so nothing is dropped before it is recorded
                pass
    finally:
        depth_sensor.stop()
        color_sensor.stop()
        depth_sensor.close()
        color_sensor.close()
        recorder.pause()
        del recorder  # the file is finalised when the recorder is destroyed
    time.sleep(0.05)
    return path


def record_views(frames: Sequence[MultiViewFrame], directory: str | Path, names: Sequence[str] | None = None,
                 serials: Sequence[str] | None = None, **kwargs) -> list[Path]:
    """One RealSense recording per camera of a sequence of multi-view frames (e.g. the simulated rig's).

    Camera i's recording is ``<directory>/<names[i]>.db3`` (names default to the cameras' names) with serial
    ``serials[i]`` (default ``"9000000000<i>"``), color as is, depth [m] as uint16 millimetres (what a RealSense
    records; 0 = no data), the camera's K. ``kwargs`` go to :func:`write_recording` (fps, start_ms, ...). The
    recordings are written in parallel, as each is paced in real time. Returns the paths in camera order.
    """
    from concurrent.futures import ThreadPoolExecutor

    cams = [v.camera for v in frames[0].views]
    names = list(names) if names is not None else [c.name for c in cams]
    serials = list(serials) if serials is not None else [f"9000000000{i}" for i in range(len(cams))]
    if len(names) != len(cams) or len(serials) != len(cams):
        raise ValueError(f"record_views: {len(cams)} cameras, {len(names)} names, {len(serials)} serials")

    def write(i: int) -> Path:
        colors = [f.views[i].color for f in frames]
        depths_mm = [np.clip(np.rint(f.views[i].depth * 1000.0), 0, 65535).astype(np.uint16) for f in frames]
        return write_recording(Path(directory) / f"{names[i]}.db3", colors, depths_mm, cams[i].K, serial=serials[i],
                               **kwargs)

    with ThreadPoolExecutor(max_workers=len(cams)) as pool:
        return list(pool.map(write, range(len(cams))))  # re-raises a writer's exception here
