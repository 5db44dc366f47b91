"""Training data for the learned dynamics: tracked episodes (what a real rig gives) and batches of rollout windows.

An **episode** is one recorded bag turned into what the paper trains on (``vidyn make-trainset`` writes them):

- per-Gaussian trajectories from the scene's tracking (``vidyn track``: the deployed segmenter's masks, ICP,
  stable ``particle_ids``): the noisy *pseudo position labels*;
- the Gaussians' appearance (scales, colours, opacities) for rendering predictions;
- every camera's colour frame at the training resolution: the *rendering* targets;
- the pusher command from the bag (/vidyn/cmd) applied over each frame interval: the *control*;
- which object is the kinematic pusher (found from the robot's own end-effector position at the first frame);
- soft ids: each Gaussian's cross-view vote fractions over the object masks at the first frame (Soft ID ablation).

Simulator ground truth is never read here (it stays in the bag for ``vidyn eval``).

Files per episode directory: ``episode.npz`` (everything but the images), ``images.npy`` (uint8 [T, C, H, W, 3],
memory-mapped when training), ``source.json`` (bag, tracking report, provenance).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidyn_ros.errors import VidynError
from vidyn_ros.types import CameraModel

from .state import HISTORY, Control, ParticleState

EPISODE_FILE = "episode.npz"
IMAGES_FILE = "images.npy"
SOURCE_FILE = "source.json"
INDEX_FILE = "trainset.yaml"


class DataError(VidynError):
    """A training-set directory or episode that cannot be read."""


@dataclass
class Episode:
    """One tracked episode (numpy; see the module docstring). T frames, N Gaussians, C cameras."""

    name: str
    positions: np.ndarray  # [T, N, 3] float32, NaN before a Gaussian existed
    quats: np.ndarray  # [T, N, 4] float32 wxyz
    object_ids: np.ndarray  # [N] int64
    particle_ids: np.ndarray  # [N] int64
    log_scales: np.ndarray  # [N, 3]
    colors: np.ndarray  # [N, 3]
    opacity_logits: np.ndarray  # [N]
    stamps_ns: np.ndarray  # [T] int64
    cmd: np.ndarray  # [T, 3] pusher velocity applied from frame t to t+1 [m/s] (0: none)
    cameras: list[CameraModel]  # at the image resolution
    background: np.ndarray  # [3] colour behind the Gaussians
    images: np.ndarray  # [T, C, H, W, 3] uint8 (memory-mapped)
    pusher_id: int | None = None
    soft_ids: np.ndarray | None = None  # [N, L] vote fractions
    soft_id_labels: np.ndarray | None = None  # [L] object ids of the soft_ids columns
    scenario: str = ""

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def dt(self) -> float:
        """Median frame interval [s]."""
        return float(np.median(np.diff(self.stamps_ns))) * 1e-9 if len(self) > 1 else 1.0 / 30

    def starts(self, horizon: int) -> np.ndarray:
        """Frame indices t that can start a window: a full history (t-2..t) and ``horizon`` future frames."""
        return np.arange(HISTORY - 1, len(self) - horizon)

    def alive(self, t0: int) -> np.ndarray:
        """[N] bool: Gaussians with a finite position at frame t0 (and therefore after: the tracker never drops)."""
        return np.isfinite(self.positions[t0]).all(axis=-1)

    # ------------------------------------------------------------------ I/O
    def save(self, directory: str | Path, source: dict[str, Any] | None = None) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / (IMAGES_FILE + ".tmp.npy"), np.ascontiguousarray(self.images))
        (d / (IMAGES_FILE + ".tmp.npy")).replace(d / IMAGES_FILE)
        extra = {}
        if self.soft_ids is not None:
            extra = {"soft_ids": self.soft_ids.astype(np.float32), "soft_id_labels": self.soft_id_labels}
        tmp = d / "episode.tmp.npz"
        np.savez_compressed(
            tmp, positions=self.positions, quats=self.quats, object_ids=self.object_ids,
            particle_ids=self.particle_ids, log_scales=self.log_scales, colors=self.colors,
            opacity_logits=self.opacity_logits, stamps_ns=self.stamps_ns, cmd=self.cmd,
            K=np.stack([c.K for c in self.cameras]), T_world_cam=np.stack([c.T_world_cam for c in self.cameras]),
            image_size=np.array([self.cameras[0].width, self.cameras[0].height]),
            camera_names=np.array([c.name for c in self.cameras]), background=self.background,
            pusher_id=np.array(-1 if self.pusher_id is None else self.pusher_id), scenario=np.array(self.scenario),
            **extra,
        )  # fmt: skip
        tmp.replace(d / EPISODE_FILE)  # last: its presence marks a complete episode
        if source is not None:
            (d / SOURCE_FILE).write_text(json.dumps(source, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> Episode:
        d = Path(directory)
        f = d / EPISODE_FILE
        if not f.is_file():
            raise DataError(f"{d}: no {EPISODE_FILE} (not a prepared episode; run vidyn make-trainset)")
        try:
            z = np.load(f, allow_pickle=False)
            images = np.load(d / IMAGES_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
            w, h = (int(v) for v in z["image_size"])
            cams = [CameraModel(str(n), w, h, K.astype(np.float64), T.astype(np.float64))
                    for n, K, T in zip(z["camera_names"], z["K"], z["T_world_cam"], strict=True)]
            pusher = int(z["pusher_id"])
            ep = cls(
                name=d.name, positions=z["positions"].astype(np.float32), quats=z["quats"].astype(np.float32),
                object_ids=z["object_ids"].astype(np.int64), particle_ids=z["particle_ids"].astype(np.int64),
                log_scales=z["log_scales"].astype(np.float32), colors=z["colors"].astype(np.float32),
                opacity_logits=z["opacity_logits"].astype(np.float32), stamps_ns=z["stamps_ns"].astype(np.int64),
                cmd=z["cmd"].astype(np.float32), cameras=cams, background=z["background"].astype(np.float32),
                images=images, pusher_id=None if pusher < 0 else pusher,
                soft_ids=z["soft_ids"] if "soft_ids" in z else None,
                soft_id_labels=z["soft_id_labels"].astype(np.int64) if "soft_id_labels" in z else None,
                scenario=str(z["scenario"]) if "scenario" in z else "",
            )  # fmt: skip
        except (OSError, KeyError, ValueError) as err:
            raise DataError(f"{d}: unreadable episode ({type(err).__name__}: {str(err)[:120]})") from None
        T, N = ep.positions.shape[:2]
        if ep.images.shape[:2] != (T, len(cams)) or ep.quats.shape != (T, N, 4) or len(ep.object_ids) != N:
            raise DataError(f"{d}: inconsistent episode arrays (positions {ep.positions.shape}, images "
                            f"{ep.images.shape}, {len(cams)} cameras)")
        return ep


def find_episodes(paths: list[str | Path]) -> list[Path]:
    """Episode directories under each path (a training-set directory, or one episode directory), sorted."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if (p / EPISODE_FILE).is_file():
            out.append(p)
            continue
        if not p.is_dir():
            raise DataError(f"{p}: no such training-set directory")
        found = sorted(q.parent for q in p.glob(f"*/{EPISODE_FILE}"))
        if not found:
            raise DataError(f"{p}: no prepared episodes (*/{EPISODE_FILE}); run vidyn make-trainset first")
        out.extend(found)
    return out


