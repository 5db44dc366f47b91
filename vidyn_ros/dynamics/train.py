"""Training of the learned particle dynamics (seed 001): K-step rollouts, rendering + position loss, HEM, DDP.

    L = (1 / BK) Σ_b Σ_k ( λ_rend · L1(render(pred_{t+k}), frame_{t+k}) + λ_pos · Huber(pred_{t+k}, tracked_{t+k}) )

with λ_rend = 3, λ_pos = 1, K = 3 autoregressive steps rendered to the calibrated views, Adam (lr 1e-3) with two
10x decays. Frames are drawn uniformly or by hard example mining (``data.FrameSampler``). Positions enter the Huber
loss in units of ``position_scale_m`` (1 cm), so both terms are O(0.01-1) at the start.

Pieces (graphcast style): ``RolloutLoss`` (an nn.Module: rollout + losses, the one thing DDP wraps) and ``Trainer``
(data, optimiser, schedule, checkpoints, logs). Everything a run needs is in one ``TrainConfig`` (a YAML file per run;
copied into the run directory and into every checkpoint). Multi-process: launched by torchrun, each rank draws its
own windows (seed + rank), DDP averages the gradients; rank 0 writes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidyn_ros.errors import ConfigError, OutputError

from .checkpoint import load_checkpoint_with_info, save_checkpoint
from .data import Batch, Episode, FrameSampler, find_episodes, make_batch
from .learned import FEATURES, OUTPUTS, LearnedDynamics, ModelConfig, angular_velocity, particle_features


@dataclass(frozen=True)
class LossConfig:
    render: float = 3.0  # λ_rend (0: position loss only)
    position: float = 1.0  # λ_pos (0: rendering loss only)
    position_scale_m: float = 0.01  # positions enter the Huber loss in these units [m]
    huber_delta: float = 1.0  # Huber transition (in position_scale units)
    render_views: int = 0  # random views per batch for the rendering loss (0 = all cameras)
    render_scale: float = 1.0  # render (and average-pool the frames) at this fraction of their resolution


@dataclass(frozen=True)
class TrainConfig:
    """One training run (``vidyn train CONFIG.yaml``). Unknown keys are an error."""

    data: tuple[str, ...] = ()  # training-set directories (vidyn make-trainset) or episode directories
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    rollout: int = 3  # K: autoregressive steps per window
    batch: int = 4  # windows per step (per process)
    steps: int = 1000  # optimiser steps
    lr: float = 1e-3
    lr_decay_at: tuple[float, ...] = (0.6, 0.85)  # fractions of ``steps`` where the lr drops 10x
    hem: bool = True  # hard example mining (else uniform frames)
    hem_uniform_mix: float = 0.3  # share of uniform sampling kept under HEM
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    seed: int = 0
    device: str = "cpu"
    threads: int = 1  # CPU threads for torch (0 = torch's default)
    render_backend: str = "auto"
    checkpoint_every: int = 100  # steps between checkpoints (and loss-curve PNGs)
    log_every: int = 10  # steps between CSV rows
    normalizer_frames: int = 4000  # (episode, frame) samples used to fit the normalisation

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config") -> TrainConfig:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown} (known: {sorted(known)})")
        try:
            model = ModelConfig.from_dict(d.pop("model", {}) or {})
            loss_d = d.pop("loss", {}) or {}
            bad = sorted(set(loss_d) - {f.name for f in fields(LossConfig)})
            if bad:
                raise ValueError(f"unknown loss key(s) {bad}")
            loss = LossConfig(**loss_d)
            data = d.pop("data", ())
            data = (data,) if isinstance(data, str) else tuple(str(x) for x in data)
            decay = tuple(float(x) for x in d.pop("lr_decay_at", (0.6, 0.85)))
            cfg = cls(model=model, loss=loss, data=data, lr_decay_at=decay, **d)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
        cfg.check(where)
        return cfg

    def check(self, where: str = "config") -> None:
        for name in ("rollout", "batch", "steps", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{where}: {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"{where}: lr must be > 0, got {self.lr}")
        if self.loss.render < 0 or self.loss.position < 0 or self.loss.render + self.loss.position <= 0:
            raise ConfigError(f"{where}: loss weights must be >= 0 and not both 0")
        if not 0 < self.loss.render_scale <= 1:
            raise ConfigError(f"{where}: loss.render_scale must be in (0, 1], got {self.loss.render_scale}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"] = list(self.data)
        d["lr_decay_at"] = list(self.lr_decay_at)
        return d


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """A run's YAML config, with ``key.sub=value`` overrides (YAML values) applied on top."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not readable YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the config must be a mapping")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        node = doc
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p} is not a mapping")
        node[parts[-1]] = yaml.safe_load(value)
    # relative data paths are relative to the config file, as a user reading the file expects
    data = doc.get("data", [])
    data = [data] if isinstance(data, str) else list(data)
    doc["data"] = [str(p if Path(p).is_absolute() or Path(p).exists() else path.parent / p) for p in data]
    return TrainConfig.from_dict(doc, where=str(path))


