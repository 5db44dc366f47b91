"""Scenario files for the simulated rig: a tabletop world with rigid objects, an optional pusher and a camera ring.

A scenario is a YAML file (schema in docs/scenarios.md) parsed into frozen dataclasses. Validation is strict:
unknown keys, wrong types and impossible values raise :class:`~vidyn_ros.errors.ConfigError` with a one-line message
naming the file and the key path, e.g. ``config/scenarios/x.yaml: objects[2].size: expected 3 numbers for box, got 2``.

Shipped scenarios live in ``config/scenarios/<name>.yaml``; :func:`load_scenario` takes such a name or a path.
No MuJoCo here: the simulator (:mod:`vidyn_ros.rig.sim`) turns a :class:`Scenario` into a world.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vidyn_ros.errors import ConfigError
from vidyn_ros.geometry import look_at, make_se3, quat_wxyz_to_matrix
from vidyn_ros.paths import config_dir
from vidyn_ros.types import CameraModel

__all__ = [
    "SHAPE_SIZE_LEN",
    "CameraRing",
    "EventSpec",
    "ObjectSpec",
    "PusherSpec",
    "Randomize",
    "RenderSpec",
    "Scenario",
    "TableSpec",
    "load_scenario",
    "parse_scenario",
    "restitution_solref",
    "scenario_names",
    "scenario_path",
    "shape_sdf",
    "surface_distance",
]

# Number of size parameters per shape, MuJoCo convention: box = half-extents (x, y, z); sphere = radius;
# cylinder / capsule = (radius, half-length of the cylindrical part along the body z axis).
SHAPE_SIZE_LEN = {"box": 3, "sphere": 1, "cylinder": 2, "capsule": 2}

# Distinct default colours (RGB in [0, 1]) assigned by object index when a scenario gives none.
PALETTE = [
    (0.90, 0.10, 0.10), (0.10, 0.45, 0.90), (0.10, 0.75, 0.20), (0.95, 0.75, 0.05), (0.60, 0.20, 0.80),
    (0.95, 0.45, 0.05), (0.05, 0.80, 0.80), (0.90, 0.20, 0.60), (0.55, 0.35, 0.15), (0.40, 0.60, 0.10),
    (0.20, 0.20, 0.55), (0.75, 0.75, 0.75),
]
NAMED_COLORS = {
    "red": (0.90, 0.10, 0.10), "green": (0.10, 0.75, 0.20), "blue": (0.10, 0.45, 0.90),
    "yellow": (0.95, 0.75, 0.05), "orange": (0.95, 0.45, 0.05), "purple": (0.60, 0.20, 0.80),
    "cyan": (0.05, 0.80, 0.80), "magenta": (0.90, 0.20, 0.60), "brown": (0.55, 0.35, 0.15),
    "white": (0.95, 0.95, 0.95), "gray": (0.50, 0.50, 0.50), "grey": (0.50, 0.50, 0.50), "black": (0.08, 0.08, 0.08),
    "pink": (1.00, 0.60, 0.70),
}

# D455-like colour stream at 640x480 (aligned depth uses the colour intrinsics).
D455_640x480 = {"width": 640, "height": 480, "fx": 386.0, "fy": 386.0, "cx": 320.0, "cy": 240.0}


@dataclass(frozen=True)
class Randomize:
    """Uniform perturbations of an object's initial state, sampled with the rig's seed (all +- half-ranges)."""

    position: tuple[float, float, float] = (0.0, 0.0, 0.0)  # [m] per world axis
    yaw_deg: float = 0.0  # rotation about world z [deg]
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)  # [m/s] per world axis


@dataclass(frozen=True)
class ObjectSpec:
    """One rigid object. Its id in masks and poses is its 1-based index in the scenario's ``objects`` list."""

    name: str
    shape: str  # box | sphere | cylinder | capsule
    size: tuple[float, ...]  # MuJoCo size parameters, see SHAPE_SIZE_LEN [m]
    mass: float  # [kg]
    color: tuple[float, float, float]  # RGB in [0, 1]
    position: tuple[float, float, float]  # initial body origin (= shape centre) in world [m]
    quat_wxyz: tuple[float, float, float, float]  # initial orientation
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)  # initial linear velocity [m/s]
    angular_velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)  # initial angular velocity, world axes [rad/s]
    friction: tuple[float, float, float] = (0.8, 0.005, 0.0001)  # sliding, torsional, rolling (MuJoCo)
    # contact time constant [s] and damping ratio, or (-stiffness, -damping); from `restitution` when that is given
    solref: tuple[float, float] = (0.01, 1.0)
    solimp: tuple[float, float, float, float, float] = (0.95, 0.99, 0.001, 0.5, 2.0)  # MuJoCo impedance
    randomize: Randomize = field(default_factory=Randomize)
    fixed: bool = False  # welded to the world (a calibration board, an obstacle): never moves, still has an id
    texture: Path | None = None  # PNG stretched over a box's top (+z) face, image up = body +y (see docs)

    @property
    def size_array(self) -> np.ndarray:
        return np.asarray(self.size, dtype=np.float64)


