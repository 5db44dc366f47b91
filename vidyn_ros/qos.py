"""The QoS of every topic, ROS-free: the QoS column of the topic contract (docs/ARCHITECTURE.md, docs/nodes.md).

Chosen per kind of data, as ROS camera drivers and rosbag2 do:

- ``sensor``: camera streams and other images (colour, depth, camera_info, masks, renders): best effort, keep last 5.
  A late frame is worth nothing and a publisher must never block on a slow reader. Subscribe best effort: that
  matches best-effort and reliable publishers alike (a camera driver may publish either: realsense-ros's image QoS
  is one of its parameters; the simulated rig publishes best effort unless its ``qos`` says reliable).
- ``state``: the scene, predictions, plans, commands, poses, /diagnostics, /clock: reliable, keep last 10. A reader
  must not miss an update it acts on.
- ``static``: data that changes rarely and late joiners need (/tf_static, goal images): reliable, transient local,
  keep last 1.

Every vidyn publisher's QoS can be overridden per topic with the standard ROS 2 QoS override parameters,
``qos_overrides./TOPIC.publisher.reliability|durability|history|depth`` (graph YAML ``parameters:``, ``--set``,
``--ros-args -p``; read-only once the node runs), e.g.
``--set sim_rig.qos_overrides./cam0/color/image_raw.publisher.reliability=reliable``. Subscriptions are not
overridable: the nodes subscribe camera data best effort and follow the publishers elsewhere (the recorder, the
simulated rig's lockstep).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SENSOR, STATE, STATIC = "sensor", "state", "static"
QOS_CLASSES = {
    SENSOR: ("best_effort", "volatile", 5),
    STATE: ("reliable", "volatile", 10),
    STATIC: ("reliable", "transient_local", 1),
}
_WORDS = {"best_effort": "best effort", "reliable": "reliable", "volatile": "volatile",
          "transient_local": "transient local"}

ALL_NODES = ("bag_player", "dynamics", "mpc", "realsense", "recorder", "scene", "segmenter", "sim_rig")
CAMERA_SOURCES = ("sim_rig", "realsense", "bag_player")


@dataclass(frozen=True)
class TopicQos:
    """One row of the contract: a topic (``<cam>`` = a camera prefix such as ``cam0`` or ``camera/camera``), its QoS
    class, and the node modules that publish it."""

    topic: str
    qos: str
    publishers: tuple[str, ...]

    @property
    def regex(self) -> re.Pattern[str]:
        return re.compile("^" + re.escape(self.topic).replace(re.escape("<cam>"), "[^ ]+") + "$")


CONTRACT = (
    TopicQos("/<cam>/color/image_raw", SENSOR, CAMERA_SOURCES),
    TopicQos("/<cam>/aligned_depth_to_color/image_raw", SENSOR, CAMERA_SOURCES),
    TopicQos("/<cam>/color/camera_info", SENSOR, CAMERA_SOURCES),
    TopicQos("/<cam>/mask", SENSOR, ("segmenter", "bag_player")),
    TopicQos("/vidyn/sim/<cam>/mask", SENSOR, ("sim_rig", "bag_player")),
    TopicQos("/vidyn/sim/object_poses", STATE, ("sim_rig", "bag_player")),
    TopicQos("/vidyn/pusher/pose", STATE, ("sim_rig", "bag_player")),
    TopicQos("/vidyn/scene/gaussians", STATE, ("scene", "bag_player")),
    TopicQos("/vidyn/scene/objects", STATE, ("scene", "bag_player")),
    TopicQos("/vidyn/scene/render/<cam>", SENSOR, ("scene", "bag_player")),
    TopicQos("/vidyn/prediction/gaussians", STATE, ("dynamics",)),
    TopicQos("/vidyn/prediction/trajectories", STATE, ("dynamics",)),
    TopicQos("/vidyn/prediction/render/<cam>", SENSOR, ("dynamics",)),
    TopicQos("/vidyn/goal/image/<cam>", STATIC, ("mpc",)),
    TopicQos("/vidyn/cmd", STATE, ("mpc", "bag_player")),
    TopicQos("/vidyn/mpc/plan", STATE, ("mpc",)),
    TopicQos("/vidyn/mpc/prediction", STATE, ("mpc",)),
    TopicQos("/vidyn/mpc/render/<cam>", SENSOR, ("mpc",)),
    TopicQos("/tf_static", STATIC, CAMERA_SOURCES),
    TopicQos("/diagnostics", STATE, ALL_NODES),
    TopicQos("/clock", STATE, ("sim_rig", "bag_player")),
)


def topic_qos(topic: str, namespace: str = "") -> str | None:
    """The QoS class of ``topic`` (a fully qualified name; ``namespace`` is taken off first), or None for a topic the
    contract does not know."""
    ns = namespace.rstrip("/")
    if ns and topic.startswith(ns + "/"):
        topic = topic[len(ns):]
    # the most specific pattern first: /vidyn/sim/<cam>/mask before /<cam>/mask
    for row in sorted(CONTRACT, key=lambda r: -len(r.topic.replace("<cam>", ""))):
        if row.regex.match(topic):
            return row.qos
    return None


def describe(qos_class: str) -> str:
    reliability, durability, depth = QOS_CLASSES[qos_class]
    return f"{_WORDS[reliability]}, {_WORDS[durability]}, keep last {depth}"


def contract_markdown() -> str:
    """The topic/QoS table of docs/nodes.md."""
    lines = ["| topic | QoS | published by |", "| --- | --- | --- |"]
    for row in CONTRACT:
        lines.append(f"| `{row.topic}` | {row.qos}: {describe(row.qos)} | {', '.join(row.publishers)} |")
    return "\n".join(lines) + "\n"
