"""Messages on the wire for the nodes: rclpy message classes by type name, publishing the CDR bytes that
vidyn_ros.msgs makes (so bags and DDS carry identical bytes), and the node clock."""

from __future__ import annotations

import importlib
from typing import Any

from rclpy.node import Node

from vidyn_ros.errors import VidynError


# ------------------------------------------------------------------------------------------------------------- messages
def msg_class(msgtype: str) -> type:
    """rclpy message class for a type name like ``sensor_msgs/msg/Image`` (also accepts ``sensor_msgs/Image``).

    Raises VidynError (one line) when the interface package is not installed.
    """
    parts = msgtype.strip("/").split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise VidynError(f"malformed message type {msgtype!r} (expected pkg/msg/Name)")
    pkg, sub, name = parts
    try:
        return getattr(importlib.import_module(f"{pkg}.{sub}"), name)
    except (ImportError, AttributeError) as err:
        raise VidynError(f"message type {msgtype!r} is not available in this ROS installation") from err


def publish_cdr(publisher: Any, msg: Any, msgtype: str) -> bytes:
    """Serialise a rosbags-typestore ``msg`` to CDR with vidyn_ros.msgs and publish the bytes. Returns the bytes.

    ``msg`` may already be bytes (e.g. from a bag), then it is published unchanged.
    """
    if isinstance(msg, bytes | bytearray | memoryview):
        raw = bytes(msg)
    else:
        from vidyn_ros import msgs

        raw = msgs.serialize(msg, msgtype)
    publisher.publish(raw)
    return raw


def now_ns(node: Node) -> int:
    """The node's clock (sim time when use_sim_time is true) in nanoseconds."""
    return node.get_clock().now().nanoseconds



# --------------------------------------------------------------------------------------------------------- namespaces
# Graph-wide topics: one clock, one diagnostics aggregator, rcl's own. Every other topic of the contract is per rig.
GLOBAL_TOPICS = ("/clock", "/diagnostics", "/rosout", "/parameter_events")


def node_topic(topic: str) -> str:
    """The name a node creates its publisher / subscription with for a topic-contract name (``/cam0/color/...``):
    relative (``cam0/color/...``), so that it resolves inside the node's namespace and two rigs run side by side in
    two namespaces (in the root namespace it is the same topic). Graph-wide topics (/clock, /diagnostics) stay
    absolute. Names are kept absolute everywhere else (bags, the library, logs)."""
    return topic if topic in GLOBAL_TOPICS or not topic.startswith("/") else topic[1:]
