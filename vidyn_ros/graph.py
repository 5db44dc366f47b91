"""Node graphs: a YAML file listing which vidyn nodes run, with which parameters and remappings.

The same file is run in one process by ``vidyn launch GRAPH`` (MultiThreadedExecutor, for machines without the ros2
CLI) and handed to ``ros2 launch`` by the thin ``launch/<name>.launch.py`` files. Parsing and validation are ROS-free
(checking each node's parameters against its ``PARAMS`` table imports the node module, and with it rclpy; nothing
else does before ``run_graph``), so the graph logic is tested without launch_ros.

Format (``config/graphs/<name>.yaml``)::

    name: sim                          # optional, defaults to the file stem
    description: simulated rig -> recorder
    env:                               # set before rclpy.init unless already set in the environment
      FASTDDS_DEFAULT_PROFILES_FILE: $(config)/fastdds_shm.xml
    use_sim_time: false                # optional: sets use_sim_time on every node (a node's own value wins)
    nodes:
      - node: sim_rig                  # module vidyn_ros.nodes.sim_rig (also the console script for ros2 launch)
        name: sim_rig                  # optional, defaults to `node`; unique in the graph; used by --set
        namespace: ""                  # optional
        parameters: {scenario: push, seed: 0}
        remappings: {/vidyn/cmd: /teleop/cmd}   # optional, from: to

Substitutions inside strings: ``$(share)`` (package share dir), ``$(config)`` (its config/), ``$(env NAME)`` and
``$(env NAME default)``.

Ending: a node that finishes (``node.done`` becomes true: a bag player at the end of a non-looping bag, a simulated
rig after ``max_frames``) ends the whole graph, like ``on_exit=Shutdown`` in ros2 launch; so does SIGINT/SIGTERM or
``--duration``. Every node's ``close()`` runs before the process exits (the recorder closes its bag there).
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vidyn_ros.errors import ConfigError
from vidyn_ros.params import Param, check_params, unknown_name_error

log = logging.getLogger(__name__)

_TOP_KEYS = {"name", "description", "env", "use_sim_time", "nodes"}
_NODE_KEYS = {"node", "name", "namespace", "parameters", "remappings"}
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass
class NodeSpec:
    """One node of a graph."""

    node: str  # module name under vidyn_ros.nodes (= console script)
    name: str  # ROS node name, unique in the graph
    namespace: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: dict[str, str] = field(default_factory=dict)


@dataclass
class GraphSpec:
    """A whole graph, validated, substitutions expanded."""

    name: str
    nodes: list[NodeSpec]
    env: dict[str, str] = field(default_factory=dict)
    use_sim_time: bool | None = None
    description: str = ""
    source: str = "<memory>"

    def node_spec(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise ConfigError(f"{self.source}: no node named {name!r} in graph {self.name!r} "
                          f"(have {', '.join(n.name for n in self.nodes)})")


def node_kinds() -> list[str]:
    """The node modules in vidyn_ros/nodes/ (names, without importing them)."""
    import pkgutil

    import vidyn_ros.nodes as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def node_params_table(kind: str) -> list[Param]:
    """A node module's ``PARAMS`` table (imports vidyn_ros.nodes.<kind>, and so rclpy)."""
    return list(importlib.import_module(f"vidyn_ros.nodes.{kind}").PARAMS)


def graphs_dir() -> Path:
    from vidyn_ros.paths import config_dir

    return config_dir() / "graphs"


def single_node(node: str, parameters: dict[str, Any], name: str | None = None) -> GraphSpec:
    """A graph of one node (``vidyn record`` / ``vidyn replay`` run their node this way)."""
    return GraphSpec(name=name or node, nodes=[NodeSpec(node, node, parameters=dict(parameters))])


