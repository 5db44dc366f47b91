"""`vidyn info BAG`: what is in a rosbag2 bag (topics, types, counts, rates, duration, storage, size, time span)."""

from __future__ import annotations

import argparse

NAME = "info"
HELP = "summarise a rosbag2 bag: topics, types, counts, rates, duration"
DESCRIPTION = (
    "Print a summary of a rosbag2 bag (a bag directory, or a single .mcap / .db3 file), written by vidyn, by "
    "ros2 bag record, or by anything else rosbag2-compatible: storage, size, duration, start/end time and one row per "
    "topic with its type, message count and rate. A bag whose writer was killed (no metadata.yaml) is read from its "
    "MCAP file and marked 'recovered'."
)
ORDER = 45


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", help="bag directory, or .mcap / .db3 file")
    p.add_argument("--json", action="store_true", help="machine-readable output (one JSON object)")
    p.add_argument("--fast", action="store_true",
                   help="metadata only: rates from the bag's duration instead of each topic's span (no data pass)")


def run(args: argparse.Namespace) -> int:
    import json

    from vidyn_ros.bags import bag_summary, format_summary

    summary = bag_summary(args.bag, exact_rates=not args.fast)  # BagError (one line) for a missing / corrupt bag
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
