"""Bad input through the real CLI (and the node executables): a clear one-line error on stderr, exit code 2, never a
traceback, and nothing already written is lost. Each case runs `vidyn ...` in a subprocess."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ros_domain

from vidyn_ros import msgs
from vidyn_ros.bags import BagWriter
from vidyn_ros.paths import config_dir

REPO = Path(__file__).resolve().parent.parent
DOMAIN = ros_domain(__name__)  # this module's own ROS domain in this test run (test/conftest.py)


def _run(*argv: str, module: str = "vidyn_ros.cli") -> subprocess.CompletedProcess:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN), MUJOCO_GL="osmesa")
    return subprocess.run([sys.executable, "-m", module, *argv], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    err_lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(err_lines) == 1, proc.stderr
    line = err_lines[0]
    assert "error" in line
    for n in needles:
        assert n in line, line
    return line


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad_inputs")
    push = (config_dir() / "scenarios" / "push.yaml").read_text()
    assert "size: [0.04, 0.025, 0.025]" in push and "count: 4" in push
    (d / "malformed.yaml").write_text(push.replace("size: [0.04, 0.025, 0.025]", "size: [0.04, 0.025]"))
    (d / "not_yaml.yaml").write_text("name: x\nobjects: [\n")
    (d / "zero_cameras.yaml").write_text(push.replace("count: 4", "count: 0"))
    (d / "corrupt.mcap").write_bytes(bytes(range(256)) * 20)
    corrupt_dir = d / "corrupt_bag"
    corrupt_dir.mkdir()
    (corrupt_dir / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9, storage_identifier: mcap\n")
    (corrupt_dir / "corrupt_bag_0.mcap").write_bytes(b"\x89MCAP0\r\n" + bytes(100))
    (d / "a_file").write_text("not a directory")
    good = d / "good_bag"
    with BagWriter(good) as w:
        for k in range(3):
            w.write("/t", msgs.CLOCK, msgs.clock_msg((k + 1) * 10**8), (k + 1) * 10**8)
    (d / "bad_graph.yaml").write_text("nodes: [{node: recorder, parameter: {}}]\n")
    return {p.stem if p.is_file() else p.name: p for p in d.iterdir()}


def test_missing_bag(inputs: dict[str, Path]) -> None:
    _assert_one_line_error(_run("replay", str(inputs["a_file"].parent / "no_such_bag")), "no_such_bag", "no such bag")


@pytest.mark.parametrize("which", ["corrupt", "corrupt_bag"])
@pytest.mark.parametrize("command", ["replay", "reindex"])
def test_corrupt_bag(inputs: dict[str, Path], which: str, command: str) -> None:
    before = {f: f.read_bytes() for f in inputs[which].parent.rglob("*") if f.is_file()}
    _assert_one_line_error(_run(command, str(inputs[which])), which, "cannot read bag")
    assert {f: f.read_bytes() for f in inputs[which].parent.rglob("*") if f.is_file()} == before  # nothing changed


def test_unknown_topic(inputs: dict[str, Path]) -> None:
    _assert_one_line_error(_run("replay", str(inputs["good_bag"]), "--topics", "/t", "/nope"), "/nope", "no topic")


@pytest.mark.parametrize(("which", "key"), [("malformed", "objects[1].size"), ("not_yaml", "not valid YAML"),
                                            ("zero_cameras", "cameras")])
def test_bad_scenario(inputs: dict[str, Path], tmp_path: Path, which: str, key: str) -> None:
    out = tmp_path / "demo"
    _assert_one_line_error(_run("demo", "--scenario", str(inputs[which]), "--out", str(out)), f"{which}.yaml", key)
    assert not (out / "bag").exists()


def test_bad_scenario_inside_a_running_graph(inputs: dict[str, Path], tmp_path: Path) -> None:
    """The error surfaces from the node constructor after rclpy started: still one line, exit 2."""
    _assert_one_line_error(_run("launch", "sim", "--set", f"sim_rig.scenario={inputs['zero_cameras']}",
                                "--set", f"recorder.output={tmp_path / 'bag'}"), "zero_cameras.yaml", "camera")


def test_bad_graph(inputs: dict[str, Path]) -> None:
    _assert_one_line_error(_run("launch", str(inputs["bad_graph"])), "bad_graph.yaml", "unknown key 'parameter'")


@pytest.mark.parametrize("command", ["demo", "record"])
def test_unwritable_output(inputs: dict[str, Path], command: str) -> None:
    out = inputs["a_file"] / "sub"  # below a regular file: cannot be created, even by root
    args = ["demo", "--out", str(out)] if command == "demo" else ["record", "/t", "--out", str(out)]
    _assert_one_line_error(_run(*args), str(inputs["a_file"]))
    assert inputs["a_file"].read_text() == "not a directory"


def test_existing_output_is_not_overwritten(inputs: dict[str, Path]) -> None:
    bag = inputs["good_bag"]
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bag.iterdir()}
    _assert_one_line_error(_run("record", "/t", "--out", str(bag)), str(bag), "already exists")
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bag.iterdir()}
    assert after == before


@pytest.mark.parametrize(("module", "args", "needle"), [
    ("vidyn_ros.nodes.bag_player", ["-p", "bag:=/no/such/bag"], "bag_player: error: /no/such/bag"),
    ("vidyn_ros.nodes.recorder", ["-p", "topics:=['/t']"], "recorder: error: parameter 'output'"),
    ("vidyn_ros.nodes.sim_rig", ["-p", "render_scale:=0.0"], "sim_rig: error: render_scale"),
    ("vidyn_ros.nodes.recorder", ["-p", "output:=/nonexistent/x", "-p", "topics:=5"],
     "recorder: error: topics must be a list of strings"),  # wrong type: rclpy's multi-line exception becomes one line
])
def test_node_executables_fail_in_one_line(module: str, args: list[str], needle: str) -> None:
    _assert_one_line_error(_run("--ros-args", *args, module=module), needle)


def test_node_executable_with_malformed_ros_args() -> None:
    """rcl rejects the arguments in rclpy.init: exit 2 and our one line (after rcl's own log line), no traceback."""
    proc = _run("--ros-args", "-p", module="vidyn_ros.nodes.recorder")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("recorder: error: cannot start ROS: "), proc.stderr


def test_commands_print_no_library_info_logs(tmp_path: Path) -> None:
    """PyOpenGL's "INFO OpenGL.acceleratesupport: No OpenGL_accelerate module loaded" came with every rendering command:
    the CLI shows its own INFO messages and only warnings from libraries."""
    proc = _run("make-dataset", "push", "-o", str(tmp_path / "ds"), "--frames", "1", "--scale", "0.25")
    assert proc.returncode == 0, proc.stderr
    assert "OpenGL" not in proc.stdout + proc.stderr and "INFO" not in proc.stderr, proc.stderr


@pytest.mark.parametrize(("override", "needles"), [
    ("sim_rig.no_such_param=1", ["--set sim_rig.no_such_param=1: node 'sim_rig' (sim_rig) has no parameter "
                                 "'no_such_param' (valid: ", "render_scale"]),
    ("sim_rig.render_scale=0", ["render_scale must be in (0, 4], got 0"]),
    ("nope.seed=1", ["no node named 'nope'", "sim_rig"]),
])
def test_launch_refuses_unknown_or_out_of_range_parameters_before_starting(override: str, needles: list[str]) -> None:
    t0 = time.monotonic()
    _assert_one_line_error(_run("launch", "sim", "--set", override), *needles)
    assert time.monotonic() - t0 < 30  # refused before any node was built


def test_every_number_flag_has_a_range() -> None:
    """`vidyn track BAG --downscale 0` ended in "internal error: ValueError", `--budget -5` ran: every int/float flag
    of every command is checked by argparse against a range (vidyn_ros.params.ranged) before any work."""
    import argparse

    from vidyn_ros.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare = [f"vidyn {name} {'/'.join(a.option_strings) or a.dest}" for name, p in sub.choices.items()
            for a in p._actions if a.type in (int, float)]
    assert not bare, f"number flags without a range (use type=vidyn_ros.params.ranged(int, '[1, inf)')): {bare}"
    ranged = [a for p in sub.choices.values() for a in p._actions if getattr(a.type, "range", None) is not None]
    assert len(ranged) >= 30


@pytest.mark.parametrize(("argv", "needle"), [
    (["track", "BAG", "--out", "x", "--downscale", "0"], "argument --downscale: must be in [1, 64], got 0"),
    (["track", "BAG", "--out", "x", "--budget", "-5"], "argument --budget: must be in [1, 10000000], got -5"),
    (["eval-scene", "push", "--frames", "-3"], "argument --frames: must be >= 0, got -3"),
    (["replay", "BAG", "--rate", "fast"], "argument --rate: expected a number, got 'fast'"),
    (["launch", "sim", "--domain-id", "300"], "argument --domain-id: must be in [0, 232], got 300"),
    (["record", "-o", "x", "--duration", "inf"], "argument --duration: must be a finite number > 0, got inf"),
    (["record"], "the following arguments are required: -o/--out"),
])
def test_number_flags_out_of_range_are_one_line_errors_before_any_work(argv: list[str], needle: str) -> None:
    line = _assert_one_line_error(_run(*argv), needle)
    assert line.startswith(f"vidyn {argv[0]}: error: ") and line.endswith(f"(see vidyn {argv[0]} --help)")