def graph_names() -> list[str]:
    """Names of the graphs shipped in config/graphs/."""
    d = graphs_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def resolve_graph_path(graph: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped graph (``sim`` -> config/graphs/sim.yaml)."""
    p = Path(graph)
    if p.is_file():
        return p
    shipped = graphs_dir() / f"{graph}.yaml"
    if shipped.is_file() and os.sep not in str(graph):
        return shipped
    names = ", ".join(graph_names()) or "none"
    raise ConfigError(f"{graph}: graph file not found (shipped graphs: {names})")


# -------------------------------------------------------------------------------------------------------- substitution
_SUBST_RE = re.compile(r"\$\((\w+)(?:\s+([^)\s]+))?(?:\s+([^)]*))?\)")


def substitute(value: Any, where: str = "") -> Any:
    """Expand ``$(share)``, ``$(config)``, ``$(env NAME [default])`` in strings (recursively in lists/dicts)."""
    if isinstance(value, list):
        return [substitute(v, where) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, f"{where}.{k}") for k, v in value.items()}
    if not isinstance(value, str) or "$(" not in value:
        return value
    from vidyn_ros.paths import config_dir, share_dir

    def repl(m: re.Match) -> str:
        kind, arg, default = m.group(1), m.group(2), m.group(3)
        if kind == "share":
            return str(share_dir())
        if kind == "config":
            return str(config_dir())
        if kind == "env" and arg:
            if arg in os.environ:
                return os.environ[arg]
            if default is not None:
                return default
            raise ConfigError(f"{where}: environment variable {arg!r} is not set (use $(env {arg} default))")
        raise ConfigError(f"{where}: unknown substitution {m.group(0)!r} (use $(share), $(config), $(env NAME))")

    return _SUBST_RE.sub(repl, value)


# ------------------------------------------------------------------------------------------------------------- parsing
def _check_param_value(v: Any, where: str) -> None:
    scalar = (bool, int, float, str)
    if isinstance(v, scalar):
        return
    if isinstance(v, list):
        if not v:
            return
        kinds = {bool if isinstance(x, bool) else (float if isinstance(x, int | float) else type(x)) for x in v}
        if len(kinds) == 1 and next(iter(kinds)) in (bool, float, str):
            return
        raise ConfigError(f"{where}: a list parameter must hold only numbers, only strings or only booleans")
    raise ConfigError(f"{where}: unsupported parameter value {v!r} (use a number, string, bool or a flat list)")


def _check_keys(doc: dict, allowed: set[str], where: str) -> None:
    unknown = set(doc) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(allowed))})")


def parse_graph(doc: Any, source: str = "<memory>", default_name: str = "graph") -> GraphSpec:
    """Validate a loaded YAML document -> GraphSpec. ConfigError names the file and key."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: a graph must be a mapping with a 'nodes' list")
    _check_keys(doc, _TOP_KEYS, source)
    nodes_doc = doc.get("nodes")
    if not isinstance(nodes_doc, list) or not nodes_doc:
        raise ConfigError(f"{source}: key 'nodes' must be a non-empty list")
    env = doc.get("env") or {}
    if not isinstance(env, dict):
        raise ConfigError(f"{source}: key 'env' must be a mapping NAME: value")
    use_sim_time = doc.get("use_sim_time")
    if use_sim_time is not None and not isinstance(use_sim_time, bool):
        raise ConfigError(f"{source}: key 'use_sim_time' must be true or false")
    nodes: list[NodeSpec] = []
    for i, nd in enumerate(nodes_doc):
        where = f"{source}: nodes[{i}]"
        if not isinstance(nd, dict):
            raise ConfigError(f"{where}: must be a mapping with at least 'node'")
        _check_keys(nd, _NODE_KEYS, where)
        kind = nd.get("node")
        if not isinstance(kind, str) or not _NAME_RE.match(kind):
            raise ConfigError(f"{where}.node: expected a node module name like 'sim_rig', got {kind!r}")
        if kind not in node_kinds():
            raise unknown_name_error("vidyn node", kind, node_kinds(), f"{where}.node")
        name = nd.get("name", kind)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(f"{where}.name: invalid ROS node name {name!r}")
        if any(n.name == name for n in nodes):
            raise ConfigError(f"{where}.name: duplicate node name {name!r}")
        params = nd.get("parameters") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.parameters: must be a mapping name: value")
        for k, v in params.items():
            _check_param_value(v, f"{where}.parameters.{k}")
        remaps = nd.get("remappings") or {}
        if not isinstance(remaps, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in remaps.items()):
            raise ConfigError(f"{where}.remappings: must be a mapping from-topic: to-topic")
        ns = nd.get("namespace", "") or ""
        if not isinstance(ns, str):
            raise ConfigError(f"{where}.namespace: must be a string")
        # Every name known to the node and every value in range, before anything starts (a typo in a safety limit
        # must not pass silently).
        params = check_params(node_params_table(kind), substitute(dict(params), f"{where}.parameters"),
                              lambda k, w=where: f"{w}.parameters.{k}", owner=f"node {kind!r}")
        nodes.append(NodeSpec(kind, name, ns, params, substitute(dict(remaps), f"{where}.remappings")))
    name = doc.get("name", default_name)
    return GraphSpec(
        name=str(name),
        nodes=nodes,
        env={str(k): str(substitute(v, f"{source}: env.{k}")) for k, v in env.items()},
        use_sim_time=use_sim_time,
        description=str(doc.get("description", "")),
        source=source,
    )


