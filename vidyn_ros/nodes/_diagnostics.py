"""/diagnostics for every vidyn node: one DiagnosticStatus per node (or per camera), rate-limited, with the warnings
and errors logged once per change."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from rclpy.node import Node

from vidyn_ros.nodes._topics import msg_class, now_ns, publish_cdr

log = logging.getLogger(__name__)

DIAG_OK, DIAG_WARN, DIAG_ERROR, DIAG_STALE = 0, 1, 2, 3


class DiagnosticsPublisher:
    """Publishes one DiagnosticStatus per node on /diagnostics at most every ``period_s`` (plus immediately on a
    level change), and logs warnings/errors once per change so the log is not flooded.

    Usage: ``self.diag = DiagnosticsPublisher(self)``; ``self.diag.update(DIAG_OK, "publishing", fps=29.8)``.
    """

    def __init__(self, node: Node, name: str | None = None, period_s: float = 1.0, hardware_id: str = "") -> None:
        self.node = node
        self.name = name or node.get_fully_qualified_name()
        self.period_s = period_s
        self.hardware_id = hardware_id
        self._pub = node.create_publisher(msg_class("diagnostic_msgs/msg/DiagnosticArray"), "/diagnostics", 10)
        self._last_t = 0.0
        self._last_level: int | None = None
        self._last_msg = ""
        self._lock = threading.Lock()

    def update(self, level: int, message: str, force: bool = False, **values: Any) -> None:
        now = time.monotonic()
        with self._lock:
            changed = level != self._last_level or (level != DIAG_OK and message != self._last_msg)
            if changed and level == DIAG_WARN:
                self.node.get_logger().warning(message)
            elif changed and level >= DIAG_ERROR:
                self.node.get_logger().error(message)
            if not (force or changed or now - self._last_t >= self.period_s):
                return
            self._last_t, self._last_level, self._last_msg = now, level, message
        from vidyn_ros import msgs

        status = {
            "name": self.name,
            "level": level,
            "message": message,
            "hardware_id": self.hardware_id,
            "values": {k: str(v) for k, v in values.items()},
        }
        try:
            msg = msgs.diagnostic_array_msg([status], now_ns(self.node))
            publish_cdr(self._pub, msg, "diagnostic_msgs/msg/DiagnosticArray")
        except Exception as err:  # diagnostics must never take a node down (e.g. during shutdown)
            log.debug("diagnostics publish failed: %s", err)

    def ok(self, message: str, **values: Any) -> None:
        self.update(DIAG_OK, message, **values)

    def warn(self, message: str, **values: Any) -> None:
        self.update(DIAG_WARN, message, **values)

    def error(self, message: str, **values: Any) -> None:
        self.update(DIAG_ERROR, message, **values)

