"""`vidyn record TOPICS... --out DIR`: the recorder node standalone (an MCAP bag, closed cleanly on Ctrl-C)."""

from __future__ import annotations

import argparse

NAME = "record"
HELP = "record topics to a rosbag2 bag (MCAP or sqlite3)"
DESCRIPTION = (
    "Subscribe to TOPICS (types discovered from the running graph, or given as /topic:pkg/msg/Type) and write them "
    "to a rosbag2 bag. Stops on Ctrl-C / SIGTERM or after --duration; the bag is always closed and readable."
)
ORDER = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vidyn_ros.params import ranged

    p.add_argument("topics", nargs="*", help="topics to record ('/topic' or '/topic:pkg/msg/Type')")
    p.add_argument("-a", "--all", action="store_true", help="record every topic that appears")
    p.add_argument("-o", "--out", required=True, help="bag directory to create")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    p.add_argument("--compress", choices=["none", "zstd"], default="zstd",
                   help="bag compression (default zstd: MCAP chunks, several-fold smaller depth and masks)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag at --out")
    p.add_argument("--duration", type=ranged(float, "(0, inf)"), default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--calibration", default="", help="rig calibration YAML to store in the bag")
    p.add_argument("--stamp-source", choices=["header", "receive"], default="header",
                   help="bag log time: message header stamp (default) or arrival time")
    p.add_argument("--time-base", choices=["auto", "sim", "wall"], default="auto",
                   help="bag time base (default auto: sim time when a /clock publisher drives the graph, else wall)")
    p.add_argument("--domain-id", type=ranged(int, "[0, 232]"), default=None, help="ROS_DOMAIN_ID")


def run(args: argparse.Namespace) -> int:
    from vidyn_ros import graph
    from vidyn_ros.errors import ConfigError

    if not args.topics and not args.all:
        raise ConfigError("nothing to record: give TOPICS or --all")
    spec = graph.single_node("recorder", {
        "topics": list(args.topics), "all": args.all, "output": args.out, "storage": args.storage,
        "compression": args.compress,
        "overwrite": args.overwrite, "calibration": args.calibration, "stamp_source": args.stamp_source,
        "time_base": args.time_base,
    }, name="record")
    result = graph.run_graph(spec, duration_s=args.duration, domain_id=args.domain_id)
    s = result.summaries.get("recorder", {})
    counts = s.get("counts", {})
    print(f"vidyn record: wrote {sum(counts.values())} messages on {len(counts)} topics to {args.out}")
    for topic, n in counts.items():
        print(f"  {topic}: {n}")
    return 0
