"""`vidyn launch GRAPH`: run a node graph (config/graphs/*.yaml) in one process, without the ros2 CLI."""

from __future__ import annotations

import argparse
import json

NAME = "launch"
HELP = "run a node graph (YAML) in one process"
DESCRIPTION = (
    "Start every node of a graph (a shipped name: sim, replay, rig; or a YAML path) in one process with a "
    "MultiThreadedExecutor. Ctrl-C / SIGTERM shut down cleanly (the recorder closes its bag). The graph also ends "
    "when a node finishes (e.g. the bag player at the end of its bag). Format: vidyn_ros/graph.py."
)
ORDER = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vidyn_ros.params import ranged

    p.add_argument("graph", help="graph name (config/graphs/NAME.yaml) or path to a graph YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override a node parameter (YAML value), repeatable")
    p.add_argument("--duration", type=ranged(float, "(0, inf)"), default=None, metavar="S",
                   help="stop after S seconds of wall time")
    p.add_argument("--domain-id", type=ranged(int, "[0, 232]"), default=None, help="ROS_DOMAIN_ID for this graph")
    p.add_argument("--json", action="store_true", help="print the nodes' summaries as JSON at the end")


def run(args: argparse.Namespace) -> int:
    from vidyn_ros import graph

    spec = graph.apply_overrides(graph.load_graph(args.graph), args.overrides)
    print(f"vidyn launch: graph {spec.name!r}: {', '.join(f'{n.name} ({n.node})' for n in spec.nodes)}", flush=True)
    result = graph.run_graph(spec, duration_s=args.duration, domain_id=args.domain_id)
    if args.json:
        print(json.dumps({"reason": result.reason, "summaries": result.summaries, "fatal": result.fatal},
                         default=str, indent=2))
    else:
        for name, s in result.summaries.items():
            print(f"  {name}: {json.dumps(s, default=str)}")
    print(f"vidyn launch: stopped ({result.reason})", flush=True)
    if result.fatal:
        name, why = next(iter(result.fatal.items()))
        from vidyn_ros.errors import VidynError

        raise VidynError(f"node {name}: {why}")
    return 0
