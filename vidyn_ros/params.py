"""Parameter tables and ranges, ROS-free.

Each node declares its parameters in ONE table of ``Param`` (name, default, allowed values, one-line description,
whether it may change at run time). The same table declares the ROS parameters (vidyn_ros/nodes/_params.py: ROS
ranges, read-only flags, a check on every ``ros2 param set``), generates the parameter reference (docs/nodes.md) and
checks graph YAML files and ``--set`` overrides before anything starts (vidyn_ros/graph.py). ``Range`` and
``ranged`` give the CLI's numeric flags the same checks.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from vidyn_ros.errors import ConfigError

_NUMBER = r"[-+]?(?:inf|\d+(?:\.\d*)?(?:e[-+]?\d+)?|\.\d+(?:e[-+]?\d+)?)"
_RANGE_RE = re.compile(rf"^\s*([\[(])\s*({_NUMBER})\s*,\s*({_NUMBER})\s*([\])])\s*$", re.IGNORECASE)


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """An interval of numbers, written as in mathematics: ``"[1, inf)"``, ``"(0, 1]"``, ``"[-1, 3600]"``."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    @classmethod
    def parse(cls, text: str) -> Range:
        m = _RANGE_RE.match(text)
        if m is None:
            raise ValueError(f"malformed range {text!r} (write it like '[1, inf)' or '(0, 1]')")
        lo, hi = float(m.group(2)), float(m.group(3))
        if lo > hi:
            raise ValueError(f"range {text!r}: lower bound above upper bound")
        return cls(lo, hi, m.group(1) == "(", m.group(4) == ")")

    def __contains__(self, x: float) -> bool:
        if isinstance(x, float) and math.isnan(x):
            return False
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return above and below

    def __str__(self) -> str:
        """``>= 1``, ``> 0``, ``<= 5`` for half-bounded ranges, ``[0, 1]`` / ``(0, 1]`` otherwise."""
        if math.isinf(self.hi) and math.isinf(self.lo):
            return "any number"
        if math.isinf(self.hi):
            return f"{'>' if self.lo_open else '>='} {_fmt(self.lo)}"
        if math.isinf(self.lo):
            return f"{'<' if self.hi_open else '<='} {_fmt(self.hi)}"
        return f"{'(' if self.lo_open else '['}{_fmt(self.lo)}, {_fmt(self.hi)}{')' if self.hi_open else ']'}"

    def phrase(self, value: float | None = None) -> str:
        """For error messages: ``must be >= 1`` / ``must be in [0, 1]``; for an infinite ``value`` outside a
        half-bounded range, ``must be a finite number > 0`` (not "must be > 0, got inf")."""
        text = str(self)
        if text[0] not in "<>":
            return f"must be in {text}"
        finite = value is not None and math.isinf(value) and value not in self
        return f"must be {'a finite number ' if finite else ''}{text}"


_KINDS = {"string": str, "double": float, "integer": int, "bool": bool}


@dataclass(frozen=True)
class Param:
    """One node parameter.

    ``default`` fixes the type (``None`` is not allowed by ROS typing: use ``""`` / ``[]`` sentinels). Lists must be
    homogeneous; an empty list needs ``kind`` ("string", "double", "integer", "bool"). Every number has a ``range``
    (an interval, see ``Range``; for a list it holds for each element), a string with a fixed set of values has
    ``choices``, a list of fixed length has ``length``. ``dynamic``: the node reads the value where it uses it, so a
    ``ros2 param set`` takes effect; every other parameter is read-only (a set is refused, not silently ignored).
    """

    name: str
    default: Any
    description: str
    kind: str | None = None  # element type for empty lists
    range: str | None = None
    choices: tuple[str, ...] | None = None
    length: int | None = None
    dynamic: bool = False

    def __post_init__(self) -> None:
        elem = self.element_type  # every number of a node has a range: test/test_graph.py checks the node tables
        if self.range is not None and elem not in (int, float):
            raise ValueError(f"parameter {self.name!r}: range given for a non-number")
        if self.choices is not None and elem is not str:
            raise ValueError(f"parameter {self.name!r}: choices given for a non-string")
        self.check(self.default, "default")  # a table whose own default is invalid is a bug: fail at import

    @property
    def is_list(self) -> bool:
        return isinstance(self.default, list | tuple)

    @property
    def element_type(self) -> type:
        d = self.default
        if isinstance(d, list | tuple):
            if d:
                return type(d[0])
            if self.kind not in _KINDS:
                raise ValueError(f"parameter {self.name!r}: empty list default needs kind= one of {sorted(_KINDS)}")
            return _KINDS[self.kind]
        return type(d)

    @cached_property
    def interval(self) -> Range | None:
        return None if self.range is None else Range.parse(self.range)

    def allowed(self) -> str:
        """The allowed values in words, for docs/nodes.md (``>= 1``, ``mcap, sqlite3``, ``4 numbers in [0, 1]``)."""
        text = str(self.interval) if self.interval else ", ".join(self.choices) if self.choices else ""
        if self.length is not None:
            text = f"{self.length} values" + (f", each {text}" if text else "")
        return text

    def check(self, value: Any, who: str = "") -> Any:
        """``value`` converted to the parameter's type (an integer where a float is declared), or ConfigError naming
        ``who`` (a node, a file position, a ``--set`` item), the parameter and what is allowed, in one line."""
        prefix = f"{who}: " if who else ""
        elem = self.element_type
        if self.is_list:
            if not isinstance(value, list | tuple):
                raise ConfigError(f"{prefix}{self.name} must be a list of {_type_word(elem)}s, got {value!r}")
            if self.length is not None and len(value) != self.length:
                raise ConfigError(f"{prefix}{self.name} needs {self.length} values, got {len(value)}: {list(value)}")
            return [self._check_one(v, elem, prefix) for v in value]
        return self._check_one(value, elem, prefix)

    def _check_one(self, v: Any, elem: type, prefix: str) -> Any:
        if elem is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if type(v) is not elem:
            raise ConfigError(f"{prefix}{self.name} must be {_type_word(elem, article=True)}, got {v!r}")
        if self.interval is not None and v not in self.interval:
            raise ConfigError(f"{prefix}{self.name} {self.interval.phrase(v)}, got {_fmt_value(v)}")
        if self.choices is not None and v not in self.choices:
            raise ConfigError(f"{prefix}{self.name} must be one of {', '.join(self.choices)}, got {v!r}")
        return v


