"""Particle dynamics: the state / step interface shared by every backend (``state``), the learned object-centric
PointConv model of seed 001, its training and evaluation."""

from .state import (
    HISTORY,
    ConstantVelocity,
    Control,
    Dynamics,
    InvalidStateError,
    ParticleState,
    Static,
    SubStepped,
    move_kinematic,
    pusher_object_id,
    rollout,
    stack_positions,
)

__all__ = [
    "HISTORY",
    "ConstantVelocity",
    "Control",
    "Dynamics",
    "InvalidStateError",
    "ParticleState",
    "Static",
    "SubStepped",
    "move_kinematic",
    "pusher_object_id",
    "rollout",
    "stack_positions",
]
