"""Figures and numbers of a system identification: convergence, loss landscape, final frame (PNG, next to JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidyn_ros.physics.model import PhysicsModel
from vidyn_ros.physics.scene import ParticleBinding
from vidyn_ros.physics.sysid import Observation, SysidConfig, SysidResult, loss_curve, render_window
from vidyn_ros.types import GaussianSet
from vidyn_ros.viz import image_grid, line_plot

__all__ = ["convergence_figure", "final_frame_figure", "landscape", "landscape_figure"]

# ∇Sim's Fig. 2 sweeps mass over 0.1x-5x of the true value; friction over +-50 %
SWEEPS = {"mass": (0.1, 5.0, "log"), "mu": (0.5, 1.5, "lin"), "ke": (0.25, 4.0, "log"), "kd": (0.25, 4.0, "log"),
          "kf": (0.25, 4.0, "log")}


def convergence_figure(history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss and each parameter's relative distance to its final value in its motion window, per evaluation (log)."""
    x = [h.get("evaluation", i) for i, h in enumerate(history)]
    series = {"loss": [h["loss"] for h in history]}
    windows = sorted({h.get("window", 0) for h in history})
    for w in windows:
        hw = [h for h in history if h.get("window", 0) == w]
        for n in (k for k, v in hw[-1].items() if isinstance(v, list)):
            final = np.asarray(hw[-1][n], dtype=np.float64)
            for k in range(len(final)):
                vals = np.full(len(history), np.nan)
                for i, h in enumerate(history):
                    if h.get("window", 0) == w and n in h:
                        vals[i] = abs(h[n][k] - final[k]) / max(abs(final[k]), 1e-12)
                series[f"window {w} |{n} - final| / final"] = vals
    return line_plot(x, series, path, title=title or "system identification: convergence", xlabel="evaluation",
                     ylabel="loss / relative change", log_y=True, markers=True)


def landscape(gaussians: GaussianSet, model: PhysicsModel, binding: ParticleBinding, obs: Observation,
              res: SysidResult, cfg: SysidConfig, n: int) -> dict[str, Any]:
    """The pixel loss around the estimate along each identified parameter of the first identified body."""
    out: dict[str, Any] = {}
    for k, a in enumerate(res.identifiability):
        names = [p for p in cfg.params if a.identifiable.get(p)]
        if not names:
            continue
        for name in names:
            est = float(getattr(res.params, name)[k])
            lo, hi, kind = SWEEPS[name]
            f = np.geomspace(lo, hi, n) if kind == "log" else np.linspace(lo, hi, n)
            values = (est * f).tolist()
            out[name] = {"object_id": a.object_id, "estimate": est, "values": values,
                         "loss": loss_curve(gaussians, model, binding, obs, res.params, name, k, values, cfg)}
        break
    return out


def landscape_figure(doc: dict[str, Any], path: str | Path) -> list[Path]:
    """One PNG per parameter: loss vs value (x: value / estimate)."""
    paths = []
    path = Path(path)
    for name, d in doc.items():
        x = np.asarray(d["values"]) / d["estimate"]
        p = path.with_name(f"{path.stem}_{name}{path.suffix}")
        paths.append(line_plot(x, {f"pixel loss vs {name}": d["loss"]}, p, log_y=True, markers=True,
                               title=f"loss landscape, object {d['object_id']}: {name} (estimate {d['estimate']:.4g})",
                               xlabel=f"{name} / estimate", ylabel="pixel loss"))
    return paths


def final_frame_figure(gaussians: GaussianSet, model: PhysicsModel, binding: ParticleBinding, obs: Observation,
                       res: SysidResult, cfg: SysidConfig, path: str | Path) -> Path:
    """Observed | simulated with the identified parameters | |difference| x 4, per camera, at the last loss frame of
    the last motion window."""
    f, sim_t = render_window(gaussians, model, binding, obs, res.params, cfg)
    sim = sim_t.numpy()
    observed = obs.images[f].numpy()
    rows = []
    labels = []
    for c in range(len(obs.cameras)):
        o, s = observed[c], sim[c]
        d = np.clip(np.abs(o - s) * 4, 0, 1)
        rows.append([(o * 255).astype(np.uint8), (s * 255).astype(np.uint8), (d * 255).astype(np.uint8)])
        labels.append([f"{obs.cameras[c].name} observed", "simulated (identified)", "|difference| x4"])
    return image_grid(rows, path, labels, title=f"frame {f}")
