"""ament_python package: installs with pip (-e .) and builds with colcon in a ROS 2 workspace."""
from glob import glob

from setuptools import find_packages, setup

package_name = "vidyn_ros"

NODES = ["sim_rig", "bag_player", "recorder", "realsense", "segmenter", "scene", "mpc", "dynamics"]

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.py") + glob("launch/*.yaml")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + package_name + "/config/scenarios", glob("config/scenarios/*.yaml")
         + glob("config/scenarios/*.png")),
        ("share/" + package_name + "/config/graphs", glob("config/graphs/*.yaml")),
        ("share/" + package_name + "/config/goals", glob("config/goals/*.yaml")),
        ("share/" + package_name + "/rviz", glob("rviz/*.rviz")),
        ("share/" + package_name + "/models", glob("models/*")),
    ],
    package_data={package_name: ["data/*"]},
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="vidyn_ros developers",
    maintainer_email="vidyn@example.org",
    description="Multi-camera Gaussian-splat scenes, learned particle dynamics and visual MPC for ROS 2 rigs.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "vidyn = vidyn_ros.cli:main",
            *[f"{n} = vidyn_ros.nodes.{n}:main" for n in NODES],
        ],
    },
)
