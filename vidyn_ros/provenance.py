"""What every written result records about how it was made (ARCHITECTURE: command line and versions next to results)."""

from __future__ import annotations

import platform
from importlib import metadata


def software_versions(*packages: str) -> dict[str, str]:
    """{package: version} for vidyn_ros, Python and ``packages`` (distribution names); "not installed" if missing."""
    import vidyn_ros

    out = {"vidyn_ros": vidyn_ros.__version__, "python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