# ---------------------------------------------------------------------- normalisation
def fit_normalizer(model: LearnedDynamics, episodes: list[Episode], frames: int, seed: int = 0) -> dict[str, list]:
    """Fit the model's input / output scaling on the training episodes (object particles only; the background is
    static and the pusher kinematic). Returns the statistics (also written to the run's config record)."""
    rng = np.random.default_rng(seed)
    feats, outs = [], []
    per_ep = max(1, frames // max(len(episodes), 1))
    acc = model.cfg.output == "acceleration"
    for ep in episodes:
        starts = ep.starts(1)
        if len(starts) == 0:
            continue
        pick = rng.choice(starts, size=min(per_ep, len(starts)), replace=False)
        for t in pick:
            b = make_batch(ep, np.array([t]), 1, with_images=False)
            f = particle_features(b.state, b.controls.at(0))[0]  # [N, F]
            obj = (b.state.object_ids != 0)
            moving = obj & ~b.state.kinematic
            feats.append(f[obj])
            nxt = b.state.advance(b.positions[:, 0], b.quats[:, 0], b.dt)
            v1, w1 = nxt.velocity(-1)[0], angular_velocity(nxt)[0]
            if acc:
                lin = (v1 - b.state.velocity(-1)[0]) / b.dt
                ang = (w1 - angular_velocity(b.state)[0]) / b.dt
            else:
                lin, ang = v1, w1
            outs.append(torch.cat([lin, ang], dim=-1)[moving])
    if not feats:
        return {}
    F = torch.cat(feats).double()
    O = torch.cat(outs).double() if outs else torch.zeros(0, len(OUTPUTS), dtype=torch.float64)
    mean = torch.zeros(len(FEATURES), dtype=torch.float64)
    std = torch.ones(len(FEATURES), dtype=torch.float64)
    for i, name in enumerate(FEATURES):
        if name.startswith(("vx", "vy", "vz", "u")):
            std[i] = F[:, i].std() if len(F) > 1 else 1.0  # velocities: zero mean keeps mirror symmetry
        elif name.startswith("z"):
            mean[i], std[i] = F[:, i].mean(), F[:, i].std()
    # a quantity that never varies in the data (e.g. no pusher: u = 0) keeps unit scale instead of 1/eps
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    out_std = O.std(dim=0) if len(O) > 1 else torch.ones(len(OUTPUTS), dtype=torch.float64)
    out_std = torch.where(torch.isfinite(out_std) & (out_std > 1e-6), out_std, torch.ones_like(out_std))
    model.normalizer.set(mean.float(), std.float(), out_std.float())
    return {"in_mean": mean.tolist(), "in_std": std.tolist(), "out_std": out_std.tolist()}


# ---------------------------------------------------------------------- the loss
class RolloutLoss(nn.Module):
    """K-step rollout of the model from a batch's states and the paper's dual loss; the module DDP wraps."""

    def __init__(self, model: LearnedDynamics, cfg: LossConfig, render_backend: str = "auto") -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.render_backend = render_backend

    def forward(self, batch: Batch, views: list[int] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """(loss, per-window loss [B] (detached), parts). ``views``: camera indices of the rendering loss (None: all
        cameras).

        The rendering loss composites each prediction's moving Gaussians over a once-rendered image of the static
        background (``control.goal.LayeredRenderer``, as the planner renders): exact except where Gaussians of an
        object and the table interpenetrate, and several times cheaper, the table covering most pixels."""
        cfg = self.cfg
        state = batch.state
        B, K = batch.positions.shape[:2]
        layered = moving = target = None
        if cfg.render > 0:
            from vidyn_ros.control.goal import LayeredRenderer

            cams = batch.cameras if views is None else [batch.cameras[i] for i in views]
            target = batch.images if views is None else batch.images[:, :, views]
            if cfg.render_scale != 1.0:
                cams = [c.scaled(cfg.render_scale) for c in cams]
                target = _resize(target, cams[0].height, cams[0].width)
            still = state.object_ids == 0 if self.model.cfg.static_background else torch.zeros_like(state.valid)
            moving = ~still
            layered = LayeredRenderer(cams, state.to_gaussians(0).subset(still) if bool(still.any()) else None,
                                      background=batch.background, backend=self.render_backend,
                                      device=batch.positions.device)
        per_window = torch.zeros(B, dtype=torch.float32, device=batch.positions.device)
        render_sum = pos_sum = 0.0
        total = batch.positions.new_zeros(())
        mask = batch.label_mask
        for k in range(K):
            state = self.model.step(state, batch.controls.at(k), batch.dt)
            terms = batch.positions.new_zeros(B)
            if cfg.position > 0 and bool(mask.any()):
                err = (state.now[:, mask] - batch.positions[:, k, mask]) / cfg.position_scale_m
                pos = nn.functional.huber_loss(err, torch.zeros_like(err), delta=cfg.huber_delta,
                                               reduction="none").mean(dim=(-1, -2))  # [B]
                terms = terms + cfg.position * pos
                pos_sum += float(pos.detach().sum())
            if layered is not None:
                rend = torch.stack([(layered(state.to_gaussians(b).subset(moving))[0] - target[b, k]).abs().mean()
                                    for b in range(B)])
                terms = terms + cfg.render * rend
                render_sum += float(rend.detach().sum())
            total = total + terms.sum()
            per_window += terms.detach().float()
        loss = total / (B * K)
        parts = {"render_l1": render_sum / (B * K), "position_huber": pos_sum / (B * K)}
        return loss, per_window / K, parts


def _resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[..., H, W, 3] -> [..., height, width, 3] by area averaging (the frames at a render scale < 1)."""
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2)
    x = nn.functional.interpolate(x, size=(height, width), mode="area")
    return x.permute(0, 2, 3, 1).reshape(*lead, height, width, 3)


# ---------------------------------------------------------------------- the training loop
def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: str) -> tuple[int, int]:
    """Join the process group torchrun describes (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA. (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return _dist_info()


class Trainer:
    """Runs one ``TrainConfig`` into a run directory (see ``vidyn train --help`` for the layout)."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
                 command: str = "") -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.command = command
        self.rank, self.world = _dist_info()
        dev = cfg.device
        if dev.startswith("cuda") and self.world > 1:
            dev = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        self.device = torch.device(dev)
        if not cfg.data:
            raise ConfigError("training config: 'data' lists no training-set directory")
        self.episodes = [Episode.load(p) for p in find_episodes(list(cfg.data))]
        torch.manual_seed(cfg.seed)
        self.model = LearnedDynamics(cfg.model).to(self.device)
        self.sampler = FrameSampler(self.episodes, cfg.rollout, cfg.hem, seed=cfg.seed * 1000 + self.rank,
                                    uniform_mix=cfg.hem_uniform_mix)
        self.view_rng = np.random.default_rng([cfg.seed, self.rank, 7])
        self.step = 0
        self.wall_s = 0.0
        self.history: list[dict[str, float]] = []
        self.normalizer_stats: dict[str, list] = {}
        ckpt = self.run_dir / "checkpoint_last.pt"
        resume_state = None
        if resume and ckpt.is_file():
            loaded, doc = load_checkpoint_with_info(ckpt, self.device)
            if loaded.cfg != cfg.model:
                raise ConfigError(f"{ckpt}: its model config differs from this run's config; cannot resume")
            self.model.load_state_dict(loaded.state_dict())
            resume_state = doc.get("resume")
            self.normalizer_stats = doc["train"].get("normalizer", {})
        elif not resume or not ckpt.is_file():
            self.normalizer_stats = fit_normalizer(self.model, self.episodes, cfg.normalizer_frames, seed=cfg.seed)
        self.loss_fn = RolloutLoss(self.model, cfg.loss, cfg.render_backend)
        self.ddp: nn.Module = self.loss_fn
        if self.world > 1:
            # the normaliser buffers are identical on every rank (same data, same seed); DDP keeps rank 0's in sync
            self.ddp = nn.parallel.DistributedDataParallel(self.loss_fn)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        milestones = sorted({max(1, round(f * cfg.steps)) for f in cfg.lr_decay_at})
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, milestones=milestones, gamma=0.1)
        if resume_state is not None:
            self.opt.load_state_dict(resume_state["optimizer"])
            self.sched.load_state_dict(resume_state["scheduler"])
            self.sampler.load_state_dict(resume_state["sampler"])
            self.view_rng.bit_generator.state = json.loads(resume_state["view_rng"])
            torch.set_rng_state(resume_state["torch_rng"])
            self.step = int(resume_state["step"])
            self.wall_s = float(resume_state["wall_s"])
            self.history = json.loads(resume_state["history"])

    # ------------------------------------------------------------------ one step
    def train_step(self) -> dict[str, float]:
        cfg = self.cfg
        e, starts = self.sampler.sample(cfg.batch)
        batch = make_batch(self.episodes[e], starts, cfg.rollout, self.device)
        n_cams = len(batch.cameras)
        views = None  # the same random views for every window of a batch: one static pre-render per batch
        if 0 < cfg.loss.render_views < n_cams:
            views = sorted(self.view_rng.choice(n_cams, cfg.loss.render_views, replace=False).tolist())
        self.model.train()
        loss, per_window, parts = self.ddp(batch, views)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float("nan")
        if cfg.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
        self.opt.step()
        self.sched.step()
        self.sampler.update(e, starts, per_window.cpu().numpy())
        self.step += 1
        return {"loss": float(loss.detach()), **parts, "grad_norm": grad_norm, "lr": self.opt.param_groups[0]["lr"]}

    # ------------------------------------------------------------------ the run
    def run(self) -> Path:
        cfg = self.cfg
        main = self.rank == 0
        if main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise OutputError(f"{self.run_dir}: cannot create run directory ({err.strerror})") from None
            self._write_config()
            self._rewrite_csv()  # a resumed run continues the restored history
        bar = None
        if self.progress and main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=None)
        acc: dict[str, list[float]] = {}
        t_last = time.perf_counter()
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            stats = self.train_step()
            self.wall_s += time.perf_counter() - t0
            if not math.isfinite(stats["loss"]):
                raise FloatingPointError(f"training diverged at step {self.step} (loss {stats['loss']})")
            for k, v in stats.items():
                acc.setdefault(k, []).append(v)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.0e}")
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                row = {"step": self.step, "wall_s": round(self.wall_s, 2),
                       **{k: float(np.nanmean(v)) for k, v in acc.items()},
                       "steps_per_s": len(acc["loss"]) / max(time.perf_counter() - t_last, 1e-9)}
                self.history.append(row)
                acc, t_last = {}, time.perf_counter()
                if main:
                    self._append_csv(row)
            if main and (self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps):
                self.save(self.run_dir / "checkpoint_last.pt", with_resume=True)
                self.plot()
        if bar is not None:
            bar.close()
        final = self.run_dir / "model.pt"
        if main:
            self.save(final, with_resume=False)
            self.plot()
        return final

    # ------------------------------------------------------------------ outputs
    def provenance(self) -> dict[str, Any]:
        from vidyn_ros.provenance import software_versions

        return {
            "command": self.command, "config": self.cfg.to_dict(), "step": self.step, "wall_s": round(self.wall_s, 1),
            "world_size": self.world, "device": str(self.device), "threads": torch.get_num_threads(),
            "episodes": [ep.name for ep in self.episodes], "data": list(self.cfg.data),
            "scenarios": sorted({ep.scenario for ep in self.episodes}), "normalizer": self.normalizer_stats,
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "versions": software_versions("torch", "numpy", "scipy"),
        }  # fmt: skip

    def save(self, path: Path, with_resume: bool) -> Path:
        resume = None
        if with_resume:
            resume = {
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "sampler": self.sampler.state_dict(), "view_rng": json.dumps(self.view_rng.bit_generator.state),
                "torch_rng": torch.get_rng_state(), "step": self.step, "wall_s": self.wall_s,
                "history": json.dumps(self.history),
            }  # fmt: skip
        return save_checkpoint(path, self.model, train=self.provenance(), resume=resume)

    def _write_config(self) -> None:
        import yaml

        try:
            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        except OSError as err:
            raise OutputError(f"{self.run_dir}: cannot write config.yaml ({err.strerror})") from None

    CSV_FIELDS = ("step", "wall_s", "loss", "render_l1", "position_huber", "grad_norm", "lr", "steps_per_s")

    def _rewrite_csv(self) -> None:
        with (self.run_dir / "losses.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.history)

    def _append_csv(self, row: dict[str, float]) -> None:
        with (self.run_dir / "losses.csv").open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.CSV_FIELDS, extrasaction="ignore").writerow(row)

    def plot(self) -> Path | None:
        from vidyn_ros.viz import line_plot

        if not self.history:
            return None
        steps = [r["step"] for r in self.history]
        series = {"total": [r["loss"] for r in self.history]}
        lam_r, lam_p = self.cfg.loss.render, self.cfg.loss.position
        if lam_r > 0:
            series[f"{lam_r:g} x render L1"] = [lam_r * r["render_l1"] for r in self.history]
        if lam_p > 0:
            series[f"{lam_p:g} x position Huber"] = [lam_p * r["position_huber"] for r in self.history]
        return line_plot(steps, series, self.run_dir / "losses.png", title="training loss", xlabel="step",
                         log_y=True)
