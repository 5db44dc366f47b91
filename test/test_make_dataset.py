"""`vidyn make-dataset` and `vidyn info` end to end, as a user runs them (subprocess, real MuJoCo, real bags)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from vidyn_ros import msgs
from vidyn_ros.bags import BagReader
from vidyn_ros.commands.make_dataset import SmoothRandomPusher

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa")}


def vidyn(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "vidyn_ros.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "push_ds"
    proc = vidyn("make-dataset", "push", "--episodes", 2, "--frames", 5, "--scale", 0.25, "--seed", 3, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_dataset_has_two_readable_bags_with_all_topics_and_ground_truth(dataset):
    doc = yaml.safe_load((dataset / "dataset.yaml").read_text())
    assert doc["complete"] is True and doc["scenario"] == "push" and doc["frames_per_episode"] == 5
    assert [e["seed"] for e in doc["episodes"]] == [3, 4]
    assert "make-dataset push" in doc["command"] and "mujoco" in doc["versions"]
    assert (dataset / "scenario.yaml").is_file() and doc["compression"] == "zstd"
    first_poses = []
    for ep in doc["episodes"]:
        with BagReader(dataset / ep["name"]) as r:
            cams = r.camera_names()
            assert cams == ep["cameras"] and len(cams) >= 1
            for cam in cams:
                for topic in (msgs.color_topic(cam), msgs.depth_topic(cam), msgs.info_topic(cam),
                              msgs.sim_mask_topic(cam)):
                    assert r.topics[topic].count == 5, topic
            assert r.topics[msgs.OBJECT_POSES_TOPIC].count == 5
            assert r.topics[msgs.CLOCK_TOPIC].count == 5
            assert r.topics[msgs.CMD_TOPIC].count == 4  # one command per transition
            assert r.calibration() is not None and sorted(r.calibration()) == sorted(cams)
            assert msgs.mask_topic(cam) not in r.topics  # true masks are ground truth, not perception input
            frames = list(r.multiview_frames(masks_from=msgs.sim_mask_topic))
            assert len(frames) == 5
            v = frames[0].views[0]
            assert v.color.shape == (120, 160, 3) and v.depth.shape == (120, 160)
            assert (v.depth > 0).mean() > 0.5  # the table fills most of the view
            assert set(np.unique(v.mask)) - {0}  # some object is visible
            gt = list(r.object_poses())
            assert [s for s, _ in gt] == [f.stamp_ns for f in frames]
            assert len(gt[0][1]) == 4  # three blocks + the pusher (id 4)
            first_poses.append(np.array([p.position for p in gt[0][1]]))
            cmds = [msgs.twist_from_msg(m)[0] for *_, m in r.decoded(msgs.CMD_TOPIC)]
            assert any(np.linalg.norm(c) > 1e-4 for c in cmds)  # the pusher is being driven
            pusher = np.array([ps[-1].position for _, ps in gt])
            assert np.linalg.norm(pusher[-1] - pusher[0]) > 1e-4
    # different seeds -> different initial conditions (the blocks' randomised positions)
    assert np.abs(first_poses[0][:3] - first_poses[1][:3]).max() > 1e-3


def test_compressed_bags_read_with_the_independent_mcap_reader(dataset):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with BagReader(dataset / "episode_0001") as r:
        ours = [(s, bytes(m.data)) for *_, s, m in r.decoded("/vidyn/sim/cam0/mask")]
    with open(dataset / "episode_0001" / "episode_0001.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert {c.compression for c in reader.get_summary().chunk_indexes} == {"zstd"}
        theirs = [(m.log_time, bytes(d.data))
                  for _s, _c, m, d in reader.iter_decoded_messages(topics=["/vidyn/sim/cam0/mask"])]
    assert len(ours) == 5 and ours == theirs


def test_info_lists_topic_counts(dataset):
    proc = vidyn("info", dataset / "episode_0000", timeout=120)
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("/cam0/color/image_raw "))
    assert row.split()[1:] == ["sensor_msgs/msg/Image", "5", "30.00"]
    assert "/vidyn/sim/object_poses" in proc.stdout and "storage:   mcap" in proc.stdout
    js = json.loads(vidyn("info", "--json", dataset / "episode_0001", timeout=120).stdout)
    assert js["topics"]["/vidyn/cmd"]["count"] == 4 and js["topics"]["/vidyn/cmd"]["rate_hz"] == 30.0


def test_bad_input_exits_2_with_one_line(dataset, tmp_path):
    cases = [
        (["make-dataset", "no_such_scenario", "--out", tmp_path / "x"], "no_such_scenario"),
        (["make-dataset", "push", "--frames", 2, "--out", dataset], "already holds episode_0000"),
        (["info", tmp_path / "missing_bag"], "no such bag"),
        (["info", tmp_path], "not a rosbag2 bag"),
    ]
    for args, expected in cases:
        proc = vidyn(*args, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "x").exists()  # a bad scenario creates nothing
    # the refused run did not touch the existing dataset
    assert yaml.safe_load((dataset / "dataset.yaml").read_text())["complete"] is True


def test_sqlite3_storage(tmp_path):
    out = tmp_path / "sq"
    proc = vidyn("make-dataset", "push", "--episodes", 1, "--frames", 2, "--scale", 0.25, "--storage", "sqlite3",
                 "--pusher-policy", "none", "--out", out)
    assert proc.returncode == 0, proc.stderr
    with BagReader(out / "episode_0000") as r:
        assert r.storage == "sqlite3" and r.topics[msgs.OBJECT_POSES_TOPIC].count == 2
        assert msgs.CMD_TOPIC not in r.topics


def test_smooth_random_pusher_is_seeded_smooth_and_bounded():
    def roll(seed):
        pol = SmoothRandomPusher(seed, max_speed=0.3, workspace=(-0.4, -0.4, 0.4, 0.4))
        xy, objs, out = np.array([-0.15, 0.0]), np.array([[0.0, 0.0], [0.1, 0.1]]), []
        for k in range(120):
            v = pol(k / 30, 1 / 30, xy, objs)
            xy = xy + v[:2] / 30
            out.append(v)
        return np.array(out)

    a, b = roll(1), roll(1)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, roll(2))
    assert np.linalg.norm(a, axis=1).max() <= 0.3
    assert np.abs(np.diff(a, axis=0)).max() < 0.1  # no jumps between frames [m/s]
    assert np.linalg.norm(a, axis=1).mean() > 0.05  # and it does move


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_keeps_a_finished_bag_and_the_index(tmp_path, sig):
    import signal
    import time

    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "vidyn_ros.cli", "make-dataset", "push", "--episodes", "3",
                             "--frames", "400", "--scale", "0.25", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        t_end = time.monotonic() + 120
        mcap = out / "episode_0000" / "episode_0000.mcap"
        # wait until a first chunk (1 MiB, ~2 frames at 160x120) is on disk, then press Ctrl-C
        while time.monotonic() < t_end and not (mcap.exists() and mcap.stat().st_size > 2**20):
            time.sleep(0.1)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    with BagReader(out / "episode_0000") as r:
        assert not r.recovered  # closed properly: metadata.yaml written
        n = r.topics["/cam0/color/image_raw"].count
        assert 2 <= n < 400
        # the signal takes effect between frames: the bag ends with a whole frame (every topic of the last stamp)
        counts = {t: i.count for t, i in r.topics.items()}
        assert counts.pop(msgs.CMD_TOPIC) == n - 1  # one command per transition
        assert set(counts.values()) == {n}, counts
    doc = yaml.safe_load((out / "dataset.yaml").read_text())
    assert doc["complete"] is False
    assert doc["episodes"][0]["frames"] == n and doc["episodes"][0]["complete"] is False
