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
    import sys

    from vidyn_ros.bags import bag_summary, format_summary

    summary = bag_summary(args.bag, exact_rates=not args.fast)  # BagError (one line) for a missing / corrupt bag
    try:
        if args.json:
            print(json.dumps(summary, indent=2))
        elif sys.stdout.isatty():
            _print_rich(summary)
        else:  # pipes and files get plain columns that grep/awk can split
            print(format_summary(summary))
        sys.stdout.flush()
    except BrokenPipeError:  # `vidyn info BAG | head`: the reader left, which is fine
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _print_rich(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from vidyn_ros.bags import format_summary

    head = format_summary({**summary, "topics": {}}).rstrip().splitlines()
    table = Table(show_edge=False, header_style="bold")
    table.add_column("topic", overflow="fold")  # never cut a topic name short
    table.add_column("type", style="cyan", overflow="fold")
    table.add_column("count", justify="right")
    table.add_column("rate Hz", justify="right")
    for topic, t in summary["topics"].items():
        table.add_row(topic, t["type"], str(t["count"]), f"{t['rate_hz']:.2f}")
    console = Console()
    for line in head:
        if line.strip() and not set(line.strip()) <= {"-", " "} and not line.startswith("topic"):
            console.print(line, highlight=False)
    console.print(table)
