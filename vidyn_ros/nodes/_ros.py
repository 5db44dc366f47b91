"""The node toolkit: what every vidyn node file uses, under one name (``from vidyn_ros.nodes import _ros``), so a node
reads like a wiring diagram (declare parameters, create publishers/subscriptions, call the library, publish).

Where each part lives:

- ``Param`` (vidyn_ros/params.py, ROS-free) + ``declare_params`` (nodes/_params.py): each node declares its
  parameters in ONE table with descriptions; the same table generates docs/nodes.md and checks graph files.
- ``msg_class``, ``publish_cdr``, ``now_ns``, ``node_topic`` (nodes/_topics.py): rclpy message classes by type name;
  publishing the CDR bytes of vidyn_ros.msgs, so bags and DDS carry identical bytes; topic names relative to the
  node's namespace (two rigs side by side).
- ``StaticTransforms`` (nodes/_tf.py): /tf_static of the rig's cameras (world -> <cam>_link -> optical frame).
- QoS (nodes/_qos.py): the presets ``sensor_qos``, ``reliable_qos``, ``latched_qos``, ``qos_by_name``, the topic
  contract's ``contract_qos``, and ``Node``: rclpy's Node with QoS override parameters on every publisher.
- ``DiagnosticsPublisher`` (nodes/_diagnostics.py): rate-limited /diagnostics status per node.
- ``SyncedInput``, ``rig_camera_poses`` (nodes/_inputs.py): the camera-set inputs of the scene and segmenter nodes.
- ``run_node``, ``spin_nodes``, ``close_nodes``, ``Shutdown``, ``NodeOptions``, ``spinning_event``,
  ``setup_fastdds_env`` (nodes/_runtime.py): rclpy init, the executor, clean shutdown, a node's ``main()``.
- ``Worker``, ``DropOldestQueue``, ``LoopThread``, ``RateMeter``, ``wait_for`` (vidyn_ros/workers.py, ROS-free):
  callbacks only enqueue; heavy work runs on worker threads.
"""

from vidyn_ros.nodes._diagnostics import DIAG_ERROR, DIAG_OK, DIAG_STALE, DIAG_WARN, DiagnosticsPublisher
from vidyn_ros.nodes._inputs import SyncedInput, rig_camera_poses
from vidyn_ros.nodes._params import (
    NODES_DOC_COMMAND,
    check_qos_overrides,
    declare_params,
    node_modules,
    nodes_reference_markdown,
    parameter_overrides,
)
from vidyn_ros.nodes._qos import Node, contract_qos, latched_qos, qos_by_name, reliable_qos, sensor_qos
from vidyn_ros.nodes._runtime import (
    CLOSE_S,
    DRAIN_S,
    FASTDDS_ENV,
    STOP_WITHIN_S,
    NodeExecutor,
    NodeOptions,
    Shutdown,
    close_nodes,
    fastdds_profile_path,
    init_rclpy,
    remap_args,
    run_node,
    setup_fastdds_env,
    spin_nodes,
    spinning_event,
)
from vidyn_ros.nodes._tf import StaticTransforms
from vidyn_ros.nodes._topics import GLOBAL_TOPICS, msg_class, node_topic, now_ns, publish_cdr
from vidyn_ros.params import Param, param_table_markdown
from vidyn_ros.workers import DropOldestQueue, LoopThread, RateMeter, Worker, wait_for

__all__ = [
    "CLOSE_S", "DIAG_ERROR", "DIAG_OK", "DIAG_STALE", "DIAG_WARN", "DRAIN_S", "FASTDDS_ENV", "GLOBAL_TOPICS",
    "NODES_DOC_COMMAND", "STOP_WITHIN_S", "DiagnosticsPublisher", "DropOldestQueue", "LoopThread", "Node",
    "NodeExecutor", "NodeOptions", "Param", "RateMeter", "Shutdown", "StaticTransforms", "SyncedInput", "Worker",
    "check_qos_overrides", "close_nodes", "contract_qos", "declare_params", "fastdds_profile_path", "init_rclpy",
    "latched_qos", "msg_class", "node_modules", "node_topic", "nodes_reference_markdown", "now_ns",
    "param_table_markdown", "parameter_overrides", "publish_cdr", "qos_by_name", "reliable_qos", "remap_args",
    "rig_camera_poses", "run_node", "sensor_qos", "setup_fastdds_env", "spin_nodes", "spinning_event", "wait_for",
]
