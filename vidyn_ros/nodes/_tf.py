"""/tf_static from the rig geometry: ``world -> <cam>_link -> <cam>_color_optical_frame`` per camera, the frame names
of realsense-ros, so RViz Camera displays and other ROS tools (depth_image_proc, nvblox) place the cameras.

The message type tf2_msgs/TFMessage comes from a ROS distro, or, with the PyPI ROS wheels, from the build in
scripts/setup.sh (scripts/build_tf2_msgs.sh). Where neither is installed the node warns once and goes on without
TF: the camera poses still travel as rig_calibration.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from rclpy.node import Node

from vidyn_ros.errors import VidynError
from vidyn_ros.nodes._qos import latched_qos
from vidyn_ros.nodes._topics import msg_class, node_topic, now_ns, publish_cdr


class StaticTransforms:
    """A latched (transient local, depth 1) /tf_static publisher, relative to the node's namespace as every rig topic.

    A late subscriber (RViz started later) still gets the transforms. tf2 keeps only each publisher's last message,
    so every call publishes the whole set.
    """

    def __init__(self, node: Node) -> None:
        from vidyn_ros import msgs

        self._node = node
        self._msgs = msgs
        self._pub: Any = None
        try:
            cls = msg_class(msgs.TF_MESSAGE)
        except VidynError:
            node.get_logger().warning(
                "tf2_msgs is not installed (no ROS distro sourced and scripts/setup.sh not run): no /tf_static; the "
                "camera poses are only in the rig calibration YAML")
            return
        self._pub = node.create_publisher(cls, node_topic(msgs.TF_STATIC_TOPIC), latched_qos(1))

    def publish_rig(self, poses: Mapping[str, np.ndarray | None]) -> None:
        """Per camera name (or topic prefix) -> camera-to-world 4x4 of its optical frame, None when unknown."""
        self.publish([t for name, T in poses.items() for t in self._msgs.camera_transforms(name, T)])

    def publish(self, transforms: Sequence[tuple[str, str, np.ndarray]]) -> Any:
        """(parent, child, 4x4 child-to-parent) triples, stamped with the node's clock. Returns the bytes published."""
        if self._pub is None or not transforms:
            return None
        msg = self._msgs.tf_message(transforms, now_ns(self._node))
        return publish_cdr(self._pub, msg, self._msgs.TF_MESSAGE)
