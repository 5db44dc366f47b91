"""Rig calibration YAML (config/rig_calibration.yaml): each camera's camera-to-world pose.

Format::

    frame_id: world            # the fixed frame (table frame, z up)
    cameras:
      cam0:
        serial: "123456789"    # optional: RealSense serial number
        translation: [x, y, z] # camera origin in world [m]
        rotation_wxyz: [w, x, y, z]  # camera-to-world rotation, OpenCV camera axes

The same file is written next to every recorded bag by the simulated rig and ``vidyn calibrate``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import yaml

from vidyn_ros.errors import ConfigError, OutputError
from vidyn_ros.geometry import make_se3, matrix_to_quat_wxyz, quat_wxyz_to_matrix

log = logging.getLogger(__name__)


def load_rig_calibration(path: str | Path) -> dict[str, np.ndarray]:
    """Read a calibration file -> {camera name: 4x4 camera-to-world}. Raises ConfigError naming file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: calibration file not found")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cameras"), dict) or not doc["cameras"]:
        raise ConfigError(f"{path}: key 'cameras' must be a non-empty mapping of camera name -> pose")
    out: dict[str, np.ndarray] = {}
    for name, entry in doc["cameras"].items():
        where = f"{path}: cameras.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a mapping with 'translation' and 'rotation_wxyz'")
        t = _vector(entry, "translation", 3, where)
        q = _vector(entry, "rotation_wxyz", 4, where)
        if np.linalg.norm(q) < 1e-6:
            raise ConfigError(f"{where}.rotation_wxyz: zero quaternion")
        out[str(name)] = make_se3(quat_wxyz_to_matrix(q), t)
        if t[2] <= 0.0:  # the world frame is the table's, z up: a real camera below it means a flipped board frame
            log.warning("%s: camera %s is at z = %.3f m, not above the table (z = 0): check the calibration "
                        "(board frame upside down?)", where, name, t[2])
    return out


def load_serials(path: str | Path) -> dict[str, str]:
    """{camera name: serial} for the cameras that name one."""
    doc = yaml.safe_load(Path(path).read_text()) or {}
    cams = doc.get("cameras") or {}
    return {str(k): str(v["serial"]) for k, v in cams.items() if isinstance(v, dict) and "serial" in v}


def save_rig_calibration(
    path: str | Path, poses: dict[str, np.ndarray], serials: dict[str, str] | None = None, comment: str = ""
) -> Path:
    path = Path(path)
    cams = {}
    for name, T in poses.items():
        entry: dict = {}
        if serials and name in serials:
            entry["serial"] = str(serials[name])
        entry["translation"] = [round(float(v), 6) for v in T[:3, 3]]
        entry["rotation_wxyz"] = [round(float(v), 8) for v in matrix_to_quat_wxyz(T[:3, :3])]
        cams[name] = entry
    body = yaml.safe_dump({"frame_id": "world", "cameras": cams}, sort_keys=False)
    text = (f"# {comment}\n" if comment else "") + body
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as err:
        raise OutputError(f"{path}: cannot write calibration ({err.strerror})") from None
    return path


def _vector(entry: dict, key: str, n: int, where: str) -> np.ndarray:
    if key not in entry:
        raise ConfigError(f"{where}: missing key '{key}'")
    try:
        v = np.asarray(entry[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{key}: must be a list of {n} numbers") from None
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise ConfigError(f"{where}.{key}: must be a list of {n} finite numbers, got {entry[key]!r}")
    return v
