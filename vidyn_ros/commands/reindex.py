"""`vidyn reindex BAG`: rewrite a killed or truncated bag with a summary, index and metadata.yaml (as
`ros2 bag reindex`), so that every reader opens it."""

from __future__ import annotations

import argparse

NAME = "reindex"
HELP = "repair a killed or truncated bag so that every reader opens it"
DESCRIPTION = (
    "Rewrite BAG (a bag directory, or its .mcap / .db3 file) in place with a complete summary, index and "
    "metadata.yaml, keeping every message that can be read: for a bag whose recorder was killed (no metadata.yaml, "
    "no MCAP summary) or whose file was cut short. The old file is replaced only once the new one holds every "
    "message read. Message definitions, QoS profiles and compression are kept."
)
ORDER = 46


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", help="bag directory, or .mcap / .db3 file")


def run(args: argparse.Namespace) -> int:
    from vidyn_ros.bags import reindex

    r = reindex(args.bag)  # BagError / OutputError (one line) for a bag that cannot be read or written
    state = "recovered from an incomplete bag" if r["recovered"] else "bag was complete"
    print(f"vidyn reindex: {r['path']}: {r['messages']} messages saved ({state}); {r['file']} "
          f"{r['bytes_before']} -> {r['bytes_after']} bytes" + (", metadata.yaml rewritten" if r["metadata"] else ""))
    return 0
