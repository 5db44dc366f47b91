"""The simulated multi-camera rig: a MuJoCo tabletop world rendered headless by N RGB-D cameras with instance masks.

The world comes from a :class:`~vidyn_ros.rig.scenario.Scenario`. Each call to :meth:`SimRig.step` advances the
physics by one frame period (1/fps) and renders every camera: colour (uint8 RGB), depth (float32 metres along the
optical axis, 0 = no data, like RealSense aligned depth), and an instance mask (int32 object id, 0 = table /
background). Ground-truth object poses come with each frame for evaluation only.

MuJoCo renders through OSMesa on CPU (``MUJOCO_GL=osmesa``, set here when unset and no display is available) or EGL
on a GPU machine. Camera intrinsics are set exactly from the pinhole K via MuJoCo's ``focalpixel`` /
``principalpixel`` camera attributes; test/test_sim_rig.py checks that back-projected depth lands on the ground-truth
surfaces within millimetres.

Example::

    with SimRig(load_scenario("push"), seed=0, render_scale=0.25) as rig:
        rig.set_pusher_velocity([0.1, 0.0, 0.0])
        rf = rig.step()
        rf.frame.views[0].depth  # [120, 160] float32 metres
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from vidyn_ros.errors import ConfigError
from vidyn_ros.geometry import quat_wxyz_to_matrix
from vidyn_ros.rig.scenario import ObjectSpec, Scenario, load_scenario
from vidyn_ros.types import AppliedWrench, CameraFrame, CameraModel, MultiViewFrame, ObjectPose, RigFrame

__all__ = ["SimRig", "build_mjcf", "mujoco_principal_pixel"]

log = logging.getLogger(__name__)

_AUX_CAMERA = "vidyn_aux"  # a spare MuJoCo camera re-posed by render_only()
_PIXEL_PITCH = 1e-3  # sensor pixel size handed to MuJoCo [m]; only the ratio focal/pitch matters


def _ensure_gl_backend() -> None:
    # MuJoCo picks its GL backend at import; without a display GLFW fails, so default to OSMesa (CPU).
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "osmesa"


def mujoco_principal_pixel(cam: CameraModel) -> tuple[float, float]:
    """MuJoCo ``principalpixel`` for a pinhole K (OpenCV convention: pixel centres at integer coordinates).

    Measured (MuJoCo 3.x/4.0): the rendered principal point lands at pixel index ``(W - 1) / 2 - p_x`` horizontally
    and ``(H - 1) / 2 - p_y`` vertically, so ``p = ((W - 1) / 2 - cx, (H - 1) / 2 - cy)``.
    """
    return (cam.width - 1) / 2.0 - cam.cx, (cam.height - 1) / 2.0 - cam.cy


def _fmt(v: Sequence[float] | np.ndarray) -> str:
    return " ".join(f"{float(x):.9g}" for x in np.asarray(v).ravel())


def _camera_xml(cam: CameraModel) -> str:
    R = cam.T_world_cam[:3, :3]
    # MuJoCo cameras look along their -z with +y up; OpenCV looks along +z with +y down: flip y and z.
    xyaxes = np.concatenate([R[:, 0], -R[:, 1]])
    px, py = mujoco_principal_pixel(cam)
    return (
        f'<camera name={quoteattr(cam.name)} pos="{_fmt(cam.T_world_cam[:3, 3])}" xyaxes="{_fmt(xyaxes)}" '
        f'resolution="{cam.width} {cam.height}" '
        f'sensorsize="{_fmt([cam.width * _PIXEL_PITCH, cam.height * _PIXEL_PITCH])}" '
        f'focalpixel="{_fmt([cam.fx, cam.fy])}" principalpixel="{_fmt([px, py])}"/>'
    )


def _geom_xml(name: str, shape: str, size: Sequence[float], material: str, friction: Sequence[float],
              extra: str = "") -> str:
    # condim 6 adds rolling friction when asked for; 4 (sliding + torsional) keeps pushed blocks from spinning freely.
    condim = 6 if friction[2] > 0 else 4
    return (f'<geom name={quoteattr(name)} type="{shape}" size="{_fmt(size)}" material="{material}" '
            f'friction="{_fmt(friction)}" condim="{condim}" {extra}/>')


def build_mjcf(scn: Scenario, cameras: Sequence[CameraModel]) -> str:
    """The MuJoCo XML of a scenario, with the given (possibly rescaled) cameras."""
    w = max(c.width for c in cameras)
    h = max(c.height for c in cameras)
    t = scn.table
    shadow = "true" if scn.render.shadows else "false"
    # One checker texture holds 2x2 squares; on a plane with texuniform MuJoCo stretches one texture repeat over
    # 2 length units, so texrepeat = 1 / square gives squares of `square` metres (checked in the rendered images).
    rep = 1.0 / t.square
    if t.texture == "checker":
        tex = (f'<texture name="table_tex" type="2d" builtin="checker" width="512" height="512" '
               f'rgb1="{_fmt(t.color1)}" rgb2="{_fmt(t.color2)}" mark="random" random="0.03" markrgb="0.2 0.2 0.2"/>')
    elif t.texture == "noise":
        tex = (f'<texture name="table_tex" type="2d" builtin="flat" width="512" height="512" '
               f'rgb1="{_fmt(t.color1)}" rgb2="{_fmt(t.color2)}" mark="random" random="0.25" '
               f'markrgb="{_fmt(t.color2)}"/>')
    else:
        tex = ""
    table_mat = (f'<material name="table_mat" texture="table_tex" texuniform="true" texrepeat="{rep:.6g} {rep:.6g}" '
                 f'specular="0.1" reflectance="{0.15 if scn.render.reflections else 0.0}"/>' if tex else
                 f'<material name="table_mat" rgba="{_fmt(t.color1)} 1" specular="0.1"/>')
    mats = [table_mat]
    bodies = []
    textures = []
    for i, o in enumerate(scn.objects):
        tex_attr = ""
        if o.texture is not None:
            # a 2d texture on a box covers its top face once (no repeat): image right = body +x, image up = body +y
            textures.append(f'<texture name="tex{i + 1}" type="2d" file={quoteattr(str(o.texture))}/>')
            tex_attr = f' texture="tex{i + 1}"'
        mats.append(f'<material name="mat{i + 1}"{tex_attr} rgba="{_fmt(o.color)} 1" specular="0.3" shininess="0.3"/>')
        joint = "" if o.fixed else "<freejoint/>"
        bodies.append(
            f'<body name={quoteattr(o.name)} pos="{_fmt(o.position)}" quat="{_fmt(o.quat_wxyz)}">{joint}'
            + _geom_xml(o.name, o.shape, o.size, f"mat{i + 1}", o.friction,
                        f'mass="{o.mass:.9g}" solref="{_fmt(o.solref)}" solimp="{_fmt(o.solimp)}"')
            + "</body>"
        )
    if scn.pusher is not None:
        p = scn.pusher
        mats.append(f'<material name="mat_pusher" rgba="{_fmt(p.color)} 1" specular="0.3"/>')
        bodies.append(f'<body name="pusher" mocap="true" pos="{_fmt(p.position)}">'
                      + _geom_xml("pusher", p.shape, p.size, "mat_pusher", p.friction) + "</body>")
    cams = "\n    ".join(_camera_xml(c) for c in cameras)
    aux = f'<camera name="{_AUX_CAMERA}" pos="0 0 1" xyaxes="1 0 0 0 1 0"/>'
    bg = _fmt(scn.render.background)
    # Lights: ambient + diffuse on an upward-facing surface add up to ~0.9, below OpenGL's clamp at 1. Above it every
    # lit surface saturates to its flat texture colour (no shading), and MuJoCo's additive shadow pass washes out.
    return f"""<mujoco model={quoteattr(scn.name)}>
  <compiler angle="radian"/>
  <option timestep="{scn.physics_dt:.12g}" gravity="{_fmt(scn.gravity)}"/>
  <statistic extent="1" center="0 0 0"/>
  <visual>
    <global offwidth="{w}" offheight="{h}"/>
    <map znear="{scn.near:.6g}" zfar="{scn.far:.6g}"/>
    <headlight ambient="0.15 0.15 0.15" diffuse="0.1 0.1 0.1" specular="0.05 0.05 0.05"/>
    <quality shadowsize="2048" offsamples="{4 if scn.render.antialias else 0}"/>
    <rgba fog="{bg} 1" haze="{bg} 1"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="flat" rgb1="{bg}" rgb2="{bg}" width="32" height="32"/>
    {tex}
    {chr(10).join(textures)}
    {chr(10).join(mats)}
  </asset>
  <worldbody>
    <light name="key" directional="true" pos=".5 -.5 2" dir="-0.3 0.3 -1" diffuse=".45 .45 .45" castshadow="{shadow}"/>
    <light name="fill" directional="true" pos="-0.5 0.5 2" dir="0.3 -0.3 -1" diffuse=".15 .15 .15" castshadow="false"/>
    <light name="top" directional="true" pos="0 0 3" dir="0 0 -1" diffuse="0.1 0.1 0.1" castshadow="false"/>
    <geom name="table" type="plane" size="{_fmt(t.half_size)} 0.05" material="table_mat" friction="{_fmt(t.friction)}"/>
    {cams}
    {aux}
    {chr(10).join(bodies)}
  </worldbody>