def _type_word(t: type, article: bool = False) -> str:
    word = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(t, t.__name__)
    return (f"an {word}" if word[0] in "aeiou" else f"a {word}") if article else word


def _fmt_value(v: Any) -> str:
    return _fmt(v) if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v) else repr(v)


def unknown_name_error(kind: str, name: str, valid: Iterable[str], who: str, owner: str = "") -> ConfigError:
    """``sim_rig: node 'sim_rig' has no parameter 'sed' (did you mean 'seed'? valid: a, b, c)``, one line."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    has = f"{owner} has no" if owner else "no"
    return ConfigError(f"{who}: {has} {kind} {name!r} ({hint}valid: {', '.join(valid)})")


# Parameters every rclpy node has besides its table: ``use_sim_time``, and the standard QoS override parameters
# ``qos_overrides.<topic>.publisher.<policy>`` of its publishers (vidyn_ros/nodes/_qos.py).
BUILTIN_PARAMS = ("use_sim_time", "start_type_description_service")
QOS_OVERRIDE_RE = re.compile(r"^qos_overrides\.(/[^\s]*)\.publisher\.(reliability|durability|history|depth)$")
QOS_OVERRIDE_VALUES = {"reliability": ("reliable", "best_effort", "system_default"),
                       "durability": ("volatile", "transient_local", "system_default"),
                       "history": ("keep_last", "keep_all", "system_default")}


def check_builtin(name: str, value: Any, who: str) -> Any | None:
    """The value of a parameter every node has (not in its table), checked; None when ``name`` is not one."""
    if name == "use_sim_time":
        if not isinstance(value, bool):
            raise ConfigError(f"{who}: use_sim_time must be true or false, got {value!r}")
        return value
    if name == "start_type_description_service":
        return value
    m = QOS_OVERRIDE_RE.match(name)
    if m is None:
        return None
    policy = m.group(2)
    if policy == "depth":
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ConfigError(f"{who}: {name} must be an integer >= 1, got {value!r}")
    elif value not in QOS_OVERRIDE_VALUES[policy]:
        raise ConfigError(f"{who}: {name} must be one of {', '.join(QOS_OVERRIDE_VALUES[policy])}, got {value!r}")
    return value


def check_params(table: Sequence[Param], values: Mapping[str, Any], who: Callable[[str], str],
                 owner: str = "") -> dict[str, Any]:
    """Check ``values`` (a graph node's ``parameters``) against ``table``: every name known, every value of the right
    type and in range. Returns the values converted (integers where floats are declared). ``who(name)`` names where
    a value came from in the error (a file and key, a ``--set`` item)."""
    by_name = {p.name: p for p in table}
    out: dict[str, Any] = {}
    for name, value in values.items():
        p = by_name.get(name)
        if p is not None:
            out[name] = p.check(value, who(name))
            continue
        builtin = check_builtin(name, value, who(name))
        if builtin is None:
            if name.startswith("qos_overrides."):
                raise ConfigError(f"{who(name)}: malformed QoS override {name!r} (expected "
                                  "qos_overrides./TOPIC.publisher.reliability|durability|history|depth)")
            raise unknown_name_error("parameter", name, [*by_name, "use_sim_time"], who(name), owner)
        out[name] = builtin
    return out


def param_table_markdown(table: Sequence[Param], title: str | None = None, summary: str = "") -> str:
    """Markdown table of a node's parameters (docs/nodes.md is generated from these)."""
    lines = [f"## {title}", ""] if title else []
    if summary:
        lines += [summary, ""]
    lines += ["| parameter | default | allowed | at run time | description |", "| --- | --- | --- | --- | --- |"]
    for p in table:
        # A '|' inside a cell would end it: escape it (GitHub markdown renders ``\|`` as '|').
        cells = [f"`{p.name}`", f"`{p.default!r}`", p.allowed(), "settable" if p.dynamic else "read-only",
                 p.description]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------ the CLI
def ranged(kind: type, interval: str) -> Callable[[str], Any]:
    """An argparse ``type=`` for a number flag with a range: ``add_argument("--frames", type=ranged(int, "[1, inf)"))``.

    A value outside the range (or not a number) is refused by argparse before the command runs, with one line:
    ``vidyn track: error: argument --downscale: must be >= 1, got 0``.
    """
    rng = Range.parse(interval)

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {_type_word(kind, article=True)}, got {text!r}") from None
        if value not in rng:
            raise argparse.ArgumentTypeError(f"{rng.phrase(value)}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    parse.range = rng  # type: ignore[attr-defined]  # test/test_cli_errors.py checks every number flag has one
    return parse