@dataclass(frozen=True)
class PusherSpec:
    """A kinematic pusher (MuJoCo mocap body) moved by velocity commands; it is the last object (id K+1)."""

    shape: str = "cylinder"
    size: tuple[float, ...] = (0.015, 0.04)
    position: tuple[float, float, float] = (0.0, 0.0, 0.042)  # initial centre [m]
    color: tuple[float, float, float] = (0.15, 0.15, 0.15)
    max_speed: float = 0.5  # commands are clamped to this norm [m/s]
    friction: tuple[float, float, float] = (0.5, 0.005, 0.0001)
    # The pusher stays inside this xy box [m] (x_min, y_min, x_max, y_max): a command pushing it out is clipped.
    workspace: tuple[float, float, float, float] = (-0.5, -0.5, 0.5, 0.5)


@dataclass(frozen=True)
class EventSpec:
    """A known external force on an object's centre of mass over an interval (an impulse: one physics step), applied
    by one actuator (events do not overlap in time).

    Known actuation makes mass identifiable (a pusher at fixed speed moves any mass the same way; a known force
    does not): see docs/physics.md. Times are snapped to physics steps when the rig runs.
    """

    object_index: int  # 0-based index into Scenario.objects (object id = index + 1)
    time_s: float  # start [s] of simulated time
    force: tuple[float, float, float]  # world frame [N]
    duration_s: float  # [s]

    @property
    def impulse(self) -> tuple[float, float, float]:
        return tuple(f * self.duration_s for f in self.force)  # type: ignore[return-value]


@dataclass(frozen=True)
class TableSpec:
    """The table: the world z = 0 plane, textured so photometric methods and calibration have features."""

    half_size: tuple[float, float] = (0.6, 0.6)  # visible extent [m]; collisions use the infinite plane
    texture: str = "checker"  # checker | noise | plain
    square: float = 0.05  # checker square size [m]
    color1: tuple[float, float, float] = (0.80, 0.78, 0.72)
    color2: tuple[float, float, float] = (0.55, 0.52, 0.48)
    friction: tuple[float, float, float] = (0.8, 0.005, 0.0001)


@dataclass(frozen=True)
class RenderSpec:
    shadows: bool = False  # shadows cost ~3x render time on CPU (OSMesa)
    reflections: bool = False
    # 4x multisampled colour (smooth edges). Off by default: on OSMesa it makes a 640x480 colour pass ~5x slower, and
    # without it colour edges coincide pixel for pixel with the mask and depth edges.
    antialias: bool = False
    background: tuple[float, float, float] = (0.25, 0.28, 0.32)  # RGB seen where nothing is (depth there = 0)


