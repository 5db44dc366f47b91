"""Live prediction from the scene's stream (what the dynamics node runs; ROS-free).

``LivePredictor`` keeps the last three scene snapshots (stamped GaussianSets with stable particle ids, or the scene's
stable row order), the latest pusher command and the robot's end-effector position, and on every scene update rolls
a dynamics backend forward ``horizon`` steps. The command in effect (if not stale) is held over the horizon; without
one the pusher stands still. Bad input never raises out of ``update``: a scene with NaN / inf is refused (and the
history restarts, so it cannot poison later predictions), a prediction that turns non-finite is dropped; both are
reported in ``Prediction.problem`` / the return value for the node's diagnostics.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from vidyn_ros.types import GaussianSet

from .state import HISTORY, Control, Dynamics, InvalidStateError, ParticleState, SubStepped, pusher_object_id


@dataclass
class Prediction:
    """One rollout from the newest scene. ``states[h]`` is the state at ``stamps_ns[h]`` (h = 0: now)."""

    stamp_ns: int  # the scene's stamp (now)
    dt: float  # step length [s]
    states: list[ParticleState]  # now + horizon states
    control: np.ndarray  # [3] pusher velocity held over the horizon [m/s]
    pusher_id: int | None
    seconds: float  # wall time of the rollout
    paths: dict[int, np.ndarray] = field(default_factory=dict)  # object id -> [H+1, 3] centroid path

    @property
    def horizon(self) -> int:
        return len(self.states) - 1

    @property
    def stamps_ns(self) -> list[int]:
        return [self.stamp_ns + round(h * self.dt * 1e9) for h in range(len(self.states))]

    def final(self) -> GaussianSet:
        return self.states[-1].to_gaussians()


def object_paths(states: list[ParticleState]) -> dict[int, np.ndarray]:
    """Per object (background excluded): its particles' mean position in every state -> [len(states), 3]."""
    ids = states[0].object_ids
    pos = torch.stack([s.now for s in states]).detach().cpu()  # [S, N, 3]
    out = {}
    for k in states[0].object_labels():
        sel = (ids == k).cpu()
        out[k] = pos[:, sel].mean(dim=1).double().numpy()
    return out


