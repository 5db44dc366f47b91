"""QoS profiles of the nodes' publishers and subscriptions, and the node base class that makes every publisher's QoS
overridable with the standard ROS 2 parameters (``qos_overrides./TOPIC.publisher.<policy>``). The QoS of each topic
is the topic contract's (vidyn_ros/qos.py)."""

from __future__ import annotations

import copy
from typing import Any

import rclpy.node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions, QoSPolicyKind

from vidyn_ros.errors import ConfigError
from vidyn_ros.qos import QOS_CLASSES, SENSOR, STATE, STATIC, topic_qos


def _keep_last(depth: int, reliability: ReliabilityPolicy,
               durability: DurabilityPolicy = DurabilityPolicy.VOLATILE) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=durability)


def sensor_qos(depth: int = QOS_CLASSES[SENSOR][2]) -> QoSProfile:
    """Camera streams and images: best effort, keep last few (a late frame is worthless; never block the publisher)."""
    return _keep_last(depth, ReliabilityPolicy.BEST_EFFORT)


def reliable_qos(depth: int = QOS_CLASSES[STATE][2]) -> QoSProfile:
    """State (scene, commands, poses, diagnostics): reliable, keep last ``depth``."""
    return _keep_last(depth, ReliabilityPolicy.RELIABLE)


def latched_qos(depth: int = QOS_CLASSES[STATIC][2]) -> QoSProfile:
    """Rarely changing data (/tf_static, goals): reliable + transient local so late joiners get the last value."""
    return _keep_last(depth, ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL)


_BY_CLASS = {SENSOR: sensor_qos, STATE: reliable_qos, STATIC: latched_qos}


def qos_by_name(name: str, depth: int | None = None) -> QoSProfile:
    """``"sensor"`` / ``"reliable"`` / ``"latched"`` -> profile (for a ``qos`` node parameter)."""
    presets = {"sensor": sensor_qos, "reliable": reliable_qos, "latched": latched_qos}
    if name not in presets:
        raise ConfigError(f"unknown qos {name!r} (choose from {', '.join(presets)})")
    return presets[name]() if depth is None else presets[name](depth)


def contract_qos(topic: str, namespace: str = "", default: str = STATE) -> QoSProfile:
    """The contract's profile for ``topic`` (vidyn_ros/qos.py); ``default`` for a topic it does not know."""
    return _BY_CLASS[topic_qos(topic, namespace) or default]()


OVERRIDABLE = [QoSPolicyKind.RELIABILITY, QoSPolicyKind.DURABILITY, QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH]


class Node(rclpy.node.Node):
    """rclpy's Node, whose publishers all take the standard QoS override parameters
    (``qos_overrides./TOPIC.publisher.reliability|durability|history|depth``, read-only, set at start)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._overridable = False  # not rclpy's own publishers (/parameter_events, /rosout), made in __init__
        super().__init__(*args, **kwargs)
        self._overridable = True

    def create_publisher(self, msg_type: Any, topic: str, qos_profile: Any, **kwargs: Any) -> Any:
        if self._overridable:
            kwargs.setdefault("qos_overriding_options", QoSOverridingOptions(OVERRIDABLE))
            if isinstance(qos_profile, QoSProfile):
                # rclpy applies the overrides to the profile object itself: a profile shared by several publishers
                # (one per camera topic) would carry one topic's override to all the publishers made after it
                qos_profile = copy.copy(qos_profile)
        return super().create_publisher(msg_type, topic, qos_profile, **kwargs)
