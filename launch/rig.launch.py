"""ros2 launch vidyn_ros rig.launch.py [NODE.PARAM:=VALUE ...] [graph:=FILE]

Thin on purpose: the graph (nodes, parameters, remappings, env such as the Fast DDS shared-memory profile) lives in
config/graphs/rig.yaml and is read by vidyn_ros.graph, the same code that `vidyn launch rig` runs in one process.
"""

from vidyn_ros.graph import launch_description


def generate_launch_description() -> object:  # the ros2 launch entry point
    return launch_description("rig")
