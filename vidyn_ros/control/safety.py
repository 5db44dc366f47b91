"""Command safety, as ROS controllers do it: every command passes :class:`CommandFilter` (max speed, max
acceleration, workspace box: nav2's velocity smoother and ros2_controllers' limiters), and :class:`Watchdog`
decides when the input is unfit to act on (stale by message stamps, NaN, diverging cost, disabled): then the
command is exactly zero (ros2_controllers' cmd_vel_timeout). ROS-free; the mpc node calls both every control period.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CommandLimits:
    """Limits applied to every published command.

    Attributes:
        max_speed: largest planar speed [m/s].
        max_accel: largest change of velocity per second [m/s^2] between consecutive commands (a stop to zero is
            exempt: safety stops are immediate).
        workspace: x0, y0, x1, y1 [m]: the pusher may not be driven out of this box; at the border the outward
            velocity component is removed, and near it the command is scaled so one control period stays inside.
        period_s: nominal control period [s] (used for the first command and for the look-ahead at the border).
    """

    max_speed: float = 0.2
    max_accel: float = 2.0
    workspace: tuple[float, float, float, float] = (-0.35, -0.35, 0.35, 0.35)
    period_s: float = 0.1


class CommandFilter:
    """Clamps commands to :class:`CommandLimits`; remembers the last command for the acceleration limit."""

    def __init__(self, limits: CommandLimits) -> None:
        self.limits = limits
        self.last = np.zeros(3)
        self.last_t: float | None = None

    def reset(self) -> None:
        self.last = np.zeros(3)
        self.last_t = None

    def __call__(self, v: Sequence[float], t_s: float, pusher_xyz: Sequence[float] | None = None) -> np.ndarray:
        """The command to send at time ``t_s`` [s] for the wanted velocity ``v`` [3] (planar: z is zeroed);
        ``pusher_xyz`` is the pusher's measured position (None: the workspace is not enforced)."""
        lim = self.limits
        out = np.zeros(3)
        w = np.asarray(v, dtype=np.float64).reshape(3)
        if np.all(np.isfinite(w)):
            out[:2] = w[:2]
        speed = float(np.linalg.norm(out))
        if speed > lim.max_speed:
            out *= lim.max_speed / speed
        if np.any(out):  # acceleration limit (not for a stop)
            dt = lim.period_s if self.last_t is None or t_s <= self.last_t else t_s - self.last_t
            dv = out - self.last
            n = float(np.linalg.norm(dv))
            dv_max = lim.max_accel * dt
            if n > dv_max:
                out = self.last + dv * (dv_max / n)
        if pusher_xyz is not None and np.all(np.isfinite(np.asarray(pusher_xyz, dtype=np.float64))):
            out = self._in_workspace(out, np.asarray(pusher_xyz, dtype=np.float64))
        self.last = out.copy()
        self.last_t = t_s
        return out

    def stop(self, t_s: float) -> np.ndarray:
        """The zero command (and the filter's memory set to it)."""
        self.last = np.zeros(3)
        self.last_t = t_s
        return np.zeros(3)

    def _in_workspace(self, v: np.ndarray, p: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.limits.workspace
        lo, hi = np.array([x0, y0]), np.array([x1, y1])
        out = v.copy()
        for i in range(2):
            # outward motion at or beyond the border is removed; inside, one period may go up to the border
            if (p[i] <= lo[i] and out[i] < 0) or (p[i] >= hi[i] and out[i] > 0):
                out[i] = 0.0
            elif out[i] < 0 and p[i] + out[i] * self.limits.period_s < lo[i]:
                out[i] = (lo[i] - p[i]) / self.limits.period_s
            elif out[i] > 0 and p[i] + out[i] * self.limits.period_s > hi[i]:
                out[i] = (hi[i] - p[i]) / self.limits.period_s
        return out


@dataclass
class WatchdogStatus:
    ok: bool
    reason: str = ""


class Watchdog:
    """Is it safe to act? Checks, at each control period, the age of the newest scene (by its header stamp against
    the node's clock), the last input's finiteness, the cost trend and the enable switch.

    Args:
        scene_timeout_s: the scene is stale when ``now - stamp`` exceeds this [s].
        pose_timeout_s: same for the pusher's pose (robot state); 0 = not required.
        diverge_factor: a plan flagged diverged, or a cost growing above this x the goal's first cost, stops.
    """

    def __init__(self, scene_timeout_s: float = 0.5, pose_timeout_s: float = 0.5, diverge_factor: float = 50.0
                 ) -> None:
        self.scene_timeout_s = scene_timeout_s
        self.pose_timeout_s = pose_timeout_s
        self.diverge_factor = diverge_factor
        self.scene_stamp_s: float | None = None
        self.pose_stamp_s: float | None = None
        self.invalid: str = ""  # why the newest input cannot be used ("" = fine)
        self.diverged: str = ""
        self.first_cost: float | None = None

    def scene(self, stamp_s: float, valid: bool, why: str = "") -> None:
        """A scene message arrived (stamp from its header); ``valid`` False for NaN / malformed content."""
        self.scene_stamp_s = stamp_s if self.scene_stamp_s is None else max(self.scene_stamp_s, stamp_s)
        self.invalid = "" if valid else (why or "invalid scene")

    def pose(self, stamp_s: float, valid: bool, why: str = "") -> None:
        if valid:
            self.pose_stamp_s = stamp_s if self.pose_stamp_s is None else max(self.pose_stamp_s, stamp_s)
        else:
            self.invalid = why or "invalid pusher pose"

    def cost(self, cost: float, diverged: bool) -> None:
        """A plan finished with this cost (``diverged`` as flagged by the planner)."""
        if diverged or not math.isfinite(cost):
            self.diverged = f"cost diverged ({cost:.3g})"
            return
        if self.first_cost is None:
            self.first_cost = max(cost, 1e-9)
        self.diverged = (f"cost {cost:.3g} grew above {self.diverge_factor:g} x its first value {self.first_cost:.3g}"
                         if cost > self.diverge_factor * self.first_cost else "")

    def new_goal(self) -> None:
        self.first_cost = None
        self.diverged = ""

    def check(self, now_s: float) -> WatchdogStatus:
        if self.scene_stamp_s is None:
            return WatchdogStatus(False, "no scene yet")
        age = now_s - self.scene_stamp_s
        if age > self.scene_timeout_s:
            return WatchdogStatus(False, f"scene stale ({age:.2f} s old > {self.scene_timeout_s:g} s)")
        if self.pose_timeout_s > 0:
            if self.pose_stamp_s is None:
                return WatchdogStatus(False, "no pusher pose yet")
            page = now_s - self.pose_stamp_s
            if page > self.pose_timeout_s:
                return WatchdogStatus(False, f"pusher pose stale ({page:.2f} s old > {self.pose_timeout_s:g} s)")
        if self.invalid:
            return WatchdogStatus(False, self.invalid)
        if self.diverged:
            return WatchdogStatus(False, self.diverged)
        return WatchdogStatus(True)