# ---------------------------------------------------------------------- batches
@dataclass
class Batch:
    """B rollout windows of one episode, on one device.

    ``state`` has batch shape [B] and the particles alive at the earliest history frame of the batch;
    ``controls`` [B, K, 3]; ``positions`` [B, K, N, 3] / ``quats`` [B, K, N, 4] pseudo labels at t+1..t+K;
    ``images`` [B, K, C, H, W, 3] float in [0, 1]; ``label_mask`` [N] bool: particles the position loss covers
    (objects, not the pusher).
    """

    episode: Episode
    starts: np.ndarray  # [B] frame index t of each window
    state: ParticleState
    controls: Control
    positions: torch.Tensor
    quats: torch.Tensor
    label_mask: torch.Tensor
    images: torch.Tensor
    cameras: list[CameraModel]
    background: torch.Tensor
    dt: float


def make_batch(ep: Episode, starts: np.ndarray, horizon: int, device: str | torch.device = "cpu",
               with_images: bool = True) -> Batch:
    """Windows (t-2..t history, t+1..t+horizon targets) of ``ep`` starting at frames ``starts``."""
    starts = np.asarray(starts, dtype=np.int64)
    keep = ep.alive(int(starts.min()) - (HISTORY - 1))
    hist = np.stack([ep.positions[t - HISTORY + 1 : t + 1] for t in starts])[:, :, keep]  # [B, 3, N, 3]
    histq = np.stack([ep.quats[t - HISTORY + 1 : t + 1] for t in starts])[:, :, keep]
    fut = np.stack([ep.positions[t + 1 : t + 1 + horizon] for t in starts])[:, :, keep]  # [B, K, N, 3]
    futq = np.stack([ep.quats[t + 1 : t + 1 + horizon] for t in starts])[:, :, keep]
    cmd = np.stack([ep.cmd[t : t + horizon] for t in starts])  # [B, K, 3]: cmd[t] moves t -> t+1
    t0 = int(starts[0])
    stamps = tuple(int(s) for s in ep.stamps_ns[t0 - HISTORY + 1 : t0 + 1])
    # windows of one batch share the stamps of the first: the frame interval is constant in a recorded episode
    dev = torch.device(device)
    ids = torch.from_numpy(ep.object_ids[keep]).to(dev)
    soft = soft_labels = None
    if ep.soft_ids is not None:
        soft = torch.from_numpy(np.asarray(ep.soft_ids[keep], dtype=np.float32)).to(dev)
        soft_labels = torch.from_numpy(ep.soft_id_labels).to(dev)
    state = ParticleState(
        positions=torch.from_numpy(hist).to(dev), quats=torch.from_numpy(histq).to(dev), stamps_ns=stamps,
        particle_ids=torch.from_numpy(ep.particle_ids[keep]).to(dev), object_ids=ids,
        log_scales=torch.from_numpy(ep.log_scales[keep]).to(dev), colors=torch.from_numpy(ep.colors[keep]).to(dev),
        opacity_logits=torch.from_numpy(ep.opacity_logits[keep]).to(dev),
        valid=torch.ones(int(keep.sum()), dtype=torch.bool, device=dev), pusher_id=ep.pusher_id,
        soft_ids=soft, soft_id_labels=soft_labels,
    )  # fmt: skip
    label_mask = (ids != 0) & ~state.kinematic
    images = torch.zeros(0)
    if with_images:
        imgs = np.stack([np.asarray(ep.images[t + 1 : t + 1 + horizon]) for t in starts])  # [B, K, C, H, W, 3]
        images = torch.from_numpy(imgs).to(dev).float() / 255.0
    return Batch(
        episode=ep, starts=starts, state=state, controls=Control(torch.from_numpy(cmd).to(dev)),
        positions=torch.from_numpy(fut).to(dev), quats=torch.from_numpy(futq).to(dev), label_mask=label_mask,
        images=images, cameras=ep.cameras, background=torch.from_numpy(ep.background).to(dev), dt=ep.dt,
    )  # fmt: skip


