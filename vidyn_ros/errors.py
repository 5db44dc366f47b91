"""User-facing errors. The CLI and the nodes print ``str(err)`` as one line; no traceback reaches a user."""


class VidynError(Exception):
    """Base class: a problem with the user's input or environment, described in one line."""


class ConfigError(VidynError):
    """A malformed or invalid YAML file (scenario, graph, calibration). The message names the file and key."""


class BagError(VidynError):
    """A missing, corrupt or unreadable rosbag2 bag, or an unknown topic in it."""


class CameraError(VidynError):
    """No camera, an unknown serial, a recording that cannot be played."""


class OutputError(VidynError):
    """An output path that cannot be written."""
