"""`vidyn make-dataset SCENARIO --episodes N --seed S --out DIR`: simulated episodes rendered offline straight to bags.

No DDS: the simulated rig is stepped in-process and every frame goes to a rosbag2 bag through vidyn_ros.bags, with the
same topics the live rig publishes (color, aligned depth, mask, camera_info per camera; /clock; ground truth on
/vidyn/sim/object_poses; pusher commands on /vidyn/cmd). Episode e uses seed S + e for its initial conditions and its
pusher policy, so a dataset is reproducible from its dataset.yaml.

Layout::

    DIR/dataset.yaml            command line, versions, scenario, settings, one entry per episode (seed, frames, ...)
    DIR/scenario.yaml           a copy of the scenario file used
    DIR/episode_0000/           a rosbag2 bag (metadata.yaml, episode_0000.mcap, rig_calibration.yaml)
    DIR/episode_0001/ ...
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

NAME = "make-dataset"
HELP = "render simulated episodes offline into rosbag2 bags (with ground truth)"
DESCRIPTION = (
    "Render N episodes of a scenario with the simulated rig straight to rosbag2 bags (no DDS), one bag per episode "
    "with seed SEED + episode index for the initial conditions and the pusher's random policy. Ground-truth object "
    "poses go on /vidyn/sim/object_poses, pusher commands on /vidyn/cmd. Writes DIR/dataset.yaml describing the run."
)
ORDER = 40


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vidyn_ros.params import ranged

    p.add_argument("scenario", help="a shipped scenario name (push, bowling, cube_stack) or a scenario YAML path")
    p.add_argument("--episodes", type=ranged(int, "[1, 100000]"), default=1, metavar="N",
                   help="number of episodes (default 1)")
    p.add_argument("--seed", type=ranged(int, "[0, 4294967295]"), default=0, metavar="S",
                   help="seed of episode 0; episode e uses S+e")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="dataset directory to create")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="bag storage (default mcap)")
    p.add_argument("--frames", type=ranged(int, "[1, inf)"), default=None, metavar="F",
                   help="frames per episode (default: the scenario's duration x fps)")
    p.add_argument("--scale", type=ranged(float, "(0, 4]"), default=1.0,
                   help="render scale: 0.25 renders 640x480 cameras at 160x120 (default 1.0)")
    p.add_argument("--pusher-policy", choices=["random", "none"], default="random",
                   help="pusher commands: seeded smooth random pushes towards the objects, or none (default random; "
                        "ignored by scenarios without a pusher)")
    p.add_argument("--compress", choices=["none", "zstd"], default="zstd",
                   help="zstd (default): compressed MCAP chunks, sqlite3: per message; ~12x smaller for the push "
                        "scenario at no measurable cost in time")
    p.add_argument("--no-masks", action="store_true", help="do not render instance masks")
    p.add_argument("--overwrite", action="store_true", help="replace episode bags already in DIR")


class SmoothRandomPusher:
    """A seeded, smooth random velocity policy that keeps pushing objects (so the data has actions with effects).

    Every ``segment_s`` seconds it picks an object and an approach point behind it, then heads for it; the command is
    that heading at ``speed_frac`` x max speed, plus low-pass filtered noise, all through a first-order filter so
    velocities change smoothly (no jumps the dynamics model could not explain).
    """

    def __init__(
        self,
        seed: int,
        max_speed: float,
        workspace: Sequence[float],
        speed_frac: float = 0.5,
        segment_s: float = 1.5,
        smoothing_s: float = 0.2,
    ) -> None:
        self.rng = np.random.default_rng([seed, 1])  # independent of the rig's stream for the same seed
        self.max_speed = float(max_speed)
        self.workspace = np.asarray(workspace, dtype=np.float64)  # x_min, y_min, x_max, y_max
        self.speed = speed_frac * self.max_speed
        self.segment_s = segment_s
        self.smoothing_s = smoothing_s
        self.v = np.zeros(3)
        self.noise = np.zeros(2)
        self.target: np.ndarray | None = None
        self.t_next = 0.0

    def __call__(self, t: float, dt: float, pusher_xy: np.ndarray, object_xy: np.ndarray) -> np.ndarray:
        """Velocity command [m/s] (world frame, z = 0) at time ``t`` [s].

        Args:
            pusher_xy: [2] pusher position; object_xy: [K, 2] positions of the objects (pusher excluded).
        """
        if t >= self.t_next or self.target is None:
            self.t_next = t + self.segment_s * self.rng.uniform(0.7, 1.3)
            if len(object_xy) and self.rng.uniform() < 0.8:
                obj = object_xy[self.rng.integers(len(object_xy))]
                # aim past the object's centre along a random direction, so the pusher sweeps through it
                ang = self.rng.uniform(0, 2 * np.pi)
                self.target = obj + 0.06 * np.array([np.cos(ang), np.sin(ang)])
            else:
                self.target = self.rng.uniform(self.workspace[:2] * 0.8, self.workspace[2:] * 0.8)
        to = self.target - pusher_xy
        dist = float(np.linalg.norm(to))
        heading = to / dist if dist > 1e-6 else np.zeros(2)
        a = min(1.0, dt / self.smoothing_s)
        self.noise += a * (self.rng.normal(0.0, 0.5, 2) - self.noise)
        desired = self.speed * (heading * min(1.0, dist / 0.02) + 0.3 * self.noise)
        self.v[:2] += a * (desired - self.v[:2])
        return self.v.copy()


def software_versions() -> dict[str, str]:
    """Versions that decide what a simulated run produced (dataset.yaml, the demo's summary.json, bench results)."""
    from vidyn_ros.provenance import software_versions as versions

    return versions("mujoco", "rosbags", "numpy")


def _write_yaml(path: Any, doc: dict) -> None:
    import yaml

    from vidyn_ros.errors import OutputError

    tmp = path.with_suffix(".yaml.tmp")
    try:
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None))
        tmp.replace(path)  # atomic: a reader never sees half a file
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({err.strerror})") from None


