"""Where the package's shipped files live: the ament share directory (colcon install), else the source tree."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def share_dir() -> Path:
    """Directory holding config/, launch/, models/, rviz/ for this installation."""
    src = Path(__file__).resolve().parent.parent
    if (src / "config").is_dir():  # source checkout / pip -e
        return src
    try:  # colcon install: share/vidyn_ros
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("vidyn_ros"))
    except Exception:  # ament_index not installed or package not indexed
        return src


def config_dir() -> Path:
    return share_dir() / "config"


def models_dir() -> Path:
    return share_dir() / "models"


def launch_dir() -> Path:
    return share_dir() / "launch"
