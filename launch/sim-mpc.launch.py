"""ros2 launch vidyn_ros sim-mpc.launch.py [NODE.PARAM:=VALUE ...] [graph:=FILE]

Thin on purpose: the closed-loop graph lives in config/graphs/sim-mpc.yaml and is read by vidyn_ros.graph, the same
code that `vidyn launch sim-mpc` runs in one process.
"""

from vidyn_ros.graph import launch_description


def generate_launch_description() -> object:  # the ros2 launch entry point
    return launch_description("sim-mpc")
