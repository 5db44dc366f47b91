"""Graph YAML (vidyn_ros/graph.py): shipped graphs, validation errors naming file and key, --set overrides,
substitutions, the ros2-launch node entries, and `vidyn launch` running a tiny graph in a real process."""

from __future__ import annotations

import os
import py_compile
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import ros_domain

from vidyn_ros import graph
from vidyn_ros.bags import BagReader
from vidyn_ros.errors import BagError, ConfigError
from vidyn_ros.paths import config_dir, launch_dir

REPO = Path(__file__).resolve().parent.parent
DOMAIN = ros_domain(__name__)  # this module's own ROS domain in this test run (test/conftest.py)


def test_shipped_graphs_load_and_use_the_shm_profile() -> None:
    names = graph.graph_names()
    assert {"sim", "replay", "rig"} <= set(names)
    for name in names:
        spec = graph.load_graph(name)
        assert spec.name == name and spec.nodes
        profile = Path(spec.env["FASTDDS_DEFAULT_PROFILES_FILE"])
        assert profile == config_dir() / "fastdds_shm.xml" and profile.is_file()
    sim = graph.load_graph("sim")
    assert [n.node for n in sim.nodes][:2] == ["sim_rig", "recorder"]
    assert sim.use_sim_time is True


def test_launch_files_are_thin_and_match_graphs() -> None:
    for name in graph.graph_names():
        f = launch_dir() / f"{name}.launch.py"
        assert f.is_file(), f"no launch file for graph {name}"
        py_compile.compile(str(f), doraise=True)
        text = f.read_text()
        assert f'launch_description("{name}")' in text
        assert len(text.splitlines()) < 20
    # and no launch file points at a graph that is not shipped (ros2 launch would fail at start)
    assert {f.name.removesuffix(".launch.py") for f in launch_dir().glob("*.launch.py")} == set(graph.graph_names())
    assert {"sim", "replay", "rig"} <= set(graph.graph_names())


def test_launch_node_entries() -> None:
    spec = graph.apply_overrides(graph.load_graph("sim"), graph.launch_overrides(
        {"sim_rig.seed": "7", "graph": "sim", "recorder.output": "/tmp/x"}))
    entries = {e["name"]: e for e in graph.launch_node_entries(spec)}
    assert entries["sim_rig"]["executable"] == "sim_rig" and entries["sim_rig"]["package"] == "vidyn_ros"
    params = entries["sim_rig"]["parameters"][0]
    assert params["seed"] == 7 and params["use_sim_time"] is True
    assert entries["recorder"]["parameters"][0]["output"] == "/tmp/x"


def test_overrides_parse_yaml_values_and_keep_the_original() -> None:
    spec = graph.load_graph("sim")
    out = graph.apply_overrides(spec, ["sim_rig.seed=3", "sim_rig.render_scale=0.5", "recorder.topics=[/a, /b]",
                                       "sim_rig.realtime=false", "sim_rig.scenario=bowling"])
    p = out.node_spec("sim_rig").parameters
    assert (p["seed"], p["render_scale"], p["realtime"], p["scenario"]) == (3, 0.5, False, "bowling")
    assert out.node_spec("recorder").parameters["topics"] == ["/a", "/b"]
    assert spec.node_spec("sim_rig").parameters["seed"] == 0  # deep copy
    with pytest.raises(ConfigError, match="no node named 'nope'"):
        graph.apply_overrides(spec, ["nope.x=1"])
    with pytest.raises(ConfigError, match=r"NODE\.PARAM=VALUE"):
        graph.apply_overrides(spec, ["seed=1"])
    with pytest.raises(ConfigError, match="parameter value"):
        graph.apply_overrides(spec, ["sim_rig.seed={a: 1}"])
    # a typo, or a value out of range, in --set is an error naming it (a typo in a safety limit must not pass)
    with pytest.raises(ConfigError) as info:
        graph.apply_overrides(spec, ["sim_rig.no_such_param=1"])
    assert str(info.value).startswith("--set sim_rig.no_such_param=1: node 'sim_rig' (sim_rig) has no parameter "
                                      "'no_such_param' (valid: ") and "render_scale" in str(info.value)
    with pytest.raises(ConfigError, match=r"^--set sim_rig.render_scale=-1: render_scale must be in \(0, 4\], got -1$"):
        graph.apply_overrides(spec, ["sim_rig.render_scale=-1"])
    assert graph.apply_overrides(spec, ["sim_rig.render_scale=1"]).node_spec("sim_rig").parameters["render_scale"] \
        == 1.0  # YAML's 1 where a float is declared


