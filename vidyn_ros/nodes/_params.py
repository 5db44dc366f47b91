"""Declaring a node's ``Param`` table (vidyn_ros/params.py) as ROS parameters, and the generated parameter reference.

Every parameter gets a ROS descriptor with its description, its range (``ros2 param describe`` shows it) and
``read_only`` unless the table marks it ``dynamic``. A ``ros2 param set`` is checked by the same ``Param.check`` as
the node's start-up values (an integer where a float is declared is accepted), and a dynamic parameter's new value
appears in the namespace ``declare_params`` returned, where the node reads it.

Regenerate docs/nodes.md with ``python -m vidyn_ros.nodes._params > docs/nodes.md`` (NODES_DOC_COMMAND).
"""

from __future__ import annotations

import importlib
import math
import weakref
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from vidyn_ros.errors import ConfigError
from vidyn_ros.params import (
    BUILTIN_PARAMS,
    QOS_OVERRIDE_RE,
    Param,
    check_builtin,
    param_table_markdown,
    unknown_name_error,
)

# QoS override parameters each node was given (checked against its publishers once it is built)
_QOS_OVERRIDES: weakref.WeakKeyDictionary[Node, list[str]] = weakref.WeakKeyDictionary()

_ARRAY_TYPES = {
    str: Parameter.Type.STRING_ARRAY,
    float: Parameter.Type.DOUBLE_ARRAY,
    int: Parameter.Type.INTEGER_ARRAY,
    bool: Parameter.Type.BOOL_ARRAY,
}
_SCALAR_TYPES = {str: Parameter.Type.STRING, float: Parameter.Type.DOUBLE, int: Parameter.Type.INTEGER,
                 bool: Parameter.Type.BOOL}
_INT64 = 2**63 - 1


def param_type(p: Param) -> Parameter.Type:
    """The ROS parameter type of ``p``."""
    return (_ARRAY_TYPES if p.is_list else _SCALAR_TYPES)[p.element_type]


def descriptor(p: Param) -> ParameterDescriptor:
    """Description, read-only unless dynamic, and the range as ROS ranges (closed: an open bound is enforced by the
    set callback), which ``ros2 param describe`` and rqt show."""
    desc = ParameterDescriptor(description=p.description, read_only=not p.dynamic, dynamic_typing=False,
                               type=param_type(p).value)
    rng = p.interval
    if rng is not None and not p.is_list:
        if p.element_type is int:
            lo = -_INT64 if math.isinf(rng.lo) else int(rng.lo)
            hi = _INT64 if math.isinf(rng.hi) else int(rng.hi)
            desc.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=rng.lo, to_value=rng.hi, step=0.0)]
    if p.choices:
        desc.additional_constraints = f"one of: {', '.join(p.choices)}"
    return desc


def declare_params(node: Node, table: Sequence[Param]) -> SimpleNamespace:
    """Declare every parameter of ``table`` on ``node`` and return their current values as attributes.

    Values set by overrides (``--ros-args -p``, launch files, ``vidyn launch --set``) win over defaults. A wrong type
    or a value out of range raises ConfigError naming the node and parameter (one line). A node built with
    ``automatically_declare_parameters_from_overrides`` (``run_node`` and ``vidyn launch`` build them so) also learns
    of overrides it has no parameter for: ConfigError naming them and listing the valid ones.

    How, with public rclpy API only: each parameter is first declared dynamically typed, which yields the override (of
    whatever type) or nothing; the value is checked and converted, and the parameter is declared again with its
    descriptor and that value (``ignore_override``).
    """
    who = node.get_name()
    out = SimpleNamespace()
    by_name = {p.name: p for p in table}
    for p in table:
        if node.has_parameter(p.name):  # declared from overrides (automatically_declare_parameters_from_overrides)
            given = node.get_parameter(p.name).value
        else:
            given = node.declare_parameter(p.name, None, ParameterDescriptor(dynamic_typing=True)).value
        node.undeclare_parameter(p.name)
        value = p.check(p.default if given is None else _plain(given), who)
        if p.is_list and not value:  # an empty list has no ROS type of its own: declare the table's array type
            declared = node.declare_parameter(p.name, param_type(p), descriptor(p), ignore_override=True).value or []
        else:
            declared = node.declare_parameter(p.name, value, descriptor(p), ignore_override=True).value
        setattr(out, p.name, _plain(declared))
    names = node.list_parameters([], 0).names
    unknown = [n for n in names if n not in by_name and n not in BUILTIN_PARAMS and not n.startswith("qos_overrides.")]
    if unknown:
        raise unknown_name_error("parameter", unknown[0], [*by_name, "use_sim_time"], who)
    qos = []
    for n in names:
        if n.startswith("qos_overrides.") and n not in by_name:  # declared from an override: check it, and let rclpy
            check_builtin(n, _plain(node.get_parameter(n).value), who)  # declare it read-only with the publisher
            if not QOS_OVERRIDE_RE.match(n):
                raise ConfigError(f"{who}: malformed QoS override {n!r} (expected "
                                  "qos_overrides./TOPIC.publisher.reliability|durability|history|depth)")
            node.undeclare_parameter(n)
            qos.append(n)
    _QOS_OVERRIDES[node] = qos

    def coerce(params: list[Parameter]) -> list[Parameter]:  # `ros2 param set /n rate 2` sends an integer
        fixed = []
        for prm in params:
            p = by_name.get(prm.name)
            if p is not None and p.element_type is float and prm.type_ == Parameter.Type.INTEGER:
                prm = Parameter(prm.name, Parameter.Type.DOUBLE, float(prm.value))
            elif p is not None and p.element_type is float and prm.type_ == Parameter.Type.INTEGER_ARRAY:
                prm = Parameter(prm.name, Parameter.Type.DOUBLE_ARRAY, [float(v) for v in prm.value])
            fixed.append(prm)
        return fixed

    def validate(params: list[Parameter]) -> SetParametersResult:
        for prm in params:
            p = by_name.get(prm.name)
            if p is None:
                continue
            try:
                p.check(_plain(prm.value), who)
            except ConfigError as err:
                return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def apply(params: list[Parameter]) -> None:
        for prm in params:
            if prm.name in by_name:
                setattr(out, prm.name, _plain(prm.value))
                node.get_logger().info(f"parameter {prm.name} = {prm.value!r}")

    node.add_pre_set_parameters_callback(coerce)
    node.add_on_set_parameters_callback(validate)
    node.add_post_set_parameters_callback(apply)
    return out


