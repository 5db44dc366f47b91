"""QoS profiles of the nodes' publishers and subscriptions."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from vidyn_ros.errors import ConfigError


# ------------------------------------------------------------------------------------------------------------------ QoS
def _keep_last(depth: int, reliability: ReliabilityPolicy,
               durability: DurabilityPolicy = DurabilityPolicy.VOLATILE) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=durability)


def sensor_qos(depth: int = 5) -> QoSProfile:
    """Camera streams: best effort, keep last few (a late frame is worthless; never block the publisher)."""
    return _keep_last(depth, ReliabilityPolicy.BEST_EFFORT)


def reliable_qos(depth: int = 10) -> QoSProfile:
    """Commands, recorder inputs, ground truth: reliable, keep last ``depth``."""
    return _keep_last(depth, ReliabilityPolicy.RELIABLE)


def latched_qos(depth: int = 1) -> QoSProfile:
    """Rarely changing data (calibration, goals): reliable + transient local so late joiners get the last value."""
    return _keep_last(depth, ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL)


def qos_by_name(name: str, depth: int | None = None) -> QoSProfile:
    """``"sensor"`` / ``"reliable"`` / ``"latched"`` -> profile (for a ``qos`` node parameter)."""
    presets = {"sensor": sensor_qos, "reliable": reliable_qos, "latched": latched_qos}
    if name not in presets:
        raise ConfigError(f"unknown qos {name!r} (choose from {', '.join(presets)})")
    return presets[name]() if depth is None else presets[name](depth)

