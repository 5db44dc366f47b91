"""Evaluation of dynamics backends on held-out episodes against simulator truth (the paper's metrics).

Input per window (start frame t): the *tracked* scene at t-2, t-1, t of a prepared held-out episode (what the node
and the MPC see: deployed segmenter + tracking), and the recorded pusher commands over the horizon. The backend rolls
forward H steps. At each horizon h the predicted object particles (table and pusher excluded) are compared with
points sampled on the *true* object surfaces at t+h (simulator poses and shapes from the bag and its scenario;
``vidyn_ros.metrics``, shared with the scene evaluation):

- **CD** [cm]: symmetric Chamfer distance (mean of both one-sided mean distances), all objects jointly;
- **δ** (fraction of predicted points within a threshold of the true surfaces): the paper's 5/10/20 cm and 1/2/4 cm
  for tabletop-sized objects; δ_avg is their mean;
- **CD moving**: the same restricted to objects whose true centroid moves more than ``moving_m`` over the window
  (predicted particles are attributed to the true object they lie on at t: ``metrics.true_object_ids``), which is
  where backends differ (a pin at rest is predicted well by anything);
- **PSNR / SSIM** of the prediction rendered from every camera against the real frames at t+h (at ``render_h``).

Rows (``evaluate_rows``): a name and one or more backends (checkpoints of several training seeds, or a baseline);
metrics are averaged over windows and episodes per backend, then mean ± std over the row's backends.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidyn_ros import metrics
from vidyn_ros.types import ObjectPose

from .data import SOURCE_FILE, DataError, Episode, find_episodes, make_batch
from .state import Control, Dynamics, InvalidStateError

PAPER = metrics.DELTA_THRESHOLDS_PAPER
TABLETOP = metrics.DELTA_THRESHOLDS_TABLETOP


@dataclass
class EvalEpisode:
    """A held-out prepared episode with its simulator truth (evaluation only)."""

    episode: Episode
    poses: list[list[ObjectPose]]  # [T] true poses at the episode's frames
    shapes: metrics.ObjectShapes  # true id -> (shape, size)
    true_pusher: int | None  # the pusher's true id (excluded from the metrics: it is commanded, not predicted)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.episode.name


def load_eval_episode(directory: str | Path) -> EvalEpisode:
    """A prepared episode (``vidyn make-trainset``) and the ground truth of the bag it was made from."""
    from vidyn_ros.bags import BagReader
    from vidyn_ros.rig.scenario import load_scenario

    d = Path(directory)
    ep = Episode.load(d)
    try:
        source = json.loads((d / SOURCE_FILE).read_text())
        bag = Path(source["bag"])
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{d}: no readable {SOURCE_FILE} naming the source bag ({err})") from None
    scen_file = bag.parent / "scenario.yaml"
    scn = load_scenario(str(scen_file) if scen_file.is_file() else (source.get("scenario") or ep.scenario))
    shapes = {i + 1: (o.shape, o.size_array) for i, o in enumerate(scn.objects)}
    true_pusher = len(scn.objects) + 1 if scn.pusher is not None else None
    by_stamp: dict[int, list[ObjectPose]] = {}
    with BagReader(bag) as reader:
        for stamp, poses in reader.object_poses():
            by_stamp[int(stamp)] = poses
    missing = [int(s) for s in ep.stamps_ns if int(s) not in by_stamp]
    if missing:
        raise DataError(f"{bag}: no ground-truth poses at {len(missing)} of the episode's frames (first {missing[0]})")
    return EvalEpisode(ep, [by_stamp[int(s)] for s in ep.stamps_ns], shapes, true_pusher, source)


def load_eval_set(paths: Sequence[str | Path]) -> list[EvalEpisode]:
    return [load_eval_episode(p) for p in find_episodes(list(paths))]


# ---------------------------------------------------------------------- one backend
@dataclass
class WindowMetrics:
    cd: np.ndarray  # [H] m
    cd_moving: np.ndarray  # [H] m (NaN: nothing moves in this window)
    delta_tabletop: np.ndarray  # [H, 3]
    delta_paper: np.ndarray  # [H, 3]
    psnr: dict[int, float]
    ssim: dict[int, float]
    diverged: bool = False  # the prediction blew up (step_or_hold): scored as its last sane state from there on


def _surface(ev: EvalEpisode, t: int, ids: set[int] | None, n_per_object: int) -> np.ndarray:
    pts = metrics.object_surface_points(ev.shapes, ev.poses[t], n_per_object=n_per_object)
    keep = [p for k, p in pts.items() if k != ev.true_pusher and (ids is None or k in ids)]
    return np.concatenate(keep) if keep else np.zeros((0, 3))


def _centroids(poses: list[ObjectPose]) -> dict[int, np.ndarray]:
    return {int(p.object_id): np.asarray(p.position, dtype=np.float64) for p in poses}


MAX_SPEED_M_S = 50.0  # no tabletop particle moves this fast: a prediction that does has blown up


def step_or_hold(model: Dynamics, state: Any, control: Control, dt: float, sub_steps: int = 1) -> tuple[Any, bool]:
    """One step (``sub_steps`` model steps); (state, False), or (the input state, True) when the prediction blew up.

    A prediction that turned non-finite, or moves a particle faster than ``MAX_SPEED_M_S`` (physics through
    interpenetrating bodies), is what a node would refuse: the evaluation holds the last sane prediction for the rest
    of the window and counts the window as diverged."""
    try:
        nxt = state
        for _ in range(sub_steps):
            nxt = model.step(nxt, control, dt)
    except InvalidStateError:  # a backend that checks its own output
        return state, True
    if not bool(torch.isfinite(nxt.now).all()):
        return state, True
    if float((nxt.now - state.now).norm(dim=-1).max()) > MAX_SPEED_M_S * dt:
        return state, True
    return nxt, False


def evaluate_window(model: Dynamics, ev: EvalEpisode, t: int, horizon: int, render_h: Sequence[int] = (),
                    moving_m: float = 0.01, n_per_object: int = 600, sub_steps: int = 1) -> WindowMetrics:
    """Roll ``model`` from the tracked state at frame t for ``horizon`` steps and score every step."""
    from vidyn_ros.render import render
    from vidyn_ros.scene.losses import psnr, ssim

    ep = ev.episode
    batch = make_batch(ep, np.array([t]), horizon, with_images=False)
    state = batch.state.index(0)
    ids = state.object_ids
    pred_sel = ((ids != 0) & ~state.kinematic).numpy()
    # which true object each predicted particle lies on at t (evaluation-side association, for "moving" only)
    x_t = state.now.detach().numpy()
    true_of = metrics.true_object_ids(x_t, ev.shapes, ev.poses[t])
    c0, c1 = _centroids(ev.poses[t]), _centroids(ev.poses[t + horizon])
    moving = {k for k in c0 if k in c1 and k != ev.true_pusher and np.linalg.norm(c1[k] - c0[k]) > moving_m}
    H = horizon
    out = WindowMetrics(np.full(H, np.nan), np.full(H, np.nan), np.full((H, 3), np.nan), np.full((H, 3), np.nan),
                        {}, {})
    dt = batch.dt / sub_steps
    with torch.no_grad():
        s = state
        for h in range(1, H + 1):
            if not out.diverged:
                s, out.diverged = step_or_hold(model, s, Control(batch.controls.linear[0, h - 1]), dt, sub_steps)
            p = s.now.detach().numpy()
            pred = p[pred_sel]
            ref = _surface(ev, t + h, None, n_per_object)
            out.cd[h - 1] = metrics.chamfer_distance(pred, ref).distance
            out.delta_tabletop[h - 1] = list(metrics.delta_within(pred, ref, TABLETOP).values())
            out.delta_paper[h - 1] = list(metrics.delta_within(pred, ref, PAPER).values())
            if moving:
                mv = pred_sel & np.isin(true_of, sorted(moving))
                out.cd_moving[h - 1] = metrics.chamfer_distance(p[mv], _surface(ev, t + h, moving,
                                                                                 n_per_object)).distance
            if h in render_h:
                g = s.to_gaussians()
                img = render(g, ep.cameras, background=torch.from_numpy(ep.background)).rgb.clamp(0, 1)
                obs = torch.from_numpy(np.array(ep.images[t + h])).float() / 255.0
                out.psnr[h] = psnr(img, obs)
                out.ssim[h] = float(ssim(img, obs))
    return out


def evaluate_backend(model: Dynamics, episodes: Sequence[EvalEpisode], horizon: int = 10, stride: int = 8,
                     render_h: Sequence[int] = (1, 10), sub_steps: int = 1, progress: Callable[[], None] | None = None,
                     ) -> dict[str, Any]:
    """Metrics of one backend averaged over the windows of all episodes (per horizon)."""
    wins: list[WindowMetrics] = []
    for ev in episodes:
        for t in range(2, len(ev.episode) - horizon, stride):
            wins.append(evaluate_window(model, ev, t, horizon, render_h, sub_steps=sub_steps))
            if progress is not None:
                progress()
    if not wins:
        raise DataError(f"no evaluation window: episodes shorter than {horizon + 3} frames")

    def mean(key: str) -> list:
        return np.nanmean(np.stack([getattr(w, key) for w in wins]), axis=0).tolist()

    res: dict[str, Any] = {"windows": len(wins), "cd_m": mean("cd"), "cd_moving_m": _nanmean_rows(wins),
                           "delta_tabletop": mean("delta_tabletop"), "delta_paper": mean("delta_paper")}
    res["delta_avg_tabletop"] = [float(np.mean(r)) for r in res["delta_tabletop"]]
    res["delta_avg_paper"] = [float(np.mean(r)) for r in res["delta_paper"]]
    for key in ("psnr", "ssim"):
        res[key] = {int(h): float(np.mean([getattr(w, key)[h] for w in wins])) for h in render_h if h <= horizon}
    res["moving_windows"] = int(sum(np.isfinite(w.cd_moving).any() for w in wins))
    res["diverged_windows"] = int(sum(w.diverged for w in wins))
    return res


def _nanmean_rows(wins: list[WindowMetrics]) -> list[float]:
    a = np.stack([w.cd_moving for w in wins])
    ok = np.isfinite(a)
    return [float(a[ok[:, h], h].mean()) if ok[:, h].any() else float("nan") for h in range(a.shape[1])]


# ---------------------------------------------------------------------- rows
BASELINES = ("constant_velocity", "static", "physics")  # + "physics:<sysid.json>" (identified physics)


def make_dynamics(spec: str, device: str = "cpu") -> tuple[Dynamics, dict[str, Any]]:
    """A backend from a row member: a baseline name or a checkpoint path. (backend, its provenance)."""
    from .checkpoint import load_checkpoint_with_info
    from .state import ConstantVelocity, Static

    if spec == "constant_velocity":
        return ConstantVelocity(), {"baseline": spec}
    if spec == "static":
        return Static(), {"baseline": spec}
    if spec == "physics" or spec.startswith("physics:"):  # rigid bodies fitted to each window's scene (Newton)
        from vidyn_ros.physics.dynamics import ScenePhysics

        sp = ScenePhysics.from_sysid(spec.split(":", 1)[1]) if ":" in spec else ScenePhysics()
        return sp, {"physics": sp.source, "mu": sp.mu, "density_kg_m3": sp.density}
    model, doc = load_checkpoint_with_info(spec, device)
    train = doc.get("train", {})
    return model, {"checkpoint": spec, "seed": train.get("config", {}).get("seed"), "steps": train.get("step"),
                   "wall_s": train.get("wall_s"), "model": model.cfg.to_dict()}


def aggregate(per_member: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std (over a row's members: training seeds) of every per-horizon metric."""
    out: dict[str, Any] = {"members": len(per_member),
                           "diverged_windows": int(sum(m.get("diverged_windows", 0) for m in per_member)),
                           "windows": int(sum(m.get("windows", 0) for m in per_member))}
    for key in ("cd_m", "cd_moving_m", "delta_avg_tabletop", "delta_avg_paper"):
        a = np.array([m[key] for m in per_member], dtype=np.float64)
        out[key] = np.nanmean(a, axis=0).tolist()
        out[key + "_std"] = (np.nanstd(a, axis=0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])).tolist()
    for key in ("psnr", "ssim"):
        hs = sorted(per_member[0][key])
        out[key] = {h: float(np.mean([m[key][h] for m in per_member])) for h in hs}
        out[key + "_std"] = {h: float(np.std([m[key][h] for m in per_member], ddof=1)) if len(per_member) > 1
                             else 0.0 for h in hs}
    return out


