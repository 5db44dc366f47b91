"""Node parameter tables, ROS-free: each node declares its parameters in ONE table of ``Param`` (name, default,
one-line description). The same table declares the ROS parameters (vidyn_ros/nodes/_params.py), generates the
parameter reference (docs/nodes.md) and validates graph YAML files and ``--set`` overrides before anything starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One node parameter: name, default (its type fixes the ROS parameter type), one-line description.

    ``default=None`` is not allowed by ROS typing; use ``""`` / ``[]`` sentinels. Lists must be homogeneous; an empty
    list needs ``kind`` ("string", "double", "integer", "bool") so ROS knows the array type.
    """

    name: str
    default: Any
    description: str
    kind: str | None = None  # element type for empty lists
    read_only: bool = False


def param_table_markdown(table: Sequence[Param], title: str | None = None, summary: str = "") -> str:
    """Markdown table of a node's parameters (docs/nodes.md is generated from these)."""
    lines = [f"## {title}", ""] if title else []
    if summary:
        lines += [summary, ""]
    lines += ["| parameter | default | description |", "| --- | --- | --- |"]
    for p in table:
        # A '|' inside a cell would end it: escape it (GitHub markdown renders ``\|`` as '|').
        default, desc = repr(p.default).replace("|", "\\|"), p.description.replace("|", "\\|")
        lines.append(f"| `{p.name}` | `{default}` | {desc} |")
    return "\n".join(lines) + "\n"
