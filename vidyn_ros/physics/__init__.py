"""Differentiable physics of the live scene (∇Sim, seed 003) on Newton / warp, and system identification.

``build_from_scene`` -> ``PhysicsModel`` (rigid bodies fitted to the scene's objects, the pusher kinematic, the table
as ground) -> ``PhysicsModel.simulate`` (torch in, torch out, gradients through warp's Tape) or, particle-level,
``PhysicsDynamics.step(state, control, dt)`` (the ``dynamics.state.Dynamics`` interface the MPC uses). warp and newton
are imported on first simulation, not at import time. See docs/physics.md.
"""

from vidyn_ros.physics.dynamics import BodyState, PhysicsDynamics, fit_rigid
from vidyn_ros.physics.model import (
    PARAM_NAMES,
    PRIOR_RANGES,
    TABLE,
    Body,
    BodyTrajectory,
    PhysicsConfig,
    PhysicsModel,
    PhysicsParams,
    ShapeSpec,
)
from vidyn_ros.physics.scene import ParticleBinding, build_from_scene

__all__ = [
    "PARAM_NAMES",
    "PRIOR_RANGES",
    "TABLE",
    "Body",
    "BodyState",
    "BodyTrajectory",
    "ParticleBinding",
    "PhysicsConfig",
    "PhysicsDynamics",
    "PhysicsModel",
    "PhysicsParams",
    "ShapeSpec",
    "build_from_scene",
    "fit_rigid",
]