def fmt_pm(mean: float, std: float, scale: float = 1.0, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}" if std > 0 else f"{mean * scale:.{digits}f}"


def results_table(rows: list[dict[str, Any]], horizons: Sequence[int]) -> str:
    """Markdown: CD [cm] at ``horizons``, CD moving at the last, δ_avg (1/2/4 cm and 5/10/20 cm), PSNR / SSIM."""
    H = max(horizons)
    head = ["row", "n"] + [f"CD@{h} [cm]" for h in horizons] + [
        f"CD moving@{H} [cm]", f"δ_avg 1/2/4 cm @{H}", f"δ_avg 5/10/20 cm @{H}", f"PSNR@{H} [dB]", f"SSIM@{H}",
        "diverged"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        a = r["metrics"]
        cells = [r["name"], str(a["members"])]
        cells += [fmt_pm(a["cd_m"][h - 1], a["cd_m_std"][h - 1], 100) for h in horizons]
        cells.append(fmt_pm(a["cd_moving_m"][H - 1], a["cd_moving_m_std"][H - 1], 100))
        cells.append(fmt_pm(a["delta_avg_tabletop"][H - 1], a["delta_avg_tabletop_std"][H - 1], 100, 1) + " %")
        cells.append(fmt_pm(a["delta_avg_paper"][H - 1], a["delta_avg_paper_std"][H - 1], 100, 1) + " %")
        cells.append(fmt_pm(a["psnr"].get(H, float("nan")), a["psnr_std"].get(H, 0.0)))
        cells.append(fmt_pm(a["ssim"].get(H, float("nan")), a["ssim_std"].get(H, 0.0), 1, 3))
        cells.append(f"{a.get('diverged_windows', 0)}/{a.get('windows', 0)}")  # windows that blew up (step_or_hold)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- figures
def paths_figure(rows: list[tuple[str, Dynamics]], ev: EvalEpisode, t: int, horizon: int, path: str | Path,
                 lim: float = 0.0) -> Path:
    """Top view of one window: every object's true centroid path (black) and each row's predicted path (colours);
    predicted paths are the mean of the particles the tracker gave that object. ``lim`` 0: fit the objects."""
    from PIL import Image, ImageDraw

    from vidyn_ros.control.plots import PALETTE, path_panel, save

    ep = ev.episode
    batch = make_batch(ep, np.array([t]), horizon, with_images=False)
    state = batch.state.index(0)
    ids = state.object_ids.numpy()
    labels = [k for k in np.unique(ids) if k != 0 and k != state.pusher_id]
    true_paths = []
    for k in _centroids(ev.poses[t]):
        if k == ev.true_pusher:
            continue
        true_paths.append(np.stack([_centroids(ev.poses[t + h])[k] for h in range(horizon + 1)]))
    W, Hh = 760, 560
    img = Image.new("RGB", (W, Hh), (255, 255, 255))
    d = ImageDraw.Draw(img)
    allxy = np.concatenate([p[:, :2] for p in true_paths]) if true_paths else np.zeros((1, 2))
    centre = (allxy.max(axis=0) + allxy.min(axis=0)) / 2  # the panel is centred on the objects
    lim = max(lim, float(np.abs(allxy - centre).max()) + 0.03) if lim <= 0 else lim
    shift = np.array([centre[0], centre[1], 0.0])
    panel = []
    for xy in true_paths:
        panel.append((xy - shift, (0, 0, 0), 4))
    for i, (name, model) in enumerate(rows):
        col = PALETTE[i % len(PALETTE)]
        s = state
        pos = [s.now.numpy()]
        with torch.no_grad():
            for h in range(horizon):
                s, _ = step_or_hold(model, s, Control(batch.controls.linear[0, h]), batch.dt)
                pos.append(s.now.numpy())
        pos = np.stack(pos)  # [H+1, N, 3]
        for k in labels:
            panel.append((pos[:, ids == k].mean(axis=1) - shift, col, 2))
        d.text((560, 40 + 16 * i), name[:26], fill=col)
    d.text((560, 24), "true path", fill=(0, 0, 0))
    path_panel(d, (10, 10, 550, Hh - 10), panel, lim=lim,
               title=f"{ep.name}: frames {t}..{t + horizon}, top view around ({centre[0]:.2f}, {centre[1]:.2f}), "
                     f"±{lim:.2f} m")
    return save(img, path)


def frames_figure(model: Dynamics, ev: EvalEpisode, t: int, horizons: Sequence[int], path: str | Path,
                  camera: int = 0, label: str = "predicted") -> Path:
    """A strip per horizon: observed frame | predicted frame | |difference| x4, one camera."""
    from vidyn_ros.render import render
    from vidyn_ros.viz import image_grid

    ep = ev.episode
    H = max(horizons)
    batch = make_batch(ep, np.array([t]), H, with_images=False)
    s = batch.state.index(0)
    rows, labels = [], []
    with torch.no_grad():
        for h in range(1, H + 1):
            s, _ = step_or_hold(model, s, Control(batch.controls.linear[0, h - 1]), batch.dt)
            if h not in horizons:
                continue
            rgb = render(s.to_gaussians(), [ep.cameras[camera]], background=torch.from_numpy(ep.background)).rgb[0]
            pred = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
            obs = np.asarray(ep.images[t + h, camera])
            diff = np.clip(np.abs(pred.astype(np.int16) - obs.astype(np.int16)) * 4, 0, 255).astype(np.uint8)
            rows.append([obs, pred, diff])
            labels.append([f"observed t+{h}", f"{label} t+{h}", "|difference| x4"])
    return image_grid(rows, path, labels, max_tile_width=320,
                      title=f"{ep.name} {ep.cameras[camera].name}: from frame {t}")


def most_moving_window(ev: EvalEpisode, horizon: int, stride: int = 1) -> int:
    """The start frame whose true object motion over the horizon is largest (for figures)."""
    best, best_t = -1.0, 2
    for t in range(2, len(ev.episode) - horizon, stride):
        c0, c1 = _centroids(ev.poses[t]), _centroids(ev.poses[t + horizon])
        m = sum(float(np.linalg.norm(c1[k] - c0[k])) for k in c0 if k in c1 and k != ev.true_pusher)
        if m > best:
            best, best_t = m, t
    return best_t