@contextlib.contextmanager
def _interrupt_between_frames() -> Iterator[threading.Event]:
    """Ctrl-C and SIGTERM (e.g. a job scheduler) inside the block set the yielded Event; the render loop raises
    KeyboardInterrupt at the next frame boundary, so the bag ends with a whole frame (every topic of the last stamp)
    and is finished rather than cut off. A second signal interrupts at once. Previous handlers are restored after.
    """
    import signal

    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield stop
        return

    def _on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt(f"signal {signum}")
        stop.set()

    old = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import shlex
    import shutil
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from vidyn_ros.errors import OutputError
    from vidyn_ros.rig.scenario import load_scenario

    scn = load_scenario(args.scenario)  # ConfigError (one line) for an unknown name or a bad file
    n_frames = args.frames or scn.n_frames
    out = Path(args.out)
    names = [f"episode_{e:04d}" for e in range(args.episodes)]
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    existing = [n for n in names if (out / n).exists()]
    if existing and not args.overwrite:
        raise OutputError(f"{out}: already holds {existing[0]} (use --overwrite to replace, or another --out)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create directory ({err.strerror})") from None

    use_pusher = scn.pusher is not None and args.pusher_policy == "random"
    doc: dict[str, Any] = {
        "command": shlex.join(["vidyn", *sys.argv[1:]]) if sys.argv[1:2] == [NAME] else shlex.join(sys.argv),
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": software_versions(),
        "scenario": scn.name,
        "scenario_file": "scenario.yaml",
        "storage": args.storage,
        "compression": args.compress,
        "frames_per_episode": n_frames,
        "fps": float(scn.fps),
        "render_scale": float(args.scale),
        "masks": not args.no_masks,
        "pusher_policy": "smooth_random" if use_pusher else "none",
        "seed": int(args.seed),
        "complete": False,
        "episodes": [],
    }
    if scn.source is not None and Path(scn.source).is_file():
        try:
            shutil.copyfile(scn.source, out / "scenario.yaml")
        except OSError as err:
            raise OutputError(f"{out / 'scenario.yaml'}: cannot write ({err.strerror})") from None
    _write_yaml(out / "dataset.yaml", doc)  # first, so that an unwritable DIR fails before any rendering

    total = args.episodes * n_frames
    with _interrupt_between_frames() as stop, tqdm(total=total, unit="frame", desc=scn.name, disable=None) as bar:
        try:
            for e, name in enumerate(names):
                seed = args.seed + e
                bar.set_description(f"{scn.name} {name}")
                # Listed before rendering and updated in place: an interrupted episode is still indexed (its bag is
                # finished by BagWriter on the way out), marked complete: false.
                entry: dict[str, Any] = {"name": name, "seed": seed, "bag": name, "frames": 0, "complete": False}
                doc["episodes"].append(entry)
                _render_episode(scn, seed, n_frames, args, out / name, use_pusher, bar, entry, stop)
                entry["complete"] = True
                _write_yaml(out / "dataset.yaml", doc)  # after every episode
            doc["complete"] = True
        finally:
            _write_yaml(out / "dataset.yaml", doc)
    print(f"vidyn make-dataset: wrote {len(doc['episodes'])} episode(s) x {n_frames} frames of {scn.name!r} to {out}")
    return 0


