"""Particle dynamics: the state / step interface shared by every backend (``state``), the learned object-centric
PointConv model of seed 001, its training and evaluation."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .learned import LearnedDynamics, ModelConfig
from .network import NetworkConfig
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
    "CheckpointError",
    "ConstantVelocity",
    "Control",
    "Dynamics",
    "InvalidStateError",
    "LearnedDynamics",
    "ModelConfig",
    "NetworkConfig",
    "ParticleState",
    "Static",
    "SubStepped",
    "load_checkpoint",
    "move_kinematic",
    "pusher_object_id",
    "rollout",
    "save_checkpoint",
    "stack_positions",
]