def test_substitutions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDYN_TEST_BAG", "/data/bag1")
    monkeypatch.delenv("VIDYN_TEST_UNSET", raising=False)
    assert graph.substitute("$(config)/x.xml") == f"{config_dir()}/x.xml"
    assert graph.substitute(["$(env VIDYN_TEST_BAG)", "$(env VIDYN_TEST_UNSET fallback)"]) == ["/data/bag1", "fallback"]
    with pytest.raises(ConfigError, match="VIDYN_TEST_UNSET"):
        graph.substitute("$(env VIDYN_TEST_UNSET)", "g.yaml: nodes[0].parameters.bag")
    with pytest.raises(ConfigError, match=r"unknown substitution '\$\(find x\)'"):
        graph.substitute("$(find x)", "g.yaml")


def test_graph_env_respects_the_user_and_vidyn_no_shm(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = graph.load_graph("sim")
    key = "FASTDDS_DEFAULT_PROFILES_FILE"
    monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("VIDYN_NO_SHM", raising=False)
    assert graph.env_to_set(spec)[key] == str(config_dir() / "fastdds_shm.xml")
    monkeypatch.setenv(key, "/my/profile.xml")
    assert key not in graph.env_to_set(spec)  # the user's own profile wins
    assert graph.env_to_set(spec, override=True)[key].endswith("fastdds_shm.xml")
    monkeypatch.delenv(key)
    monkeypatch.setenv("VIDYN_NO_SHM", "1")
    assert key not in graph.env_to_set(spec, override=True)
    assert key not in graph.apply_env(spec) and key not in os.environ


BAD_GRAPHS = [
    ("nodes: [", "not valid YAML"),
    ("- a\n- b\n", "must be a mapping"),
    ("nodez: []", "unknown key 'nodez'"),
    ("nodes: []", "'nodes' must be a non-empty list"),
    ("nodes: [{node: no_such_node}]", "nodes[0].node: no vidyn node 'no_such_node' (valid: bag_player"),
    ("nodes: [{node: _ros}]", "nodes[0].node: expected a node module name"),
    ("nodes: [{node: recorder, param: {}}]", "nodes[0]: unknown key 'param'"),
    ("nodes: [{node: recorder}, {node: recorder}]", "nodes[1].name: duplicate node name 'recorder'"),
    ("nodes: [{node: recorder, parameters: {topics: [/a, 1]}}]", "nodes[0].parameters.topics"),
    ("nodes: [{node: recorder, remappings: [a, b]}]", "nodes[0].remappings"),
    ("use_sim_time: yes please\nnodes: [{node: recorder}]", "use_sim_time"),
    # parameters are checked against the node's table before anything starts
    ("nodes: [{node: recorder, parameters: {outptu: x}}]",
     "nodes[0].parameters.outptu: node 'recorder' has no parameter 'outptu' (did you mean 'output'? valid: all, "),
    ("nodes: [{node: sim_rig, parameters: {render_scale: 0}}]",
     "nodes[0].parameters.render_scale: render_scale must be in (0, 4], got 0"),
    ("nodes: [{node: sim_rig, parameters: {seed: 1.5}}]", "nodes[0].parameters.seed: seed must be an integer, got 1.5"),
    ("nodes: [{node: recorder, parameters: {storage: tape}}]", "storage must be one of mcap, sqlite3, got 'tape'"),
    ("nodes: [{node: segmenter, parameters: {workspace: [0, 0, 1]}}]", "workspace needs 4 values, got 3"),
    ("nodes: [{node: sim_rig, parameters: {qos_overrides./cam0/color/image_raw.publisher.reliabilty: reliable}}]",
     "malformed QoS override"),
    ("nodes: [{node: sim_rig, parameters: {qos_overrides./cam0/color/image_raw.publisher.reliability: sure}}]",
     "must be one of reliable, best_effort, system_default, got 'sure'"),
]


@pytest.mark.parametrize(("text", "message"), BAD_GRAPHS)
def test_bad_graphs_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        graph.load_graph(f)
    msg = str(info.value)
    assert str(f) in msg and message in msg and "\n" not in msg


def test_missing_graph_lists_shipped_ones() -> None:
    with pytest.raises(ConfigError, match=r"graph file not found \(shipped graphs: .*sim"):
        graph.load_graph("no_such_graph")


def _env() -> dict[str, str]:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN), MUJOCO_GL="osmesa", PYTHONUNBUFFERED="1")
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    return env


