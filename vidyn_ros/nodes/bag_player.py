"""bag_player node: replay any rosbag2 bag (MCAP or sqlite3) with its original timing.

The CDR bytes from the bag are published unchanged (no decode), so a replayed stream is byte-identical to the
recorded one. Options: rate factor, loop, /clock from the bag's log time (for ``use_sim_time`` consumers), topic
filter, remapping (``from:=to``). Playback runs on its own thread; the executor only serves callbacks. Topics are
published relative to the node's namespace (``/clock`` stays global). The rig's camera poses go out once, latched, on
``/tf_static`` (the bag's recorded /tf_static, else its rig_calibration.yaml). A jump in log time over ``max_gap_s``
(a bag mixing sim and wall time) is skipped with a warning instead of waited for.
When a non-looping bag ends, the node sets ``done`` (``vidyn launch`` then ends the graph; ``bag_player`` exits 0).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from vidyn_ros.errors import BagError, ConfigError
from vidyn_ros.nodes import _ros

NODE_NAME = "bag_player"

PARAMS = [
    _ros.Param("bag", "", "bag to play: a bag directory, or a .mcap / .db3 file"),
    _ros.Param("rate", 1.0, "playback speed factor (2.0 = twice as fast); 0 = as fast as possible", range="[0, 1000]"),
    _ros.Param("loop", False, "start again at the end of the bag"),
    _ros.Param("clock", False, "publish /clock from the bag's log time (for nodes with use_sim_time)"),
    _ros.Param("topics", [], "only these topics (empty = all); an unknown topic is an error", kind="string"),
    _ros.Param("remap", [], "topic remappings 'from:=to' applied to the published names", kind="string"),
    _ros.Param("qos", "auto", "publisher QoS: auto (per topic, the topic contract's: cameras best effort, state "
               "reliable, /tf_static latched), or reliable, sensor (best effort), latched for every topic",
               choices=("auto", "reliable", "sensor", "latched")),
    _ros.Param("start_delay_s", 0.0, "wait this long (from the first spin) before playing, so subscribers can "
               "discover the publishers", range="[0, 3600]"),
    _ros.Param("wait_for_subscribers_s", 0.0, "wait up to this long until every publisher has a subscriber",
               range="[0, 3600]"),
    _ros.Param("max_gap_s", 30.0, "a jump in log time larger than this is skipped with a warning, not waited for (a "
               "bag mixing sim and wall time); 0 = never skip", range="[0, inf)"),
]


def parse_remaps(items: Sequence[str]) -> dict[str, str]:
    """``["/a:=/b"]`` -> ``{"/a": "/b"}``; ConfigError for anything else."""
    out = {}
    for item in items:
        src, sep, dst = item.partition(":=")
        if not sep or not src.strip() or not dst.strip():
            raise ConfigError(f"bag_player: remap {item!r}: expected FROM:=TO")
        out[src.strip()] = dst.strip()
    return out


class BagPlayer(_ros.Node):
    """Publishes a bag's messages at their recorded pace; see the module docstring."""

    def __init__(self, **node_kwargs: Any) -> None:
        node_kwargs.setdefault("node_name", NODE_NAME)
        super().__init__(**node_kwargs)
        self.p = _ros.declare_params(self, PARAMS)
        if not self.p.bag:
            raise ConfigError("bag_player: parameter 'bag' is required")
        remaps = parse_remaps(self.p.remap)

        from vidyn_ros.bags import BagReader

        self.reader = BagReader(self.p.bag)  # BagError (one line) for a missing / corrupt bag
        try:
            self._start(remaps)
        except BaseException:
            self.reader.close()
            raise

    def _start(self, remaps: dict[str, str]) -> None:
        self.reader.require_topics(self.p.topics)  # BagError naming an unknown topic
        unknown = [t for t in remaps if t not in self.reader.topics]
        if unknown:
            raise BagError(f"{self.p.bag}: cannot remap {unknown[0]}: no such topic in this bag")
        self.topics = list(self.p.topics) or list(self.reader.topics)
        if self.p.clock and "/clock" in self.topics and remaps.get("/clock", "/clock") == "/clock":
            # The player generates /clock from the log time; the recorded /clock would duplicate every tick.
            self.topics.remove("/clock")
            self.get_logger().info("not replaying the recorded /clock: clock is generated from the bag's log time")
        self.tf = _ros.StaticTransforms(self)
        self._publish_tf(remaps)
        self._pubs: dict[str, Any] = {}
        for topic in self.topics:
            msgtype = self.reader.topics[topic].msgtype
            # relative names: a player in a namespace replays the rig into that namespace (/clock stays global)
            name = _ros.node_topic(remaps.get(topic, topic))
            qos = _ros.contract_qos(remaps.get(topic, topic)) if self.p.qos == "auto" else _ros.qos_by_name(self.p.qos)
            self._pubs[topic] = self.create_publisher(_ros.msg_class(msgtype), name, qos)
        self._clock_pub = self.create_publisher(_ros.msg_class("rosgraph_msgs/msg/Clock"), "/clock", 10) \
            if self.p.clock else None
        self.diag = _ros.DiagnosticsPublisher(self)
        self.counts: dict[str, int] = {}
        self.gaps_skipped = 0
        self.loops = 0
        self.done = False
        self.fatal: str | None = None
        self._spinning = _ros.spinning_event(self)
        self._thread = _ros.LoopThread(self._play_once, name="bag_player", on_error=self._on_error)
        self._thread.start()
        self.get_logger().info(
            f"playing {self.p.bag}: {len(self.topics)} topics, {self.reader.message_count} messages, "
            f"{self.reader.duration_s:.2f} s at rate {self.p.rate}" + (" (loop)" if self.p.loop else "")
        )

    def _publish_tf(self, remaps: dict[str, str]) -> None:
        """/tf_static once, latched, for the whole replay: the transforms recorded in the bag (merged per child frame,
        as tf2 keeps them), else the cameras of the bag's rig_calibration.yaml. A recorded /tf_static is not replayed
        at its log time (a volatile replay would miss every subscriber that joins later)."""
        from vidyn_ros import msgs

        tf_topic = msgs.TF_STATIC_TOPIC
        if tf_topic in self.reader.topics and remaps.get(tf_topic, tf_topic) == tf_topic:
            merged: dict[str, tuple[str, str, Any]] = {}
            for _t, _mt, _s, msg in self.reader.decoded([tf_topic]):
                for parent, child, T in msgs.transforms_from_tf_msg(msg):
                    merged[child] = (parent, child, T)
            if tf_topic in self.topics:
                self.topics.remove(tf_topic)
            self.tf.publish(list(merged.values()))
            return
        calib = self.reader.calibration()
        if calib:  # the calibrated cameras and the bag's (a realsense-ros prefix camera/camera is camera 'camera')
            self.tf.publish_rig({msgs.camera_name(c): msgs.calibration_pose(calib, c)
                                 for c in [*calib, *self.reader.camera_names()]})

    def _on_error(self, err: BaseException) -> None:
        self.fatal = str(err) if isinstance(err, BagError) else f"{type(err).__name__}: {err}"
        self.diag.error(self.fatal)
        self.done = True

    def _sleep(self, seconds: float) -> bool:
        """Interruptible sleep; False if the node is stopping."""
        return not self._thread.stop_event.wait(seconds) if seconds > 0 else not self._thread.stop_event.is_set()

    def _wait_for_subscribers(self) -> None:
        t_end = time.monotonic() + self.p.wait_for_subscribers_s
        while time.monotonic() < t_end:
            if all(p.get_subscription_count() > 0 for p in self._pubs.values()):
                # The writer matches the reader before the reader has matched the writer; samples sent in that
                # window are dropped by the reader. A short settle time closes it.
                self._sleep(0.25)
                return
            if not self._sleep(0.05):
                return

    def _play_once(self) -> bool:
        """One pass through the bag. Returns False when playback is over."""
        if self.loops == 0:
            # The delay counts from when the graph spins, not from construction (see _ros.spinning_event).
            if not _ros.wait_for(self._spinning, self._thread.stop_event) or not self._sleep(self.p.start_delay_s):
                return False
            if self.p.wait_for_subscribers_s > 0:
                self._wait_for_subscribers()
        t_wall0 = time.monotonic()
        t_bag0: int | None = None
        last_clock = -1
        prev = 0
        skipped_ns = 0  # log time not waited for: gaps larger than max_gap_s
        clock_cls = "rosgraph_msgs/msg/Clock"
        for topic, _msgtype, stamp, raw in self.reader.messages(self.topics):
            if self._thread.stop_event.is_set():
                return False
            if t_bag0 is None:
                t_bag0 = prev = stamp
            if self.p.max_gap_s > 0 and stamp - prev > self.p.max_gap_s * 1e9:
                self.gaps_skipped += 1
                self.diag.warn(f"skipped a gap of {(stamp - prev) / 1e9:.3g} s in the bag's log time before {topic} "
                               f"(more than max_gap_s {self.p.max_gap_s:g}; sim and wall time mixed?)",
                               gaps_skipped=self.gaps_skipped)
                skipped_ns += stamp - prev
            prev = stamp
            if self.p.rate > 0:
                due = t_wall0 + (stamp - t_bag0 - skipped_ns) / 1e9 / self.p.rate
                if not self._sleep(due - time.monotonic()):
                    return False
            if self._clock_pub is not None and stamp != last_clock:
                from vidyn_ros import msgs

                _ros.publish_cdr(self._clock_pub, msgs.clock_msg(stamp), clock_cls)
                last_clock = stamp
            self._pubs[topic].publish(bytes(raw))
            self.counts[topic] = self.counts.get(topic, 0) + 1
            self.diag.ok("playing", loops=self.loops, published=sum(self.counts.values()))
        self.loops += 1
        if self.p.loop and t_bag0 is not None:
            return True
        self.get_logger().info(f"end of bag after {sum(self.counts.values())} messages")
        self.done = True
        return False

    def summary(self) -> dict[str, Any]:
        return {"bag": self.p.bag, "loops": self.loops, "counts": dict(sorted(self.counts.items())),
                **({"gaps_skipped": self.gaps_skipped} if self.gaps_skipped else {})}

    def close(self) -> None:
        self._thread.stop()
        self.reader.close()


def create_node(**node_kwargs: Any) -> BagPlayer:
    return BagPlayer(**node_kwargs)


def main(args: Sequence[str] | None = None) -> int:
    return _ros.run_node(create_node, args)


if __name__ == "__main__":
    sys.exit(main())
