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
        mod = _import("vidyn_ros.physics", name)
        factory = getattr(mod, "from_particle_state", None) or getattr(mod, "build_from_state", None)
        if factory is None:
            raise ConfigError("backend 'physics': vidyn_ros.physics has no from_particle_state(state, ...) factory")
        if state is None:
            raise ConfigError("backend 'physics' is built from the scene: a first scene state is needed")
        return factory(state, device=device, **options)
    if name == "learned":
        mod = _import("vidyn_ros.dynamics.model", name)
        loader = getattr(mod, "load_dynamics", None) or getattr(mod, "load_checkpoint", None)
        if loader is None:
            raise ConfigError("backend 'learned': vidyn_ros.dynamics.model has no load_dynamics(checkpoint) loader")
        return loader(checkpoint or None, device=device)
    raise ConfigError(f"unknown dynamics backend {name!r} (choose from {', '.join(BACKENDS)})")


def needs_scene(name: str) -> bool:
    """Whether the backend is built from the scene (rebuilt when the set of objects changes)."""
    return name == "physics"


def _import(module: str, name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(f"backend {name!r} is not available in this installation ({module}: {err})") from None
