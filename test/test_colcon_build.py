"""The package builds with colcon (ament_python) and, once installed, finds its shipped files in share/vidyn_ros."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COLCON = Path(sys.executable).parent / "colcon"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    if not COLCON.exists():
        pytest.fail(f"colcon is not installed in {COLCON.parent}; run `make setup`")
    ws = tmp_path_factory.mktemp("ws")
    src = ws / "src" / "vidyn_ros"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    proc = subprocess.run([str(COLCON), "build", "--packages-select", "vidyn_ros"], cwd=ws, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return ws / "install" / "vidyn_ros"


def test_colcon_installs_launch_config_and_executables(installed):
    share = installed / "share" / "vidyn_ros"
    for rel in ["package.xml", "launch/sim.launch.py", "launch/replay.launch.py", "launch/rig.launch.py",
                "config/graphs/sim.yaml", "config/scenarios/push.yaml", "config/fastdds_shm.xml",
                "config/rig_calibration.yaml", "rviz/vidyn.rviz"]:
        assert (share / rel).is_file(), rel
    assert (installed / "share/ament_index/resource_index/packages/vidyn_ros").is_file()
    exes = {p.name for p in (installed / "lib" / "vidyn_ros").iterdir()}
    assert {"vidyn", "sim_rig", "bag_player", "recorder", "realsense", "segmenter", "scene"} <= exes


def test_installed_package_reads_its_share_directory(installed, tmp_path):
    site = next(installed.glob("lib/python3*/site-packages"))
    env = dict(os.environ, AMENT_PREFIX_PATH=str(installed), PYTHONPATH=str(site))
    code = ("import vidyn_ros, vidyn_ros.paths as p; from vidyn_ros.rig.scenario import load_scenario;"
            "print(vidyn_ros.__file__); print(p.config_dir()); print(load_scenario('push').name)")
    # Run from tmp_path so the source checkout is not importable: only the installed copy is.
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    module_file, config_dir, name = proc.stdout.split()
    assert module_file.startswith(str(site))
    assert Path(config_dir) == installed / "share" / "vidyn_ros" / "config"
    assert name == "push"
