"""vidyn_ros: multi-camera RGB-D -> live Gaussian scene -> learned particle dynamics -> visual MPC.

The library is ROS-free; only ``vidyn_ros.nodes`` and ``vidyn_ros.msgs`` import rclpy.
Heavy dependencies (torch, mujoco, open3d, pyrealsense2) are imported lazily inside the modules that need them.
"""

__version__ = "0.1.0"