def check_qos_overrides(node: Node) -> None:
    """After the node is built: every QoS override it was given names one of its publishers (a typo in a topic name
    would otherwise be ignored). ConfigError listing the node's topics.

    A node that creates some publishers only later (the segmenter, once the rig calibration that names its cameras has
    been written by another process) sets ``publishers_pending`` true until then: the check is skipped, and the node
    calls it again once its publishers exist."""
    if getattr(node, "publishers_pending", False):
        return
    topics = sorted({pub.topic_name for pub in node.publishers})
    for name in _QOS_OVERRIDES.get(node, []):
        m = QOS_OVERRIDE_RE.match(name)
        if m and m.group(1) not in topics:
            raise ConfigError(f"{node.get_name()}: {name}: the node publishes no topic {m.group(1)} "
                              f"(it publishes {', '.join(topics)})")


def _plain(value: Any) -> Any:
    """ROS array values (array.array, tuples) as lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return list(value) if isinstance(value, tuple | list) else value


def parameter_overrides(values: dict[str, Any] | None) -> list[Parameter]:
    """``{"fps": 30}`` -> ``[Parameter("fps", value=30)]`` for ``Node(..., parameter_overrides=...)``."""
    # An empty list has no ROS array type: leave it out (the table's default, an empty list, applies).
    return [Parameter(k, value=list(v) if isinstance(v, tuple) else v) for k, v in (values or {}).items()
            if not (isinstance(v, list | tuple) and len(v) == 0)]


def node_modules() -> list[Any]:
    """Every node module in vidyn_ros/nodes/ (not ``_*``) that declares a ``PARAMS`` table, sorted by name."""
    import pkgutil

    import vidyn_ros.nodes as pkg

    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    mods = [importlib.import_module(f"{pkg.__name__}.{n}") for n in names]
    return [m for m in mods if hasattr(m, "PARAMS")]


NODES_DOC_COMMAND = "python -m vidyn_ros.nodes._params > docs/nodes.md"


def nodes_reference_markdown() -> str:
    """docs/nodes.md: one parameter table per node module, generated from the modules' ``PARAMS`` tables."""
    parts = [
        "# Node parameters\n",
        f"Generated from each node's `PARAMS` table by `{NODES_DOC_COMMAND}`; do not edit by hand "
        "(test/test_graph.py checks that it is current). Set parameters with `--ros-args -p NAME:=VALUE`, in a graph "
        "YAML (`parameters:`), or with `vidyn launch GRAPH --set NODE.PARAM=VALUE`. A value of the wrong type or "
        "outside *allowed*, or a parameter the node does not have, stops the node (or the whole graph, before anything "
        "starts) with a one-line error. At run time (`ros2 param set NODE PARAM VALUE`) only the *settable* "
        "parameters change, and they take effect at once; a set of a *read-only* one is refused.\n",
    ]
    from vidyn_ros.qos import __doc__ as qos_doc
    from vidyn_ros.qos import contract_markdown

    why = (qos_doc or "").split("\n\n", 1)[1].strip()
    parts += ["## Topics and QoS\n",
              f"From `vidyn_ros/qos.py` (the topic contract's QoS column in docs/ARCHITECTURE.md). {why}\n",
              contract_markdown()]
    for mod in node_modules():
        summary = (mod.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        parts.append(param_table_markdown(mod.PARAMS, getattr(mod, "NODE_NAME", mod.__name__.rpartition(".")[2]),
                                          summary))
    return "\n".join(parts)


if __name__ == "__main__":  # regenerates docs/nodes.md: see NODES_DOC_COMMAND
    print(nodes_reference_markdown(), end="")