</mujoco>
"""


class SimRig:
    """A MuJoCo tabletop world seen by the scenario's cameras.

    Args:
        scenario: a :class:`Scenario`, a shipped scenario name or a YAML path.
        seed: seeds the sampling of initial conditions within the scenario's ``randomize`` ranges.
        render_scale: image size factor (0.25 renders 640x480 cameras at 160x120); intrinsics scale accordingly.
        masks: return instance masks (free: ids are read from the same pass as depth).

    Attributes:
        cameras: the cameras as rendered (names from the scenario, K at the rendered resolution, T_world_cam).
        object_ids: [1..K] (+ K+1 for the pusher), object_names: id -> name, pusher_id: K+1 or None.
    """

    def __init__(self, scenario: Scenario | str, seed: int = 0, render_scale: float = 1.0, masks: bool = True):
        _ensure_gl_backend()
        import mujoco  # heavy: imported on use

        self._mj = mujoco
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        scn = self.scenario
        if render_scale <= 0:
            raise ValueError(f"render_scale must be > 0, got {render_scale}")
        self.render_scale = float(render_scale)
        self.masks = bool(masks)
        self.seed = int(seed)
        self.cameras: list[CameraModel] = [c if render_scale == 1.0 else c.scaled(render_scale) for c in scn.cameras]
        self.fps = float(scn.fps)
        self.n_frames = scn.n_frames
        self.frame_index = 0
        self.last_render_s = 0.0  # wall time of the last multi-camera render [s]

        try:
            self.model = mujoco.MjModel.from_xml_string(build_mjcf(scn, self.cameras))
        except ValueError as err:  # e.g. an unreadable texture image: still one line that names the file
            where = scn.source or scn.name
            raise ConfigError(f"{where}: MuJoCo cannot build this scenario: {' '.join(str(err).split())}") from None
        self.data = mujoco.MjData(self.model)
        m = self.model
        K = len(scn.objects)
        self.object_ids: list[int] = list(range(1, K + 1))
        self.object_names: dict[int, str] = {i + 1: o.name for i, o in enumerate(scn.objects)}
        self.object_shapes: dict[int, tuple[str, np.ndarray]] = {
            i + 1: (o.shape, o.size_array) for i, o in enumerate(scn.objects)
        }
        self._body_ids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, o.name) for o in scn.objects]
        self.pusher_id: int | None = None
        self._pusher_mocap = -1
        self._pusher_vel = np.zeros(3)
        self._warned_no_pusher = False
        if scn.pusher is not None:
            self.pusher_id = K + 1
            self.object_ids.append(K + 1)
            self.object_names[K + 1] = "pusher"
            self.object_shapes[K + 1] = (scn.pusher.shape, np.asarray(scn.pusher.size, dtype=np.float64))
            bid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "pusher")
            self._body_ids.append(bid)
            self._pusher_mocap = int(m.body_mocapid[bid])
        # geom id -> object id (0 = table / anything else); index shifted by one so that -1 (background) maps to 0.
        self._geom_to_obj = np.zeros(m.ngeom + 1, dtype=np.int32)
        for oid, bid in zip(self.object_ids, self._body_ids, strict=True):
            for g in range(m.ngeom):
                if m.geom_bodyid[g] == bid:
                    self._geom_to_obj[g + 1] = oid
        self._cam_ids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, c.name) for c in self.cameras]
        self._aux_cam = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, _AUX_CAMERA)
        self._renderers: dict[tuple[int, int], _GLRenderer] = {}
        self._closed = False
        # known external forces (scenario events), in physics steps: (object index, first step, steps, force)
        self._events = [(e.object_index, round(e.time_s / scn.physics_dt), max(1, round(e.duration_s / scn.physics_dt)),
                         np.asarray(e.force, dtype=np.float64)) for e in scn.events]
        self._applied: tuple | None = None  # (object index, force) of the event acting now
        self._wrench_log: list[AppliedWrench] = []
        self.reset(seed)

    # ---------------------------------------------------------------------------------------------------------------
    # lifecycle

    def __enter__(self) -> SimRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the GL contexts (OSMesa complains at exit if renderers are left open)."""
        for r in self._renderers.values():
            try:
                r.close()
            except Exception as err:  # closing must not mask the caller's exception
                log.debug("renderer close failed: %s", err)
        self._renderers.clear()
        self._closed = True

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    # ---------------------------------------------------------------------------------------------------------------
    # state

    @property
    def time_s(self) -> float:
        """Simulated time of the current state [s] (frame_index / fps)."""
        return self.frame_index / self.fps

    @property
    def stamp_ns(self) -> int:
        return round(self.frame_index * 1e9 / self.fps)

    def reset(self, seed: int | None = None) -> None:
        """Back to the initial state, re-sampling the randomised initial conditions with ``seed``."""
        mj = self._mj
        if seed is not None:
            self.seed = int(seed)
        m, d = self.model, self.data
        mj.mj_resetData(m, d)
        rng = np.random.default_rng(self.seed)
        for o, bid in zip(self.scenario.objects, self._body_ids, strict=False):
            pos, quat, vel, ang = _sample_initial_state(o, rng)
            if o.fixed:  # no joint: the pose lives in the model
                m.body_pos[bid] = pos
                m.body_quat[bid] = quat
                continue
            jnt = m.body_jntadr[bid]
            qa, va = m.jnt_qposadr[jnt], m.jnt_dofadr[jnt]
            d.qpos[qa:qa + 3] = pos
            d.qpos[qa + 3:qa + 7] = quat
            d.qvel[va:va + 3] = vel
            # free-joint angular velocity is expressed in the body frame
            d.qvel[va + 3:va + 6] = quat_wxyz_to_matrix(quat).T @ ang
        if self._pusher_mocap >= 0:
            d.mocap_pos[self._pusher_mocap] = self.scenario.pusher.position  # type: ignore[union-attr]
            d.mocap_quat[self._pusher_mocap] = (1.0, 0.0, 0.0, 0.0)
        self._pusher_vel = np.zeros(3)
        self.frame_index = 0
        self._applied = None
        self._wrench_log = []
        d.xfrc_applied[:] = 0.0
        mj.mj_forward(m, d)
        self._warn_initial_overlaps()

    def _warn_initial_overlaps(self, tolerance: float = 0.002) -> None:
        """Log objects that start interpenetrating (a typo in a position, or randomisation ranges that overlap):
        MuJoCo resolves them with a jump that looks like an explosion."""
        mj = self._mj
        m, d = self.model, self.data
        worst: dict[tuple[int, int], float] = {}
        for c in d.contact[: d.ncon]:
            if c.dist < -tolerance:
                key = (int(c.geom1), int(c.geom2))
                worst[key] = min(worst.get(key, 0.0), float(c.dist))
        for (g1, g2), dist in worst.items():
            a = mj.mj_id2name(m, mj.mjtObj.mjOBJ_GEOM, g1) or f"geom {g1}"
            b = mj.mj_id2name(m, mj.mjtObj.mjOBJ_GEOM, g2) or f"geom {g2}"
            log.warning("scenario %r, seed %d: %s and %s start %.1f mm inside each other", self.scenario.name,
                        self.seed, a, b, -1000 * dist)

    def set_pusher_velocity(self, v_xyz: Sequence[float] | np.ndarray) -> None:
        """Command the kinematic pusher's velocity (world frame, m/s), held until the next command.

        The norm is clamped to the scenario's ``pusher.max_speed`` and the pusher stays inside ``pusher.workspace``
        (xy) and never below its initial height. Without a pusher this is a no-op (warns once).
        """
        if self._pusher_mocap < 0:
            if not self._warned_no_pusher:
                log.warning("scenario %r has no pusher: velocity commands are ignored", self.scenario.name)
                self._warned_no_pusher = True
            return
        v = np.asarray(v_xyz, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(v)):
            log.warning("ignoring non-finite pusher velocity %s", v)
            return
        speed = float(np.linalg.norm(v))
        vmax = self.scenario.pusher.max_speed  # type: ignore[union-attr]
        self._pusher_vel = v * (vmax / speed) if speed > vmax else v

    def set_pusher_position(self, xyz: Sequence[float] | np.ndarray) -> None:
        """Place the kinematic pusher (world frame, m; clamped to the workspace and its minimum height) without
        stepping, e.g. to stage a scripted push when generating reachable goals. No-op without a pusher."""
        if self._pusher_mocap < 0:
            return
        p = self.scenario.pusher
        assert p is not None
        pos = np.asarray(xyz, dtype=np.float64).reshape(3).copy()
        x0, y0, x1, y1 = p.workspace
        pos[0] = min(max(pos[0], x0), x1)
        pos[1] = min(max(pos[1], y0), y1)
        pos[2] = max(pos[2], p.position[2])
        self.data.mocap_pos[self._pusher_mocap] = pos
        self._mj.mj_forward(self.model, self.data)

    @property
    def pusher_velocity(self) -> np.ndarray:
        return self._pusher_vel.copy()

    def step(self, render: bool = True) -> RigFrame | None:
        """Advance physics by one frame period (1/fps) and render all cameras (or return None if ``render=False``)."""
        mj = self._mj
        m, d = self.model, self.data
        n = self.scenario.substeps
        for i in range(n):
            if self._pusher_mocap >= 0:
                self._move_pusher(m.opt.timestep)
            if self._events:
                self._apply_events(self.frame_index * n + i)
            mj.mj_step(m, d)
        # mj_step leaves positions (xpos, geom_xpos) one step behind qpos: recompute so renders and poses agree.
        mj.mj_forward(m, d)
        self.frame_index += 1
        if not render:
            return None
        rf = self.observe()
        rf.wrenches, self._wrench_log = self._wrench_log, []
        return rf

    def _apply_events(self, step: int) -> None:
        """Set MuJoCo's external force for physics step ``step`` from the scenario's events (one actuator: events do
        not overlap); log changes as wrenches about the world origin (the line of action through the object's centre
        of mass at the event's start)."""
        active = [(k, f) for k, first, steps, f in self._events if first <= step < first + steps]
        key = (active[0][0], tuple(active[0][1])) if active else None
        if key == self._applied:
            return
        self.data.xfrc_applied[:, :3] = 0.0
        force, torque = (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
        if active:
            k, f = active[0]
            bid = self._body_ids[k]
            self.data.xfrc_applied[bid, :3] = f  # applied at the body's centre of mass
            com = self.data.xipos[bid]
            force, torque = tuple(float(v) for v in f), tuple(float(v) for v in np.cross(com, f))
        self._wrench_log.append(AppliedWrench(stamp_ns=round(step * self.scenario.physics_dt * 1e9), force=force,
                                              torque=torque))
        self._applied = key

    def frames(self) -> Iterator[RigFrame]:
        """The whole scenario: the initial frame, then one per step until ``n_frames`` frames have been yielded."""
        yield self.observe()
        for _ in range(self.n_frames - 1):
            yield self.step()  # type: ignore[misc]

    def object_poses(self) -> list[ObjectPose]:
        """Ground-truth poses and velocities of all objects (pusher last), world frame. Evaluation only."""
        mj = self._mj
        out = []
        res = np.zeros(6)
        for oid, bid in zip(self.object_ids, self._body_ids, strict=True):
            if oid == self.pusher_id:
                lin, ang = self._pusher_vel.copy(), np.zeros(3)
            else:
                mj.mj_objectVelocity(self.model, self.data, mj.mjtObj.mjOBJ_BODY, bid, res, 0)
                ang, lin = res[:3].copy(), res[3:].copy()
            out.append(ObjectPose(object_id=oid, position=self.data.xpos[bid].copy(),
                                  quat_wxyz=self.data.xquat[bid].copy(), linear_velocity=lin, angular_velocity=ang))
        return out

    def get_state(self) -> np.ndarray:
        """The physics state plus pusher command and frame index, for save / restore ([S] float64).

        MuJoCo's mjSTATE_INTEGRATION (not just FULLPHYSICS): it includes the solver's warm start, without which a
        restored toppling stack diverges from the original run within a few frames.
        """
        mj = self._mj
        spec = mj.mjtState.mjSTATE_INTEGRATION
        st = np.empty(mj.mj_stateSize(self.model, spec))
        mj.mj_getState(self.model, self.data, st, spec)
        return np.concatenate([st, self._pusher_vel, [self.frame_index]])

    def set_state(self, state: np.ndarray) -> None:
        mj = self._mj
        spec = mj.mjtState.mjSTATE_INTEGRATION
        st = np.asarray(state, dtype=np.float64)
        mj.mj_setState(self.model, self.data, st[:-4], spec)
        self._pusher_vel = st[-4:-1].copy()
        self.frame_index = int(st[-1])
        if self._events:  # the external force follows the schedule: recompute the one active at this time
            self._applied = ()
            self._apply_events(self.frame_index * self.scenario.substeps)
            self._wrench_log = []
        mj.mj_forward(self.model, self.data)

    # ---------------------------------------------------------------------------------------------------------------
    # rendering

    def observe(self) -> RigFrame:
        """Render the current state from every camera, with ground-truth poses."""
        t0 = time.perf_counter()
        views = [self._render(self._cam_ids[i], cam, self.masks) for i, cam in enumerate(self.cameras)]
        self.last_render_s = time.perf_counter() - t0
        return RigFrame(frame=MultiViewFrame(stamp_ns=self.stamp_ns, views=views), object_poses=self.object_poses())

    def render_only(self, cameras: Sequence[CameraModel] | None = None, masks: bool | None = None) -> MultiViewFrame:
        """Re-render the current state (no physics step) from other cameras, e.g. for calibration tests.

        Each camera may have any pose, pinhole K and size up to the largest scenario camera's rendered size
        (the offscreen buffer); distortion is ignored.
        """
        masks = self.masks if masks is None else masks
        if cameras is None:
            return self.observe().frame
        mj = self._mj
        m, d = self.model, self.data
        wmax, hmax = m.vis.global_.offwidth, m.vis.global_.offheight
        views = []
        for cam in cameras:
            if cam.width > wmax or cam.height > hmax:
                raise ValueError(f"camera {cam.name}: {cam.width}x{cam.height} exceeds the offscreen buffer "
                                 f"{wmax}x{hmax}")
            c = self._aux_cam
            R = cam.T_world_cam[:3, :3] @ np.diag([1.0, -1.0, -1.0])  # OpenCV -> MuJoCo camera axes
            d.cam_xpos[c] = cam.T_world_cam[:3, 3]
            d.cam_xmat[c] = R.ravel()
            m.cam_resolution[c] = (cam.width, cam.height)
            m.cam_sensorsize[c] = (cam.width * _PIXEL_PITCH, cam.height * _PIXEL_PITCH)
            px, py = mujoco_principal_pixel(cam)
            m.cam_intrinsic[c] = np.array([cam.fx, cam.fy, px, py]) * _PIXEL_PITCH
            views.append(self._render(c, cam, masks))
        # the next mj_forward recomputes cam_xpos from the model; keep the aux camera harmless
        mj.mj_kinematics(m, d)
        mj.mj_camlight(m, d)
        return MultiViewFrame(stamp_ns=self.stamp_ns, views=views)

    def _renderer(self, height: int, width: int) -> _GLRenderer:
        key = (height, width)
        r = self._renderers.get(key)
        if r is None:
            r = _GLRenderer(self._mj, self.model, height, width, self.scenario.render.shadows,
                            self.scenario.render.reflections)
            self._renderers[key] = r
        return r

    def _render(self, cam_id: int, cam: CameraModel, masks: bool) -> CameraFrame:
        if self._closed:
            raise RuntimeError("SimRig is closed")
        r = self._renderer(cam.height, cam.width)
        color, depth, geom_ids = r.render(self.data, cam_id)
        # The far plane is "nothing there": RealSense reports 0 = no data.
        scn = self.scenario
        depth[depth >= scn.far * (1.0 - 1e-4)] = 0.0
        if scn.depth_noise_at_1m > 0:
            # stereo depth error grows with z^2; seeded per (rig seed, frame, camera) so re-renders are reproducible
            rng = np.random.default_rng([self.seed, self.frame_index, cam_id])
            valid = depth > 0
            z = depth[valid]
            depth[valid] = z + (scn.depth_noise_at_1m * z * z * rng.standard_normal(z.shape)).astype(np.float32)
        if scn.min_depth > 0:
            depth[depth < scn.min_depth] = 0.0
        mask = self._geom_to_obj[geom_ids + 1] if masks else None
        return CameraFrame(camera=cam, stamp_ns=self.stamp_ns, color=color, depth=depth, mask=mask)

    def _move_pusher(self, dt: float) -> None:
        p = self.scenario.pusher
        assert p is not None
        pos = self.data.mocap_pos[self._pusher_mocap] + self._pusher_vel * dt
        x0, y0, x1, y1 = p.workspace
        pos[0] = min(max(pos[0], x0), x1)
        pos[1] = min(max(pos[1], y0), y1)
        pos[2] = max(pos[2], p.position[2])
        self.data.mocap_pos[self._pusher_mocap] = pos


class _GLRenderer:
    """Two offscreen passes per camera: a lit colour pass, and a flat id-colour pass read as depth + geom ids.

    mujoco.Renderer needs three passes for colour, depth and segmentation (its depth pass already renders in
    segmentation mode, for precision); reading depth and ids from the same pass saves a third of the render time.
    Mirrors mujoco.rendering.classic.renderer.Renderer (MuJoCo 3.x / 4.0): reverse-Z depth map, vertical flip.
    """

    def __init__(self, mj, model, height: int, width: int, shadows: bool, reflections: bool):
        self._mj = mj
        self.model = model
        self.height, self.width = height, width
        self._con = None
        self._gl = mj.GLContext(width, height)
        try:
            self._gl.make_current()
            self._con = mj.MjrContext(model, mj.mjtFontScale.mjFONTSCALE_150)
        except BaseException:
            self._gl.free()  # the GL context would otherwise outlive this failed renderer
            raise
        mj.mjr_setBuffer(mj.mjtFramebuffer.mjFB_OFFSCREEN, self._con)
        self._con.readDepthMap = mj.mjtDepthMap.mjDEPTH_ZEROFAR
        self.scene = mj.MjvScene(model, maxgeom=10000)
        self.scene.flags[mj.mjtRndFlag.mjRND_SHADOW] = bool(shadows)
        self.scene.flags[mj.mjtRndFlag.mjRND_REFLECTION] = bool(reflections)
        self.scene.flags[mj.mjtRndFlag.mjRND_SKYBOX] = True
        self._opt = mj.MjvOption()
        self._cam = mj.MjvCamera()
        self._cam.type = mj.mjtCamera.mjCAMERA_FIXED
        self._rect = mj.MjrRect(0, 0, width, height)
        self._rgb = np.empty((height, width, 3), np.uint8)
        self._ids = np.empty((height, width, 3), np.uint8)
        self._depth = np.empty((height, width), np.float32)

    def render(self, data, cam_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> color [H,W,3] uint8, depth [H,W] float32 metres along the optical axis, geom id [H,W] int (-1 = none)."""
        mj = self._mj
        scn = self.scene
        self._gl.make_current()
        self._cam.fixedcamid = cam_id
        mj.mjv_updateScene(self.model, data, self._opt, None, self._cam, mj.mjtCatBit.mjCAT_ALL, scn)
        mj.mjr_render(self._rect, scn, self._con)
        mj.mjr_readPixels(self._rgb, None, self._rect, self._con)
        color = np.flipud(self._rgb).copy()
        flags = scn.flags.copy()
        try:
            scn.flags[mj.mjtRndFlag.mjRND_SEGMENT] = True
            scn.flags[mj.mjtRndFlag.mjRND_IDCOLOR] = True
            mj.mjr_render(self._rect, scn, self._con)
            mj.mjr_readPixels(self._ids, self._depth, self._rect, self._con)
        finally:
            np.copyto(scn.flags, flags)
        # depth buffer (reverse Z, [0, 1]) -> metric z, in float64 as mujoco.Renderer does for precision
        near = np.float32(self.model.vis.map.znear * self.model.stat.extent)
        far = np.float32(self.model.vis.map.zfar * self.model.stat.extent)
        c = np.float32(-0.5) * (-(far + near) / (far - near)) - np.float32(0.5)
        d = np.float32(-0.5) * (-(np.float32(2) * far * near) / (far - near))
        depth = np.flipud((d / (self._depth.astype(np.float64) + c)).astype(np.float32)).copy()
        # id colour -> scene geom index + 1 (0 = background) -> model geom id
        seg = np.flipud(self._ids).astype(np.int32)
        segid = seg[..., 0] + seg[..., 1] * 256 + seg[..., 2] * 65536
        lut = np.full(scn.ngeom + 1, -1, dtype=np.int64)
        for g in scn.geoms[: scn.ngeom]:
            if g.segid != -1 and g.objtype == mj.mjtObj.mjOBJ_GEOM:
                lut[g.segid + 1] = g.objid
        return color, depth, lut[np.clip(segid, 0, scn.ngeom)]

    def close(self) -> None:
        if self._con is not None:
            with self._gl.as_current():
                self._con.free()
            self._con = None
        if self._gl is not None:
            self._gl.free()
            self._gl = None


def _sample_initial_state(o: ObjectSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                             np.ndarray]:
    """Initial position, quaternion (wxyz), linear and angular velocity (world) with the object's randomisation.

    Always draws the same number of random numbers per object so that one object's ranges do not shift the others.
    """
    rz = o.randomize
    u = rng.uniform(-1.0, 1.0, size=7)
    pos = np.asarray(o.position) + u[0:3] * np.asarray(rz.position)
    yaw = math.radians(rz.yaw_deg) * u[3]
    q_yaw = np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])
    quat = _quat_mul(q_yaw, np.asarray(o.quat_wxyz))
    vel = np.asarray(o.velocity) + u[4:7] * np.asarray(rz.velocity)
    # the initial spin turns with the yaw so a rolling ball keeps rolling along its (rotated) velocity
    ang = quat_wxyz_to_matrix(q_yaw) @ np.asarray(o.angular_velocity)
    return pos, quat / np.linalg.norm(quat), vel, ang


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ])