class LivePredictor:
    """Rolls ``model`` forward from the newest three scenes (see the module docstring)."""

    def __init__(self, model: Dynamics, horizon: int = 10, dt: float = 0.0, sub_steps: int = 1,
                 cmd_timeout_s: float = 0.5, pusher_max_distance: float = 0.03, device: str = "cpu") -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.model: Dynamics = SubStepped(model, sub_steps) if sub_steps > 1 else model
        self.horizon = horizon
        self.dt = dt
        self.cmd_timeout_s = cmd_timeout_s
        self.pusher_max_distance = pusher_max_distance
        self.device = device
        self.history: collections.deque[tuple[int, GaussianSet]] = collections.deque(maxlen=HISTORY)
        self.command: tuple[int, np.ndarray] | None = None  # (stamp ns, linear [3])
        self.pusher_xyz: np.ndarray | None = None
        self.last_problem = ""

    # ------------------------------------------------------------------ inputs
    def set_command(self, stamp_ns: int, linear: np.ndarray) -> bool:
        """Record a pusher command; False (ignored) when it is not finite."""
        v = np.asarray(linear, dtype=np.float64).reshape(3)
        if not np.isfinite(v).all():
            return False
        self.command = (int(stamp_ns), v)
        return True

    def set_pusher(self, xyz: np.ndarray) -> bool:
        p = np.asarray(xyz, dtype=np.float64).reshape(3)
        if not np.isfinite(p).all():
            return False
        self.pusher_xyz = p
        return True

    def command_at(self, stamp_ns: int) -> np.ndarray:
        """The command in effect at ``stamp_ns``: the latest one unless older than ``cmd_timeout_s`` (then 0)."""
        if self.command is None:
            return np.zeros(3)
        s, v = self.command
        return v if (stamp_ns - s) * 1e-9 <= self.cmd_timeout_s else np.zeros(3)

    # ------------------------------------------------------------------ the update
    def update(self, stamp_ns: int, gaussians: GaussianSet, predict: bool = True) -> Prediction | str:
        """Add a scene snapshot and predict (``predict`` False: only add it, e.g. between predictions at a lower
        rate). Returns the Prediction, or a one-line reason why there is none."""
        g = gaussians.detach().to(self.device)
        if len(g) == 0:
            return self._problem("empty scene")
        finite = bool(torch.isfinite(g.means).all() and torch.isfinite(g.quats).all())
        if not finite:
            self.history.clear()  # do not mix the snapshots before and after a corrupt one
            bad = int((~torch.isfinite(g.means).all(dim=1)).sum())
            return self._problem(f"scene at {stamp_ns * 1e-9:.3f} s has {bad} non-finite Gaussian(s): ignored, "
                                 "history restarted")
        if self.history and stamp_ns <= self.history[-1][0]:
            self.history.clear()  # time went backwards (a replayed bag looped, the sim restarted)
        self.history.append((int(stamp_ns), g))
        if len(self.history) < HISTORY:
            return self._problem(f"waiting for {HISTORY} scenes ({len(self.history)} so far)")
        if not predict:
            return "not predicted (rate limit)"
        stamps = [s for s, _ in self.history]
        snaps = [s for _, s in self.history]
        pusher = None
        if self.pusher_xyz is not None:
            pusher = pusher_object_id(g.object_ids, g.means, self.pusher_xyz.tolist(), self.pusher_max_distance)
        try:
            state = ParticleState.from_snapshots(snaps, stamps, pusher_id=pusher)
        except InvalidStateError as err:
            return self._problem(str(err))
        dt = self.dt if self.dt > 0 else state.step_seconds(-1)
        u = self.command_at(stamp_ns)
        control = Control(torch.as_tensor(u, dtype=torch.float32, device=state.device))
        t0 = time.perf_counter()
        states = [state]
        with torch.no_grad():
            s = state
            for _ in range(self.horizon):
                s = self.model.step(s, control, dt)
                states.append(s)
        seconds = time.perf_counter() - t0
        last = states[-1]
        if not bool(torch.isfinite(last.positions).all() and torch.isfinite(last.quats).all()):
            return self._problem("the prediction is not finite: dropped")
        self.last_problem = ""
        pred = Prediction(stamp_ns=int(stamp_ns), dt=dt, states=states, control=u, pusher_id=pusher, seconds=seconds)
        pred.paths = object_paths(states)
        return pred

    def _problem(self, text: str) -> str:
        self.last_problem = text
        return text


class SceneBuiltBackend:
    """A backend that is built from the scene (physics: one body per object, ``control.backends.needs_scene``),
    built lazily from the first state it steps and rebuilt when the set of objects changes (as the mpc node does)."""

    def __init__(self, name: str, device: str = "cpu") -> None:
        self.name, self.device = name, device
        self.model: Dynamics | None = None
        self.objects: tuple[int, ...] | None = None

    def step(self, state: ParticleState, control: Control | None, dt: float) -> ParticleState:
        from vidyn_ros.control.backends import make_backend

        objects = tuple(state.object_labels())
        if self.model is None or objects != self.objects:
            self.model = make_backend(self.name, state, device=self.device)
            self.objects = objects
        return self.model.step(state, control, dt)


def path_markers(pred: Prediction, color_of=None) -> list[dict]:
    """MarkerArray dicts (``msgs.marker_array_msg``) for /vidyn/prediction/trajectories: per object a line strip
    through its predicted centroids (now -> horizon) and a sphere at the end; ids 2k, 2k+1, namespace ``prediction``.
    A first ``deleteall`` removes paths of objects that are gone."""
    from vidyn_ros.scene.export import object_color

    color_of = color_of or object_color
    out: list[dict] = [dict(kind="sphere", marker_id=0, ns="prediction", action="deleteall")]
    for k, path in sorted(pred.paths.items()):
        if k == pred.pusher_id:
            continue
        c = color_of(k)
        out.append(dict(kind="line_strip", marker_id=2 * k, ns="prediction", points=path, scale=0.004,
                        color=(*c, 0.9)))
        out.append(dict(kind="sphere", marker_id=2 * k + 1, ns="prediction", position=path[-1], scale=0.012,
                        color=(*c, 0.9)))
    return out