def load_graph(graph: str | Path) -> GraphSpec:
    """Load and validate a graph by path or shipped name. ConfigError (one line) on any problem."""
    path = resolve_graph_path(graph)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    return parse_graph(doc, source=str(path), default_name=path.stem)


def apply_overrides(spec: GraphSpec, overrides: Sequence[str]) -> GraphSpec:
    """``["sim_rig.seed=3", "recorder.topics=[/a, /b]"]`` -> a copy of ``spec`` with those parameters set.

    Values are parsed as YAML (numbers, booleans, lists); the node is named by its graph name.
    """
    spec = copy.deepcopy(spec)
    for item in overrides:
        key, sep, raw = item.partition("=")
        node_name, dot, param = key.strip().partition(".")
        if not sep or not dot or not node_name or not param:
            raise ConfigError(f"--set {item!r}: expected NODE.PARAM=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if value is None:
            value = ""
        _check_param_value(value, f"--set {item}")
        node = spec.node_spec(node_name)
        checked = check_params(node_params_table(node.node), {param: substitute(value, f"--set {item}")},
                               lambda _k, i=item: f"--set {i}", owner=f"node {node_name!r} ({node.node})")
        node.parameters[param] = checked[param]
    return spec


def env_to_set(spec: GraphSpec, override: bool = False) -> dict[str, str]:
    """The part of the graph's env to export: what the user has not set already (unless ``override``), and no Fast
    DDS profile when ``VIDYN_NO_SHM=1`` (the documented switch back to Fast DDS defaults, see
    vidyn_ros.nodes._ros.setup_fastdds_env)."""
    no_shm = os.environ.get("VIDYN_NO_SHM") == "1"
    return {k: v for k, v in spec.env.items()
            if (override or k not in os.environ) and not (no_shm and k == "FASTDDS_DEFAULT_PROFILES_FILE")}


def apply_env(spec: GraphSpec, override: bool = False) -> dict[str, str]:
    """Export :func:`env_to_set` into this process's environment. Returns what was set."""
    done = env_to_set(spec, override)
    os.environ.update(done)
    return done


def node_parameters(spec: GraphSpec, node: NodeSpec) -> dict[str, Any]:
    """A node's parameters including the graph-wide use_sim_time (the node's own value wins)."""
    params = dict(node.parameters)
    if spec.use_sim_time is not None:
        params.setdefault("use_sim_time", spec.use_sim_time)
    return params


# ------------------------------------------------------------------------------------------------------------- running
@dataclass
class GraphRun:
    """What ``run_graph`` reports: why it stopped, and per node whatever its ``summary()`` returned."""

    reason: str
    summaries: dict[str, Any] = field(default_factory=dict)
    fatal: dict[str, str] = field(default_factory=dict)
    left_behind: list[str] = field(default_factory=list)  # nodes still closing when the graph had to stop


def run_graph(
    spec: GraphSpec,
    duration_s: float | None = None,
    until: Callable[[list[Any]], bool] | None = None,
    domain_id: int | None = None,
    install_signal_handlers: bool = True,
    on_started: Callable[[list[Any]], None] | None = None,
    extra_nodes: Callable[[Any], list[Any]] | None = None,
) -> GraphRun:
    """Build every node of ``spec`` in one process and spin them with a MultiThreadedExecutor.

    Stops on SIGINT/SIGTERM, after ``duration_s`` wall seconds, when a node reports ``done``, or when
    ``until(nodes)`` returns true. Each node's ``close()`` runs before return, also on errors, so the recorder's bag
    is always closed. A VidynError while building a node propagates (the CLI prints it as one line) after the nodes
    already built are closed. Uses its own rclpy Context, so it can run inside a process that uses rclpy elsewhere.
    ``extra_nodes(context)`` adds nodes built by the caller (e.g. the demo's scripted command source) to the same
    executor; they are closed and destroyed like the graph's nodes.
    """
    apply_env(spec)
    import rclpy
    from rclpy.context import Context

    from vidyn_ros.nodes import _ros

    ctx = Context()
    _ros.init_rclpy(context=ctx, domain_id=domain_id)  # SHM profile, no rclpy signal handlers (``shutdown`` has them)
    shutdown = _ros.Shutdown()
    if install_signal_handlers:
        shutdown.install()
    nodes: list[Any] = []
    run = GraphRun("error")

    def collect(closed: list[Any]) -> None:  # after close(), before destroy: final counts, still a valid handle
        for n in closed:
            if hasattr(n, "summary"):
                run.summaries[n.get_name()] = n.summary()
            if getattr(n, "fatal", None):
                run.fatal[n.get_name()] = str(n.fatal)

    try:
        shutdown.interrupt = True  # a signal while nodes are being built (torch imports take seconds) stops building
        for ns in spec.nodes:
            mod = importlib.import_module(f"vidyn_ros.nodes.{ns.node}")
            factory = getattr(mod, "create_node", None)
            if factory is None:
                raise ConfigError(f"{spec.source}: node module vidyn_ros.nodes.{ns.node} has no create_node()")
            opts = _ros.NodeOptions(ns.name, ns.namespace or None, node_parameters(spec, ns), ns.remappings, ctx)
            nodes.append(factory(**opts.node_kwargs(ns.name)))
            _ros.check_qos_overrides(nodes[-1])
        if extra_nodes is not None:
            nodes.extend(extra_nodes(ctx))
        shutdown.interrupt = False
        if on_started is not None:
            on_started(nodes)

        def stop() -> bool:
            if any(getattr(n, "done", False) for n in nodes):
                return True
            return bool(until is not None and until(nodes))

        run.reason = _ros.spin_nodes(nodes, context=ctx, duration_s=duration_s, until=stop, shutdown=shutdown)
    except KeyboardInterrupt:  # a signal while nodes were being built
        run.reason = "signal"
    finally:
        shutdown.interrupt = False
        # After a signal the nodes close together, and what does not finish in time is left behind: the process must
        # end within STOP_WITHIN_S (the CLI then exits without waiting for it, vidyn_ros.workers.exit_process).
        timeout = shutdown.left_s(_ros.CLOSE_S) if shutdown.event.is_set() else None
        run.left_behind = _ros.close_nodes(nodes, before_destroy=collect, timeout_s=timeout)
        shutdown.restore()
        rclpy.try_shutdown(context=ctx)
    return run


# ------------------------------------------------------------------------------------------------------- ros2 launch
def launch_node_entries(spec: GraphSpec) -> list[dict[str, Any]]:
    """The keyword arguments of one ``launch_ros.actions.Node`` per graph node (ROS-free, so it is tested here)."""
    return [
        {
            "package": "vidyn_ros",
            "executable": n.node,
            "name": n.name,
            "namespace": n.namespace or "",
            "parameters": [node_parameters(spec, n)],
            "remappings": list(n.remappings.items()),
            "output": "screen",
        }
        for n in spec.nodes
    ]


def launch_overrides(launch_configurations: dict[str, str]) -> list[str]:
    """``ros2 launch ... sim_rig.seed:=3`` arrives as ``{"sim_rig.seed": "3"}`` -> ``--set`` items."""
    return [f"{k}={v}" for k, v in launch_configurations.items() if "." in k]


def launch_description(graph: str | Path) -> Any:
    """A launch.LaunchDescription for ``ros2 launch``: the graph's env, then one Node per graph node.

    Node parameters can be overridden on the command line as ``NODE.PARAM:=VALUE`` (YAML-parsed, as ``--set``), and
    ``graph:=FILE`` swaps the whole graph. Any node exiting shuts the launch down, as in ``vidyn launch``.
    Imports launch/launch_ros here: they come with a ROS distro, not from PyPI.
    """
    from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch_ros.actions import Node

    from launch import LaunchDescription

    def build(context: Any) -> list[Any]:
        from launch.actions import SetEnvironmentVariable

        spec = load_graph(context.launch_configurations.get("graph", str(graph)))
        spec = apply_overrides(spec, launch_overrides(dict(context.launch_configurations)))
        actions: list[Any] = [SetEnvironmentVariable(k, v) for k, v in env_to_set(spec).items()]
        for entry in launch_node_entries(spec):
            node = Node(**entry)
            actions.append(node)
            actions.append(RegisterEventHandler(OnProcessExit(target_action=node,
                                                              on_exit=[EmitEvent(event=Shutdown())])))
        return actions

    return LaunchDescription([
        DeclareLaunchArgument("graph", default_value=str(graph), description="graph YAML (name or path)"),
        OpaqueFunction(function=build),
    ])