def _count_in_bag(bag: Path, topic: str) -> int:
    """Messages on ``topic`` in a bag that may still be being written (0 while nothing readable is there)."""
    try:
        with BagReader(bag) as r:
            return r.topics[topic].count if topic in r.topics else 0
    except BagError:
        return 0


def test_vidyn_launch_runs_a_tiny_graph_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    """sim_rig (160x120) -> recorder in one `vidyn launch` process; SIGINT after 10 frames; the bag is complete."""
    g = tmp_path / "tiny.yaml"
    bag = tmp_path / "bag"
    g.write_text(yaml.safe_dump({"name": "tiny", "use_sim_time": True, "nodes": [
        {"node": "sim_rig", "parameters": {"scenario": "push", "render_scale": 0.25, "max_frames": -1,
                                           "start_delay_s": 1.5, "calibration_out": str(tmp_path / "c.yaml")}},
        {"node": "recorder", "parameters": {"topics": ["/cam0/color/image_raw", "/vidyn/sim/object_poses"],
                                            "output": str(bag), "calibration": str(tmp_path / "c.yaml"),
                                            "flush_period_s": 0.3}},
    ]}))
    proc = subprocess.Popen([sys.executable, "-m", "vidyn_ros.cli", "launch", str(g), "--set", "sim_rig.seed=2"],
                            env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Signal once the bag being written (flushed every 0.3 s, read while incomplete) holds 10 frames.
        t_end = time.monotonic() + 90
        while _count_in_bag(bag, "/cam0/color/image_raw") < 10 and time.monotonic() < t_end and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "stopped (signal)" in out and "Traceback" not in out
    with BagReader(bag) as r:
        assert not r.recovered
        n = r.topics["/cam0/color/image_raw"].count
        assert n >= 10, out
        assert r.topics["/vidyn/sim/object_poses"].count in (n, n + 1, n - 1)
        stamps = [s for _t, _m, s, _raw in r.messages(["/cam0/color/image_raw"])]
        assert stamps == [round((k + 1) * 1e9 / 30) for k in range(n)]  # every frame, sim time, no gaps
        assert r.calibration() is not None


def test_vidyn_launch_duration_and_done(tmp_path: Path) -> None:
    """The graph ends by itself when the rig has published max_frames (`done`).

    The shipped sim graph's rig and recorder (with their shipped parameters), written to a file: the nodes other
    stages add to sim.yaml would make this test slow and let it depend on files they read from out/sim/."""
    sim = yaml.safe_load((config_dir() / "graphs" / "sim.yaml").read_text())
    sim["nodes"] = [n for n in sim["nodes"] if n["node"] in ("sim_rig", "recorder")]
    g = tmp_path / "sim_rig_recorder.yaml"
    g.write_text(yaml.safe_dump(sim))
    bag = tmp_path / "bag"
    proc = subprocess.run(
        [sys.executable, "-m", "vidyn_ros.cli", "launch", str(g), "--set", "sim_rig.render_scale=0.25",
         "--set", "sim_rig.max_frames=5", "--set", "sim_rig.realtime=false", "--set", "sim_rig.start_delay_s=0.5",
         "--set", f"sim_rig.calibration_out={tmp_path / 'c.yaml'}", "--set", f"recorder.output={bag}",
         "--set", f"recorder.calibration={tmp_path / 'c.yaml'}", "--duration", "60"],
        env=_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stopped (done)" in proc.stdout
    with BagReader(bag) as r:
        assert r.topics["/vidyn/sim/cam3/mask"].count == 5  # the true masks (ground truth)
        assert r.calibration() is not None
    from mcap.reader import make_reader

    with open(next(bag.glob("*.mcap")), "rb") as f:  # `vidyn launch sim` compresses as the demo does (zstd)
        assert {c.compression for c in make_reader(f).get_summary().chunk_indexes} == {"zstd"}


def test_every_node_documents_its_parameters_and_docs_nodes_md_is_current() -> None:
    """Each module in vidyn_ros/nodes/ is a node (NODE_NAME, PARAMS with descriptions, create_node, main), and
    docs/nodes.md is what its PARAMS tables generate (so the reference cannot drift from the code)."""
    import pkgutil

    import vidyn_ros.nodes as pkg
    from vidyn_ros.nodes import _ros

    names = {m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")}
    mods = {m.__name__.rpartition(".")[2]: m for m in _ros.node_modules()}
    assert {"sim_rig", "recorder", "bag_player"} <= names
    assert set(mods) == names, f"node modules without a PARAMS table: {sorted(names - set(mods))}"
    for name, mod in mods.items():
        assert mod.NODE_NAME == name and callable(mod.create_node) and callable(mod.main), name
        params = [p.name for p in mod.PARAMS]
        assert len(params) == len(set(params)), f"{name}: duplicate parameter"
        for p in mod.PARAMS:
            assert len(p.description) > 10 and "\n" not in p.description, f"{name}.{p.name}: describe it in one line"
            if p.element_type in (int, float):  # checked before any work: give every number its range=
                assert p.interval is not None, f"{name}.{p.name}: a number needs a range (vidyn_ros/params.py)"
    text = (REPO / "docs" / "nodes.md").read_text()
    for name, mod in mods.items():
        assert f"## {name}\n" in text and all(f"| `{p.name}` |" in text for p in mod.PARAMS), name
    assert text == _ros.nodes_reference_markdown(), f"docs/nodes.md is out of date: run `{_ros.NODES_DOC_COMMAND}`"


def test_rviz_config_shows_the_topic_contract() -> None:
    from vidyn_ros import msgs

    doc = yaml.safe_load((REPO / "rviz" / "vidyn.rviz").read_text())
    vm = doc["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "world"
    topics = {d["Topic"]["Value"]: d["Class"] for d in vm["Displays"] if "Topic" in d}
    for cam in ("cam0", "cam1", "cam2", "cam3"):  # placed by /tf_static (the sim rig, realsense and player publish it)
        assert topics[msgs.color_topic(cam)] == "rviz_default_plugins/Camera"
    assert any(d["Class"] == "rviz_default_plugins/TF" and d["Enabled"] for d in vm["Displays"])
    assert topics["/vidyn/scene/gaussians"] == "rviz_default_plugins/PointCloud2"
    assert topics["/vidyn/scene/objects"] == "rviz_default_plugins/MarkerArray"
    rgb = [d for d in vm["Displays"] if d.get("Topic", {}).get("Value") == "/vidyn/scene/gaussians"]
    assert any(d["Color Transformer"] == "RGB8" for d in rgb)


def _start_and_watch(argv: list[str]) -> tuple[subprocess.Popen, list[str], dict[str, threading.Event]]:
    """A process whose merged output is collected by a thread; ``events[text]`` is set when a line contains it."""
    proc = subprocess.Popen(argv, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    events: dict[str, threading.Event] = {k: threading.Event() for k in ("initialising the scene", "ready")}

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            for text, ev in events.items():
                if text in line:
                    ev.set()

    threading.Thread(target=read, daemon=True).start()
    return proc, lines, events


def test_vidyn_launch_stops_within_2_s_of_sigint_while_the_scene_initialises(tmp_path: Path) -> None:
    """Ctrl-C while the scene node is busy in torch (initialising for as long as it likes): the graph stops within
    2 s (it took 22 s), the recorder's bag is closed, the scene is left behind."""
    g = tmp_path / "g.yaml"
    bag = tmp_path / "bag"
    calib = str(tmp_path / "c.yaml")
    g.write_text(yaml.safe_dump({"name": "busy", "use_sim_time": True, "nodes": [
        {"node": "sim_rig", "parameters": {"scenario": "push", "render_scale": 0.25, "max_frames": -1,
                                           "start_delay_s": 0.5, "calibration_out": calib}},
        {"node": "recorder", "parameters": {"topics": ["/cam0/color/image_raw"], "output": str(bag),
                                            "calibration": calib}},
        {"node": "scene", "parameters": {"calibration": calib, "use_masks": False, "budget": 2000,
                                         "init_iters": 100000, "publish_renders": False}},
    ]}))
    proc, lines, events = _start_and_watch([sys.executable, "-m", "vidyn_ros.cli", "launch", str(g)])
    try:
        assert events["initialising the scene"].wait(120), "".join(lines)
        time.sleep(0.5)  # well inside the optimisation
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines)
    assert stop_s < 2.5, f"stopped {stop_s:.1f} s after SIGINT\n{out}"
    assert "Traceback" not in out and "scene: still closing" in out, out  # left behind, not waited for
    # normally it ends by itself; on a starved CPU the 2 s watchdog may cut the teardown after the bag was closed
    assert (code == 0 and "stopped (signal)" in out) or (code == 130 and "closed bag" in out), out
    with BagReader(bag) as r:  # closed: summary written, nothing to recover
        assert not r.recovered and r.topics["/cam0/color/image_raw"].count >= 1


STUCK = r"""
import os, signal, sys, time
from vidyn_ros.nodes._runtime import Shutdown
Shutdown(stop_within_s=float(sys.argv[1])).install()
os.kill(os.getpid(), signal.SIGINT)
print("ready", flush=True)
while True:  # a shutdown that never finishes (a close stuck in native code)
    time.sleep(0.01)
"""


@pytest.mark.parametrize("second_signal", [True, False])
def test_a_second_ctrl_c_stops_at_once_and_a_stuck_shutdown_is_cut_off(second_signal: bool) -> None:
    proc, lines, events = _start_and_watch([sys.executable, "-c", STUCK, "3.0"])
    try:
        assert events["ready"].wait(60), "".join(lines)
        t0 = time.monotonic()
        if second_signal:
            proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines)
    assert code == 130, out
    if second_signal:
        assert took < 1.0 and "second SIGINT: stopping now" in out, (took, out)
    else:  # the watchdog: 3 s after the first signal, whatever the process is doing
        assert 2.0 < took < 4.0 and "still stopping 3 s after SIGINT" in out, (took, out)


def _published_by(graph_name: str) -> set[str]:
    """Topic patterns of the contract (vidyn_ros/qos.py) that a node of the shipped graph publishes."""
    from vidyn_ros.qos import CONTRACT

    kinds = {n.node for n in graph.load_graph(graph_name).nodes}
    return {row.topic for row in CONTRACT if kinds & set(row.publishers)}


def test_rviz_enables_only_displays_of_published_topics_with_matching_qos() -> None:
    """A display is enabled only when `vidyn launch sim` and `vidyn launch rig` both publish its topic, and it asks for
    a QoS its publishers can serve (a reliable display on a best-effort topic receives nothing)."""
    from vidyn_ros.qos import CONTRACT, QOS_CLASSES, topic_qos

    published = _published_by("sim") & _published_by("rig")
    doc = yaml.safe_load((REPO / "rviz" / "vidyn.rviz").read_text())
    enabled, checked = [], 0
    for d in doc["Visualization Manager"]["Displays"]:
        topic = d.get("Topic", {}).get("Value") if isinstance(d.get("Topic"), dict) else None
        if topic is None:
            continue
        qos = topic_qos(topic)
        assert qos is not None, f"rviz display {d['Name']!r}: {topic} is not in the topic contract"
        reliability, durability, _ = QOS_CLASSES[qos]
        if reliability == "best_effort":
            assert d["Topic"]["Reliability Policy"] == "Best Effort", f"{d['Name']!r} would receive nothing"
        if durability == "volatile":
            assert d["Topic"]["Durability Policy"] == "Volatile", f"{d['Name']!r} would receive nothing"
        checked += 1
        if d.get("Enabled"):
            row = next(r for r in CONTRACT if r.regex.match(topic))
            enabled.append(d["Name"])
            assert row.topic in published, f"rviz display {d['Name']!r} is enabled but nothing publishes {topic}"
    assert checked >= 10 and len(enabled) >= 6, enabled


def test_architecture_topic_contract_has_the_qos_of_vidyn_ros_qos() -> None:
    from vidyn_ros.qos import topic_qos

    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    rows = [ln.split("|") for ln in text.split("## Topic contract", 1)[1].split("\n## ", 1)[0].splitlines()
            if ln.startswith("| /")]
    assert len(rows) >= 20
    for cells in rows:
        topic, qos = cells[1].strip(), cells[3].strip()
        assert topic_qos(topic.replace("<cam>", "cam0")) == qos, f"docs/ARCHITECTURE.md: {topic} says {qos!r}"