@dataclass(frozen=True)
class CameraRing:
    """How the cameras were placed when given as a ring (kept for documentation and the docs generator)."""

    count: int
    radius: float
    height: float
    look_at: tuple[float, float, float]
    start_deg: float


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario file. ``cameras`` are full-resolution camera models (names cam0..camN-1 by default)."""

    name: str
    description: str
    duration_s: float
    fps: float
    physics_dt: float  # effective step: the largest dt <= physics.dt with an integer number of steps per frame [s]
    gravity: tuple[float, float, float]
    table: TableSpec
    objects: tuple[ObjectSpec, ...]
    pusher: PusherSpec | None
    cameras: tuple[CameraModel, ...]
    render: RenderSpec
    near: float = 0.05  # renderer near plane [m]
    far: float = 6.0  # depth beyond this is "no data" (0) [m]
    min_depth: float = 0.0  # depth closer than this is "no data" (0), like a real sensor's minimum range [m]
    depth_noise_at_1m: float = 0.0  # depth noise std at 1 m [m], growing with z^2 (stereo-like); 0 = exact depth
    ring: CameraRing | None = None
    source: Path | None = None  # the YAML file it came from
    events: tuple[EventSpec, ...] = ()  # known forces / impulses on objects (actuation, published by the rig)

    @property
    def n_frames(self) -> int:
        return round(self.duration_s * self.fps)

    @property
    def substeps(self) -> int:
        """Physics steps per rendered frame."""
        return round(1.0 / (self.fps * self.physics_dt))

    @property
    def object_names(self) -> list[str]:
        return [o.name for o in self.objects]


# ---------------------------------------------------------------------------------------------------------------------
# Loading


def scenario_names() -> list[str]:
    """Names of the shipped scenarios (``config/scenarios/*.yaml``), sorted."""
    d = config_dir() / "scenarios"
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def scenario_path(name_or_path: str | Path) -> Path:
    """Resolve a shipped scenario name (``push``) or a path to a YAML file. Raises ConfigError when neither exists."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.parent != Path(".") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"{p}: scenario file not found")
        return p
    shipped = config_dir() / "scenarios" / f"{p.name}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"{name_or_path}: no such scenario file or shipped scenario "
                      f"(shipped: {', '.join(scenario_names())})")


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load and validate a scenario from a shipped name (``"push"``) or a YAML path."""
    path = scenario_path(name_or_path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read scenario ({err.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_scenario(doc, source=path, default_name=path.stem)


def parse_scenario(doc: Any, source: Path | str | None = None, default_name: str = "scenario") -> Scenario:
    """Validate a scenario given as a parsed YAML document (dict). ``source`` names the file in error messages."""
    src = Path(source) if source is not None else None
    r = _Reader(str(src) if src is not None else "<scenario>", src.parent if src is not None else None)
    top = r.mapping(doc, "", required=("objects", "cameras"),
                    optional=("name", "description", "duration_s", "fps", "physics", "table", "pusher", "render",
                              "events"))
    name = r.string(top, "name", "", default=default_name)
    description = r.string(top, "description", "", default="")
    duration_s = r.number(top, "duration_s", "", default=5.0, low=0.0, low_open=True)
    fps = r.number(top, "fps", "", default=30.0, low=0.0, low_open=True, high=1000.0)

    physics = r.mapping(top.get("physics", {}), "physics", optional=("dt", "gravity"))
    dt_max = r.number(physics, "dt", "physics", default=0.002, low=0.0, low_open=True, high=0.05)
    gravity = r.vector(physics, "gravity", "physics", 3, default=(0.0, 0.0, -9.81))
    frame_dt = 1.0 / fps
    if dt_max > frame_dt:
        raise ConfigError(f"{r.file}: physics.dt: {dt_max} s is longer than one frame (1/fps = {frame_dt:.4f} s)")
    substeps = math.ceil(frame_dt / dt_max - 1e-9)
    physics_dt = frame_dt / substeps

    table = _parse_table(r, top.get("table", {}))
    render = _parse_render(r, top.get("render", {}))

    objs_doc = top["objects"]
    if not isinstance(objs_doc, list) or not objs_doc:
        raise ConfigError(f"{r.file}: objects: expected a non-empty list of objects, got {_describe(objs_doc)}")
    objects = tuple(_parse_object(r, o, i) for i, o in enumerate(objs_doc))
    names = [o.name for o in objects]
    for i, n in enumerate(names):
        if n in ("pusher", "table"):
            raise ConfigError(f"{r.file}: objects[{i}].name: {n!r} is reserved (the {n})")
        if n in names[:i]:
            raise ConfigError(f"{r.file}: objects[{i}].name: duplicate object name {n!r}")

    pusher = None
    if top.get("pusher") is not None:
        pusher = _parse_pusher(r, top["pusher"])

    cameras, near, far, min_depth, noise, ring = _parse_cameras(r, top["cameras"])
    events = _parse_events(r, top.get("events", []), objects, duration_s, physics_dt)
    return Scenario(
        name=name, description=description, duration_s=duration_s, fps=fps, physics_dt=physics_dt,
        gravity=gravity, table=table, objects=objects, pusher=pusher, cameras=tuple(cameras), render=render,
        near=near, far=far, min_depth=min_depth, depth_noise_at_1m=noise, ring=ring, source=src, events=events,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Sections


def _parse_table(r: _Reader, doc: Any) -> TableSpec:
    d = r.mapping(doc, "table", optional=("half_size", "texture", "square", "color1", "color2", "friction"))
    dflt = TableSpec()
    texture = r.string(d, "texture", "table", default=dflt.texture, choices=("checker", "noise", "plain"))
    return TableSpec(
        half_size=r.vector(d, "half_size", "table", 2, default=dflt.half_size, low=0.01),
        texture=texture,
        square=r.number(d, "square", "table", default=dflt.square, low=0.001, high=1.0),
        color1=r.color(d, "color1", "table", default=dflt.color1),
        color2=r.color(d, "color2", "table", default=dflt.color2),
        friction=r.friction(d, "friction", "table", default=dflt.friction),
    )


def _parse_render(r: _Reader, doc: Any) -> RenderSpec:
    d = r.mapping(doc, "render", optional=("shadows", "reflections", "antialias", "background"))
    dflt = RenderSpec()
    return RenderSpec(
        shadows=r.boolean(d, "shadows", "render", default=dflt.shadows),
        reflections=r.boolean(d, "reflections", "render", default=dflt.reflections),
        antialias=r.boolean(d, "antialias", "render", default=dflt.antialias),
        background=r.color(d, "background", "render", default=dflt.background),
    )


_OBJECT_KEYS = ("name", "shape", "size", "mass", "color", "position", "rpy_deg", "quat_wxyz", "velocity",
                "angular_velocity", "friction", "solref", "solimp", "restitution", "randomize", "fixed", "texture")

# Contact stiffness used with `restitution` (MuJoCo direct solref, mass-normalised [1/s^2]): stiff enough that a ball
# hitting the table at 2 m/s sinks ~6 mm at most, soft enough to stay stable at the default 2 ms step.
RESTITUTION_STIFFNESS = 1.0e5


def restitution_solref(e: float, stiffness: float = RESTITUTION_STIFFNESS) -> tuple[float, float]:
    """MuJoCo direct solref (-stiffness, -damping) whose spring-damper contact has coefficient of restitution ``e``.

    A damped spring with damping ratio z rebounds with e = exp(-z pi / sqrt(1 - z^2)), so z = -ln e / sqrt(pi^2 +
    ln^2 e) and damping = 2 z sqrt(stiffness). Measured bounce of a dropped sphere: within 0.05 of ``e``.
    """
    if e <= 0:
        return (-stiffness, -2.0 * math.sqrt(stiffness))  # critically damped: no bounce
    ln = math.log(e)
    zeta = -ln / math.sqrt(math.pi**2 + ln * ln)
    return (-stiffness, -2.0 * zeta * math.sqrt(stiffness))


def _parse_object(r: _Reader, doc: Any, i: int) -> ObjectSpec:
    where = f"objects[{i}]"
    d = r.mapping(doc, where, required=("shape", "size", "position"), optional=_OBJECT_KEYS)
    shape, size = _shape_and_size(r, d, where)
    dflt = ObjectSpec(name="", shape="box", size=(0.1, 0.1, 0.1), mass=1.0, color=(0, 0, 0), position=(0, 0, 0),
                      quat_wxyz=(1, 0, 0, 0))
    texture = None
    if "texture" in d:
        texture = r.base_dir / r.string(d, "texture", where)
        if texture.suffix.lower() != ".png":
            raise ConfigError(f"{r.file}: {where}.texture: expected a .png image, got {d['texture']!r}")
        if not texture.is_file():
            raise ConfigError(f"{r.file}: {where}.texture: image file not found: {texture}")
        texture = texture.resolve()
    return ObjectSpec(
        fixed=r.boolean(d, "fixed", where, default=False),
        texture=texture,
        name=r.string(d, "name", where, default=f"obj{i + 1}"),
        shape=shape,
        size=size,
        mass=r.number(d, "mass", where, default=0.1, low=0.0, low_open=True),
        # a texture is shown in its own colours unless a tint is asked for
        color=r.color(d, "color", where, default=(1.0, 1.0, 1.0) if texture else PALETTE[i % len(PALETTE)]),
        position=r.vector(d, "position", where, 3),
        quat_wxyz=_orientation(r, d, where),
        velocity=r.vector(d, "velocity", where, 3, default=(0.0, 0.0, 0.0)),
        angular_velocity=r.vector(d, "angular_velocity", where, 3, default=(0.0, 0.0, 0.0)),
        friction=r.friction(d, "friction", where, default=dflt.friction),
        solref=_solref_or_restitution(r, d, where, dflt.solref),
        solimp=r.vector(d, "solimp", where, 5, default=dflt.solimp, low=0.0),
        randomize=_parse_randomize(r, d.get("randomize", {}), f"{where}.randomize"),
    )


def _solref_or_restitution(r: _Reader, d: dict, where: str, default: tuple) -> tuple[float, float]:
    """MuJoCo solref: (time constant [s], damping ratio) when positive, or (-stiffness, -damping) when negative;
    or derived from ``restitution`` (coefficient of restitution in [0, 1))."""
    if "restitution" in d:
        if "solref" in d:
            raise ConfigError(f"{r.file}: {where}: give at most one of 'solref' and 'restitution'")
        return restitution_solref(r.number(d, "restitution", where, low=0.0, high=0.99))
    v = r.vector(d, "solref", where, 2, default=default)
    if not ((v[0] > 0 and v[1] >= 0) or (v[0] < 0 and v[1] <= 0)):
        raise ConfigError(f"{r.file}: {where}.solref: expected [time_constant > 0, damping_ratio >= 0] or "
                          f"[-stiffness, -damping] (both <= 0), got {list(v)}")
    return v  # type: ignore[return-value]


def _parse_randomize(r: _Reader, doc: Any, where: str) -> Randomize:
    d = r.mapping(doc, where, optional=("position", "yaw_deg", "velocity"))
    return Randomize(
        position=r.vector(d, "position", where, 3, default=(0.0, 0.0, 0.0), low=0.0),
        yaw_deg=r.number(d, "yaw_deg", where, default=0.0, low=0.0, high=180.0),
        velocity=r.vector(d, "velocity", where, 3, default=(0.0, 0.0, 0.0), low=0.0),
    )


def _parse_pusher(r: _Reader, doc: Any) -> PusherSpec:
    where = "pusher"
    d = r.mapping(doc, where, optional=("shape", "size", "position", "color", "max_speed", "friction", "workspace"))
    dflt = PusherSpec()
    if "shape" in d or "size" in d:
        shape, size = _shape_and_size(r, d, where)
    else:
        shape, size = dflt.shape, dflt.size
    ws = r.vector(d, "workspace", where, 4, default=dflt.workspace)
    if ws[0] >= ws[2] or ws[1] >= ws[3]:
        raise ConfigError(f"{r.file}: pusher.workspace: expected [x_min, y_min, x_max, y_max] with min < max, "
                          f"got {list(ws)}")
    return PusherSpec(
        shape=shape,
        size=size,
        position=r.vector(d, "position", where, 3, default=dflt.position),
        color=r.color(d, "color", where, default=dflt.color),
        max_speed=r.number(d, "max_speed", where, default=dflt.max_speed, low=0.0, low_open=True),
        friction=r.friction(d, "friction", where, default=dflt.friction),
        workspace=ws,
    )


def _parse_events(r: _Reader, doc: Any, objects: tuple[ObjectSpec, ...], duration_s: float,
                  physics_dt: float) -> tuple[EventSpec, ...]:
    """``events``: a list of {object, time_s, force [N] + duration_s | impulse [N s]}."""
    if doc is None:
        return ()
    if not isinstance(doc, list):
        raise ConfigError(f"{r.file}: events: expected a list of events, got {_describe(doc)}")
    names = [o.name for o in objects]
    out = []
    for i, e in enumerate(doc):
        where = f"events[{i}]"
        d = r.mapping(e, where, required=("object", "time_s"), optional=("force", "impulse", "duration_s"))
        name = r.string(d, "object", where)
        if name not in names:
            raise ConfigError(f"{r.file}: {where}.object: no object named {name!r} (objects: {', '.join(names)})")
        k = names.index(name)
        if objects[k].fixed:
            raise ConfigError(f"{r.file}: {where}.object: {name!r} is fixed (welded to the world), a force cannot "
                              "move it")
        t = r.number(d, "time_s", where, low=0.0)
        if t >= duration_s:
            raise ConfigError(f"{r.file}: {where}.time_s: {t} s is not before the end of the scenario "
                              f"(duration_s {duration_s})")
        if ("force" in d) == ("impulse" in d):
            raise ConfigError(f"{r.file}: {where}: give exactly one of 'force' (with 'duration_s') or 'impulse'")
        if "impulse" in d:
            if "duration_s" in d:
                raise ConfigError(f"{r.file}: {where}.duration_s: an impulse acts for one physics step; give "
                                  "'force' and 'duration_s' for a longer push")
            j = r.vector(d, "impulse", where, 3)
            force = tuple(v / physics_dt for v in j)
            duration = physics_dt
        else:
            force = r.vector(d, "force", where, 3)
            duration = r.number(d, "duration_s", where, default=physics_dt, low=0.0, low_open=True)
        ev = EventSpec(object_index=k, time_s=t, force=force, duration_s=duration)  # type: ignore[arg-type]
        for j, other in enumerate(out):
            if ev.time_s < other.time_s + other.duration_s and other.time_s < ev.time_s + ev.duration_s:
                raise ConfigError(f"{r.file}: {where}: overlaps events[{j}] in time (one actuator applies them)")
        out.append(ev)
    return tuple(out)


def _parse_cameras(r: _Reader, doc: Any) -> tuple[list[CameraModel], float, float, float, float, CameraRing | None]:
    where = "cameras"
    d = r.mapping(doc, where, optional=("width", "height", "fx", "fy", "cx", "cy", "near", "far", "min_depth",
                                        "depth_noise_at_1m", "ring", "poses"))
    width = r.integer(d, "width", where, default=D455_640x480["width"], low=8, high=4096)
    height = r.integer(d, "height", where, default=D455_640x480["height"], low=8, high=4096)
    scale = width / D455_640x480["width"]
    fx = r.number(d, "fx", where, default=D455_640x480["fx"] * scale, low=1.0)
    fy = r.number(d, "fy", where, default=D455_640x480["fy"] * scale, low=1.0)
    cx = r.number(d, "cx", where, default=width / 2.0, low=0.0, high=float(width))
    cy = r.number(d, "cy", where, default=height / 2.0, low=0.0, high=float(height))
    near = r.number(d, "near", where, default=0.05, low=0.001, high=10.0)
    far = r.number(d, "far", where, default=6.0, low=0.0, high=65.0)  # 65.535 m is the uint16 mm limit
    if far <= near:
        raise ConfigError(f"{r.file}: cameras.far: must be larger than cameras.near ({near}), got {far}")
    min_depth = r.number(d, "min_depth", where, default=0.0, low=0.0)
    if min_depth >= far:
        raise ConfigError(f"{r.file}: cameras.min_depth: must be smaller than cameras.far ({far}), got {min_depth}")
    noise = r.number(d, "depth_noise_at_1m", where, default=0.0, low=0.0, high=0.1)
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    has_ring, has_poses = "ring" in d, "poses" in d
    if has_ring == has_poses:
        raise ConfigError(f"{r.file}: cameras: give exactly one of 'ring' (cameras around the table) "
                          "or 'poses' (a list)")
    ring = None
    poses: list[tuple[str, np.ndarray]] = []
    if has_ring:
        rw = "cameras.ring"
        rd = r.mapping(d["ring"], rw, required=("count",), optional=("radius", "height", "look_at", "start_deg"))
        count = r.integer(rd, "count", rw)
        if count < 1:
            raise ConfigError(f"{r.file}: cameras.ring.count: need at least 1 camera, got {count}")
        ring = CameraRing(
            count=count,
            radius=r.number(rd, "radius", rw, default=0.7, low=0.0, low_open=True),
            height=r.number(rd, "height", rw, default=0.6),
            look_at=r.vector(rd, "look_at", rw, 3, default=(0.0, 0.0, 0.0)),
            start_deg=r.number(rd, "start_deg", rw, default=45.0),
        )
        target = np.asarray(ring.look_at)
        for k in range(count):
            a = math.radians(ring.start_deg + 360.0 * k / count)
            eye = np.array([ring.radius * math.cos(a), ring.radius * math.sin(a), ring.height])
            if np.linalg.norm(eye - target) < 1e-6:
                raise ConfigError(f"{r.file}: cameras.ring: camera {k} sits on its look_at point")
            poses.append((f"cam{k}", look_at(eye, target)))
    else:
        plist = d["poses"]
        if not isinstance(plist, list) or not plist:
            raise ConfigError(f"{r.file}: cameras.poses: need at least 1 camera (a non-empty list), "
                              f"got {_describe(plist)}")
        for k, pd_ in enumerate(plist):
            pw = f"cameras.poses[{k}]"
            pd = r.mapping(pd_, pw, required=("position",), optional=("name", "position", "look_at", "rotation_wxyz"))
            pos = np.asarray(r.vector(pd, "position", pw, 3))
            if ("look_at" in pd) == ("rotation_wxyz" in pd):
                raise ConfigError(f"{r.file}: {pw}: give exactly one of 'look_at' or 'rotation_wxyz'")
            if "look_at" in pd:
                target = np.asarray(r.vector(pd, "look_at", pw, 3))
                if np.linalg.norm(target - pos) < 1e-6:
                    raise ConfigError(f"{r.file}: {pw}.look_at: equals the camera position")
                T = look_at(pos, target)
            else:
                q = np.asarray(r.vector(pd, "rotation_wxyz", pw, 4))
                if np.linalg.norm(q) < 1e-6:
                    raise ConfigError(f"{r.file}: {pw}.rotation_wxyz: zero quaternion")
                T = make_se3(quat_wxyz_to_matrix(q), pos)
            poses.append((r.string(pd, "name", pw, default=f"cam{k}"), T))
        names = [n for n, _ in poses]
        for k, n in enumerate(names):
            if n in names[:k]:
                raise ConfigError(f"{r.file}: cameras.poses[{k}].name: duplicate camera name {n!r}")
            if n == "vidyn_aux":
                raise ConfigError(f"{r.file}: cameras.poses[{k}].name: 'vidyn_aux' is reserved (render_only's camera)")
            if not n.replace("_", "").isalnum() or not n[0].isalpha():
                raise ConfigError(f"{r.file}: cameras.poses[{k}].name: {n!r} is not a valid topic name "
                                  "(letters, digits, _)")
    for k, (n, T) in enumerate(poses):
        # The table is the z = 0 plane and renders from one side only: a camera under it sees the objects through it.
        if T[2, 3] <= 0.0:
            where = "cameras.ring.height" if ring is not None else f"cameras.poses[{k}].position"
            raise ConfigError(f"{r.file}: {where}: camera {n!r} is at z = {T[2, 3]:g} m, not above the table "
                              "(the z = 0 plane): it would see the objects through the table")
    cams = [CameraModel(name=n, width=width, height=height, K=K.copy(), T_world_cam=T) for n, T in poses]
    return cams, near, far, min_depth, noise, ring


# ---------------------------------------------------------------------------------------------------------------------
# Field readers


def _shape_and_size(r: _Reader, d: dict, where: str) -> tuple[str, tuple[float, ...]]:
    shape = r.string(d, "shape", where, choices=tuple(SHAPE_SIZE_LEN))
    n = SHAPE_SIZE_LEN[shape]
    raw = d.get("size")
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and n == 1:
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigError(f"{r.file}: {where}.size: expected {n} numbers for {shape}, got {_describe(raw)}")
    if len(raw) != n:
        raise ConfigError(f"{r.file}: {where}.size: expected {n} numbers for {shape}, got {len(raw)}")
    size = r.vector({"size": raw}, "size", where, n, low=0.0, low_open=True)
    return shape, size


def _orientation(r: _Reader, d: dict, where: str) -> tuple[float, float, float, float]:
    if "rpy_deg" in d and "quat_wxyz" in d:
        raise ConfigError(f"{r.file}: {where}: give at most one of 'rpy_deg' and 'quat_wxyz'")
    if "quat_wxyz" in d:
        q = np.asarray(r.vector(d, "quat_wxyz", where, 4))
        n = np.linalg.norm(q)
        if n < 1e-6:
            raise ConfigError(f"{r.file}: {where}.quat_wxyz: zero quaternion")
        return tuple(float(v) for v in q / n)  # type: ignore[return-value]
    roll, pitch, yaw = np.radians(r.vector(d, "rpy_deg", where, 3, default=(0.0, 0.0, 0.0)))
    return rpy_to_quat_wxyz(roll, pitch, yaw)


def rpy_to_quat_wxyz(roll: float, pitch: float, yaw: float) -> tuple[float, float, float, float]:
    """Extrinsic x-y-z (roll about world x, then pitch about y, then yaw about z) -> (w, x, y, z)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy)


def shape_sdf(p: np.ndarray, shape: str, size: Sequence[float] | np.ndarray) -> np.ndarray:
    """Signed distance [m] from points in the shape's own frame to its surface (negative inside).

    Args:
        p: [N, 3] points in the object frame (origin at the shape centre, cylinder / capsule axis along z).
        shape: box | sphere | cylinder | capsule; size: MuJoCo size parameters (see SHAPE_SIZE_LEN).
    Returns:
        [N] signed distances.
    """
    p = np.asarray(p, dtype=np.float64).reshape(-1, 3)
    s = np.asarray(size, dtype=np.float64)
    if shape == "box":
        q = np.abs(p) - s[:3]
        return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)
    if shape == "sphere":
        return np.linalg.norm(p, axis=1) - s[0]
    if shape == "cylinder":
        q = np.stack([np.linalg.norm(p[:, :2], axis=1) - s[0], np.abs(p[:, 2]) - s[1]], axis=1)
        return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)
    if shape == "capsule":
        z = np.clip(p[:, 2], -s[1], s[1])
        return np.linalg.norm(p - np.stack([np.zeros_like(z), np.zeros_like(z), z], axis=1), axis=1) - s[0]
    raise ValueError(f"unknown shape {shape!r} (expected one of {', '.join(SHAPE_SIZE_LEN)})")


def surface_distance(points_world: np.ndarray, shape: str, size: Sequence[float] | np.ndarray,
                     position: np.ndarray, quat_wxyz: np.ndarray) -> np.ndarray:
    """Unsigned distance [m] from world points [N, 3] to an object's surface at a pose (evaluation helper) -> [N]."""
    R = quat_wxyz_to_matrix(np.asarray(quat_wxyz))
    local = (np.asarray(points_world, dtype=np.float64).reshape(-1, 3) - np.asarray(position)) @ R
    return np.abs(shape_sdf(local, shape, size))


def _describe(v: Any) -> str:
    if v is None:
        return "nothing"
    if isinstance(v, bool):
        return f"a boolean ({v})"
    if isinstance(v, (int, float)):
        return f"a number ({v})"
    if isinstance(v, str):
        return f"a string ({v!r})"
    if isinstance(v, list):
        return f"a list of {len(v)}"
    if isinstance(v, dict):
        return "a mapping"
    return type(v).__name__


class _Reader:
    """Typed field access that raises ConfigError('<file>: <key path>: <problem>')."""

    def __init__(self, file: str, base_dir: Path | None = None):
        self.file = file
        self.base_dir = base_dir if base_dir is not None else Path.cwd()  # relative paths (textures) start here

    def _err(self, where: str, key: str, msg: str) -> ConfigError:
        path = f"{where}.{key}" if where and key else (where or key or "(top level)")
        return ConfigError(f"{self.file}: {path}: {msg}")

    def mapping(self, doc: Any, where: str, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> dict:
        if doc is None and not required:
            return {}
        if not isinstance(doc, dict):
            raise self._err(where, "", f"expected a mapping, got {_describe(doc)}")
        allowed = set(required) | set(optional)
        for k in doc:
            if k not in allowed:
                raise self._err(where, str(k), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for k in required:
            if k not in doc:
                raise self._err(where, k, "missing required key")
        return doc

    def number(self, d: dict, key: str, where: str, default: float | None = None, low: float | None = None,
               high: float | None = None, low_open: bool = False) -> float:
        if key not in d or d[key] is None:
            if default is None:
                raise self._err(where, key, "missing required key")
            return float(default)
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self._err(where, key, f"expected a number, got {_describe(v)}")
        if low is not None and (v < low or (low_open and v == low)):
            raise self._err(where, key, f"must be {'>' if low_open else '>='} {low}, got {v}")
        if high is not None and v > high:
            raise self._err(where, key, f"must be <= {high}, got {v}")
        return float(v)

    def integer(self, d: dict, key: str, where: str, default: int | None = None, low: int | None = None,
                high: int | None = None) -> int:
        if key not in d:
            if default is None:
                raise self._err(where, key, "missing required key")
            return default
        v = d[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._err(where, key, f"expected an integer, got {_describe(v)}")
        if (low is not None and v < low) or (high is not None and v > high):
            raise self._err(where, key, f"must be in [{low}, {high}], got {v}")
        return v

    def boolean(self, d: dict, key: str, where: str, default: bool) -> bool:
        if key not in d:
            return default
        v = d[key]
        if not isinstance(v, bool):
            raise self._err(where, key, f"expected true or false, got {_describe(v)}")
        return v

    def string(self, d: dict, key: str, where: str, default: str | None = None,
               choices: tuple[str, ...] | None = None) -> str:
        if key not in d:
            if default is None:
                raise self._err(where, key, "missing required key")
            return default
        v = d[key]
        if not isinstance(v, str) or not v:
            raise self._err(where, key, f"expected a non-empty string, got {_describe(v)}")
        if choices is not None and v not in choices:
            raise self._err(where, key, f"expected one of {', '.join(choices)}, got {v!r}")
        return v

    def vector(self, d: dict, key: str, where: str, n: int, default: tuple | None = None,
               low: float | None = None, low_open: bool = False) -> tuple:
        if key not in d:
            if default is None:
                raise self._err(where, key, "missing required key")
            return tuple(float(x) for x in default)
        v = d[key]
        if not isinstance(v, list):
            raise self._err(where, key, f"expected a list of {n} numbers, got {_describe(v)}")
        if len(v) != n:
            raise self._err(where, key, f"expected {n} numbers, got {len(v)}")
        for x in v:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise self._err(where, key, f"expected {n} numbers, got {_describe(x)} in the list")
            if low is not None and (x < low or (low_open and x == low)):
                raise self._err(where, key, f"every entry must be {'>' if low_open else '>='} {low}, got {x}")
        return tuple(float(x) for x in v)

    def color(self, d: dict, key: str, where: str, default: tuple) -> tuple[float, float, float]:
        if key not in d:
            return tuple(float(x) for x in default)  # type: ignore[return-value]
        v = d[key]
        if isinstance(v, str):
            if v.lower() not in NAMED_COLORS:
                raise self._err(where, key, f"unknown colour {v!r} (names: {', '.join(sorted(NAMED_COLORS))}; "
                                            "or [r, g, b] in 0..1)")
            return NAMED_COLORS[v.lower()]
        c = self.vector(d, key, where, 3, low=0.0)
        if max(c) > 1.0:
            raise self._err(where, key, f"RGB values must be in 0..1, got {list(c)}")
        return c  # type: ignore[return-value]

    def friction(self, d: dict, key: str, where: str, default: tuple) -> tuple[float, float, float]:
        """A scalar (sliding friction, default torsional/rolling) or [sliding, torsional, rolling]."""
        if key in d and isinstance(d[key], (int, float)) and not isinstance(d[key], bool):
            s = self.number(d, key, where, low=0.0)
            return (s, float(default[1]), float(default[2]))
        return self.vector(d, key, where, 3, default=default, low=0.0)  # type: ignore[return-value]
