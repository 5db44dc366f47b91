"""Declaring a node's ``Param`` table (vidyn_ros/params.py) as ROS parameters, and the generated parameter reference.

Regenerate docs/nodes.md with ``python -m vidyn_ros.nodes._params > docs/nodes.md`` (NODES_DOC_COMMAND).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from vidyn_ros.errors import ConfigError
from vidyn_ros.params import Param, param_table_markdown

_ARRAY_TYPES = {
    "string": Parameter.Type.STRING_ARRAY,
    "double": Parameter.Type.DOUBLE_ARRAY,
    "integer": Parameter.Type.INTEGER_ARRAY,
    "bool": Parameter.Type.BOOL_ARRAY,
}


def param_type(p: Param) -> Parameter.Type:
    """The ROS parameter type of ``p`` (from its default; from ``kind`` for an empty list)."""
    d = p.default
    if isinstance(d, list | tuple) and len(d) == 0:
        if p.kind not in _ARRAY_TYPES:
            raise ValueError(f"parameter {p.name!r}: empty list default needs kind= one of {sorted(_ARRAY_TYPES)}")
        return _ARRAY_TYPES[p.kind]
    return Parameter.Type.from_parameter_value(list(d) if isinstance(d, tuple) else d)


def _coerce(p: Param, ptype: Parameter.Type, value: Any) -> Any:
    """An integer given where a float is declared is accepted (YAML ``1`` vs ``1.0``, ``-p rate:=1``)."""
    if ptype == Parameter.Type.DOUBLE and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if ptype == Parameter.Type.DOUBLE_ARRAY and isinstance(value, list | tuple) and \
            all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return [float(v) for v in value]
    return value


def _type_name(t: Parameter.Type) -> str:
    return t.name.lower().replace("_array", " list")


def declare_params(node: Node, table: Sequence[Param]) -> SimpleNamespace:
    """Declare every parameter of ``table`` on ``node`` and return their current values as attributes.

    Values set by overrides (``--ros-args -p``, launch files, ``vidyn launch --set``) win over defaults. An integer
    given where a float is declared is accepted (YAML ``1`` vs ``1.0``); other type mismatches raise ConfigError
    naming the node and parameter (one line) instead of rclpy's multi-line exception.

    How, with public rclpy API only: each parameter is first declared dynamically typed, which yields the override (of
    whatever type) or nothing; the value is checked and coerced, and the parameter is declared again, statically typed,
    with that value (``ignore_override``).
    """
    out = SimpleNamespace()
    for p in table:
        ptype = param_type(p)
        default = list(p.default) if isinstance(p.default, tuple) else p.default
        if node.has_parameter(p.name):  # declared from overrides (automatically_declare_parameters_from_overrides)
            given = node.get_parameter(p.name).value
        else:
            given = node.declare_parameter(p.name, None, ParameterDescriptor(dynamic_typing=True)).value
        node.undeclare_parameter(p.name)
        value = default if given is None else _coerce(p, ptype, given)
        desc = ParameterDescriptor(description=p.description, read_only=p.read_only, dynamic_typing=False)
        if isinstance(value, list | tuple) and len(value) == 0:  # no ROS type of its own: the table's array type
            declared = node.declare_parameter(p.name, ptype, desc, ignore_override=True).value or []
        else:
            given_type = Parameter.Type.from_parameter_value(list(value) if isinstance(value, tuple) else value)
            if given_type != ptype:
                raise ConfigError(f"{node.get_name()}: parameter {p.name!r}: expected {_type_name(ptype)}, "
                                  f"got {_type_name(given_type)} {value!r}")
            declared = node.declare_parameter(p.name, value, desc, ignore_override=True).value
        setattr(out, p.name, list(declared) if isinstance(declared, tuple | list) else declared)
    return out


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
        "YAML (`parameters:`), or with `vidyn launch GRAPH --set NODE.PARAM=VALUE`.\n",
    ]
    for mod in node_modules():
        summary = (mod.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        parts.append(param_table_markdown(mod.PARAMS, getattr(mod, "NODE_NAME", mod.__name__.rpartition(".")[2]),
                                          summary))
    return "\n".join(parts)


if __name__ == "__main__":  # regenerates docs/nodes.md: see NODES_DOC_COMMAND
    print(nodes_reference_markdown(), end="")
