"""Checkpoints of the learned dynamics: weights + normalisation + the config that rebuilds the model, in one file.

A checkpoint is a plain ``torch.save`` dict of tensors, numbers and strings, read back with
``torch.load(weights_only=True)``: loading never executes pickled code. Layout::

    format: "vidyn-particle-dynamics"     version: 1
    model_config: JSON string (learned.ModelConfig)   -> a checkpoint alone rebuilds the model
    state_dict: network weights and the Normalizer's buffers
    train: JSON string (run config, step, data, wall time, ...)  # provenance; optional
    resume: {...}  optimiser / scheduler / RNG / sampler state   # only in training checkpoints

A missing, unreadable, foreign or incompatible file raises ``CheckpointError`` with one line naming the file and the
problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vidyn_ros.errors import VidynError

from .learned import LearnedDynamics, ModelConfig

FORMAT = "vidyn-particle-dynamics"
VERSION = 1


class CheckpointError(VidynError):
    """A dynamics checkpoint that cannot be used (missing, corrupt, not ours, incompatible)."""


def save_checkpoint(path: str | Path, model: LearnedDynamics, train: dict | None = None,
                    resume: dict | None = None) -> Path:
    """Write ``model`` (config, weights, normalisation) and optional provenance / resume state atomically."""
    from vidyn_ros.errors import OutputError

    path = Path(path)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": json.dumps(model.cfg.to_dict()),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train": json.dumps(train or {}),
    }
    if resume is not None:
        doc["resume"] = resume
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(doc, tmp)
        tmp.replace(path)  # a reader (the node, a resumed run) never sees half a file
    except OSError as err:
        raise OutputError(f"{path}: cannot write checkpoint ({err.strerror})") from None
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, checked for format and version (CheckpointError otherwise)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, random bytes, pickled code that weights_only refuses, ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason[:160]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vidyn particle-dynamics checkpoint (no format {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {doc.get('version')!r}, this vidyn reads {VERSION}")
    return doc


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LearnedDynamics:
    """Rebuild the model from a checkpoint file alone (eval mode, on ``device``)."""
    model, _ = load_checkpoint_with_info(path, device)
    return model


def load_checkpoint_with_info(path: str | Path, device: str | torch.device = "cpu"
                              ) -> tuple[LearnedDynamics, dict[str, Any]]:
    """(model, checkpoint dict) — the dict carries ``train`` provenance (parsed) and, if present, ``resume``."""
    doc = read_checkpoint(path)
    try:
        cfg = ModelConfig.from_dict(json.loads(doc["model_config"]))
        model = LearnedDynamics(cfg)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: incompatible model config ({err})") from None
    state = doc.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no state_dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = " ".join(str(err).split())[:200]
        raise CheckpointError(f"{path}: weights do not match the model config ({first})") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if bad[1:] else ""
        raise CheckpointError(f"{path}: non-finite values in {bad[0]}{more}")
    try:
        doc["train"] = json.loads(doc.get("train") or "{}")
    except (TypeError, ValueError):
        doc["train"] = {}
    return model.to(device).eval(), doc