class FrameSampler:
    """Which windows to train on: uniform, or hard example mining (frames with a higher loss more often).

    Per episode and start frame it keeps an exponential moving average of the window's training loss; with HEM a
    start frame is drawn with probability ∝ (1 − uniform_mix) · loss / Σ loss + uniform_mix / n (never-seen frames
    count as the episode's mean, so every frame keeps a floor). Episodes are drawn uniformly (the paper's epoch:
    a fixed number of samplings per scene).
    """

    def __init__(self, episodes: list[Episode], horizon: int, hem: bool, seed: int, uniform_mix: float = 0.3,
                 ema: float = 0.5) -> None:
        self.episodes = episodes
        self.horizon = horizon
        self.hem = hem
        self.uniform_mix = uniform_mix
        self.ema = ema
        self.rng = np.random.default_rng(seed)
        self.starts = [ep.starts(horizon) for ep in episodes]
        for ep, s in zip(episodes, self.starts, strict=True):
            if len(s) == 0:
                raise DataError(f"episode {ep.name}: {len(ep)} frames is too short for a {horizon}-step window")
        self.losses = [np.full(len(s), np.nan) for s in self.starts]

    def sample(self, batch: int) -> tuple[int, np.ndarray]:
        """(episode index, [batch] start frames)."""
        e = int(self.rng.integers(len(self.episodes)))
        s = self.starts[e]
        p = self.probabilities(e)
        pick = self.rng.choice(len(s), size=min(batch, len(s)), replace=False, p=p)
        return e, s[np.sort(pick)]

    def probabilities(self, e: int) -> np.ndarray:
        n = len(self.starts[e])
        if not self.hem:
            return np.full(n, 1.0 / n)
        loss = self.losses[e].copy()
        seen = np.isfinite(loss)
        if not seen.any():
            return np.full(n, 1.0 / n)
        loss[~seen] = loss[seen].mean()
        loss = np.maximum(loss, 1e-12)
        return (1.0 - self.uniform_mix) * loss / loss.sum() + self.uniform_mix / n

    def update(self, e: int, starts: np.ndarray, losses: np.ndarray) -> None:
        """Record the per-window losses of a batch."""
        idx = np.searchsorted(self.starts[e], starts)
        old = self.losses[e][idx]
        self.losses[e][idx] = np.where(np.isfinite(old), self.ema * old + (1 - self.ema) * losses, losses)

    def state_dict(self) -> dict[str, Any]:
        return {"losses": [torch.from_numpy(x) for x in self.losses],
                "rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        losses = [x.numpy() for x in d["losses"]]
        if [len(x) for x in losses] != [len(x) for x in self.losses]:
            raise DataError("resume: the training set differs from the checkpoint's (episode frame counts)")
        self.losses = losses
        self.rng.bit_generator.state = json.loads(d["rng"])