def _render_episode(scn: Any, seed: int, n_frames: int, args: argparse.Namespace, path: Any, use_pusher: bool,
                    bar: Any, entry: dict[str, Any], stop: threading.Event) -> None:
    """Render one episode into the bag at ``path``; fills ``entry`` (the dataset.yaml record) as it goes.

    Raises KeyboardInterrupt after the first whole frame written once ``stop`` is set."""
    from vidyn_ros import msgs
    from vidyn_ros.bags import BagWriter
    from vidyn_ros.rig.sim import SimRig

    custom = {"vidyn.scenario": scn.name, "vidyn.seed": str(seed), "vidyn.source": "make-dataset"}
    with SimRig(scn, seed=seed, render_scale=args.scale, masks=not args.no_masks) as rig, \
            BagWriter(path, storage=args.storage, overwrite=args.overwrite, custom_data=custom,
                      compression=args.compress) as bag:
        bag.write_calibration({c.name: c.T_world_cam for c in rig.cameras})
        policy = None
        if use_pusher:
            p = scn.pusher
            policy = SmoothRandomPusher(seed, p.max_speed, p.workspace)
        dt_s = 1.0 / rig.fps
        entry["cameras"] = [c.name for c in rig.cameras]
        entry["image_size"] = [rig.cameras[0].width, rig.cameras[0].height] if rig.cameras else []
        rf = rig.observe()
        # id -> [x, y, z, qw, qx, qy, qz]: lets a user check what the seed randomised without opening the bag
        entry["initial_object_poses"] = {int(o.object_id): [round(float(v), 6) for v in (*o.position, *o.quat_wxyz)]
                                         for o in rf.object_poses}
        for k in range(n_frames):
            bag.write_rig_frame(rf)
            entry["frames"] = k + 1
            bar.update(1)
            if stop.is_set():
                raise KeyboardInterrupt("interrupted")
            if k == n_frames - 1:
                break
            stamp = rf.frame.stamp_ns
            if policy is not None:
                poses = {o.object_id: o.position for o in rf.object_poses}
                pusher_xy = poses[rig.pusher_id][:2]
                obj_xy = np.array([poses[i][:2] for i in rig.object_ids if i != rig.pusher_id])
                v = policy(rig.time_s, dt_s, pusher_xy, obj_xy)
                rig.set_pusher_velocity(v)
                # The command recorded at frame k is the one applied from frame k to k+1 (after the rig's clamping).
                bag.write(msgs.CMD_TOPIC, msgs.TWIST_STAMPED,
                          msgs.twist_stamped_msg(rig.pusher_velocity, (0.0, 0.0, 0.0), stamp, "world"), stamp)
            rf = rig.step()
