"""The dynamics backend of the planner, chosen by one name (node parameter / CLI option ``backend``).

| name | what |
| --- | --- |
| ``static`` | nothing moves but the pusher (machinery tests; a lower bound) |
| ``constant_velocity`` | every particle keeps its velocity (no interaction) |
| ``physics`` | differentiable rigid-body physics built from the scene (vidyn_ros.physics, Newton) |
| ``learned`` | the learned particle dynamics (vidyn_ros.dynamics, checkpoint in models/) |

All implement ``step(state, control, dt) -> state`` (vidyn_ros.dynamics.state.Dynamics). Backends that must be
built from the scene (physics: one body per object) get the first state through ``build(state)``.
"""

from __future__ import annotations

import importlib
from typing import Any

from vidyn_ros.dynamics.state import ConstantVelocity, Dynamics, ParticleState, Static
from vidyn_ros.errors import ConfigError

BACKENDS = ("static", "constant_velocity", "physics", "learned")


def make_backend(name: str, state: ParticleState | None = None, device: str = "cpu", checkpoint: str = "",
                 **options: Any) -> Dynamics:
    """A dynamics backend by name. ``state`` (the scene as particles) is needed by backends built from the scene."""
    if name == "static":
        return Static()
    if name == "constant_velocity":
        return ConstantVelocity()
    if name == "physics":
        mod = _import("vidyn_ros.physics.dynamics", name)
        if state is None:
            raise ConfigError("backend 'physics' is built from the scene: a first scene state is needed")
        return mod.PhysicsDynamics.from_state(state, **options)
    if name == "learned":
        mod = _import("vidyn_ros.dynamics.checkpoint", name)
        return mod.load_checkpoint(checkpoint or default_checkpoint(), device=device)
    raise ConfigError(f"unknown dynamics backend {name!r} (choose from {', '.join(BACKENDS)})")


def default_checkpoint() -> str:
    """The shipped learned-dynamics checkpoint in models/ (ConfigError when none is shipped)."""
    from vidyn_ros.paths import models_dir

    found = sorted(p for ext in ("safetensors", "pt") for p in models_dir().glob(f"*.{ext}"))
    if not found:
        raise ConfigError(f"backend 'learned': no checkpoint in {models_dir()} (train one with vidyn train, or set "
                          "checkpoint)")
    return str(found[0])


def default_sub_steps(name: str, dt: float = 0.1) -> int:
    """Dynamics steps per planner period: the learned model steps at the camera rate it was trained on (30 Hz);
    the physics model sub-steps internally, the baselines are exact for any step."""
    return max(1, round(dt * 30)) if name == "learned" else 1


def needs_scene(name: str) -> bool:
    """Whether the backend is built from the scene (rebuilt when the set of objects changes)."""
    return name == "physics"


def _import(module: str, name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(f"backend {name!r} is not available in this installation ({module}: {err})") from None
