"""vidyn_ros.bags: real rosbag2 bags on disk (MCAP and sqlite3), read back here and by the independent mcap reader."""

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vidyn_ros import msgs
from vidyn_ros.bags import BagReader, BagWriter, bag_summary, format_summary, write_rig_episode
from vidyn_ros.errors import BagError, OutputError
from vidyn_ros.geometry import look_at
from vidyn_ros.types import CameraFrame, CameraModel, MultiViewFrame, ObjectPose, RigFrame

N_FRAMES = 4
DT_NS = 33_333_333
T0_NS = 2_000_000_000


def make_frames(n=N_FRAMES, seed=0):
    rng = np.random.default_rng(seed)
    K = np.array([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]])
    cams = [CameraModel("cam0", 16, 12, K, look_at([0.5, 0, 0.5], [0, 0, 0])),
            CameraModel("cam1", 16, 12, K, look_at([0, 0.5, 0.5], [0, 0, 0]))]
    out = []
    for i in range(n):
        t = T0_NS + i * DT_NS
        views = [CameraFrame(c, t, rng.integers(0, 256, (12, 16, 3), dtype=np.uint8),
                             rng.uniform(0.2, 1.5, (12, 16)).astype(np.float32),
                             rng.integers(0, 3, (12, 16)).astype(np.int32)) for c in cams]
        poses = [ObjectPose(1, np.array([0.01 * i, 0.0, 0.02]), np.array([1.0, 0, 0, 0])),
                 ObjectPose(2, np.array([-0.05, 0.01 * i, 0.02]), np.array([1.0, 0, 0, 0]))]
        out.append(RigFrame(MultiViewFrame(t, views), poses))
    return out


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def episode(request, tmp_path_factory):
    frames = make_frames()
    path = tmp_path_factory.mktemp(request.param) / "ep"
    write_rig_episode(path, frames, storage=request.param)
    return request.param, path, frames


@pytest.fixture(scope="module")
def mcap_episode(tmp_path_factory):
    frames = make_frames()
    path = tmp_path_factory.mktemp("mcap_only") / "ep"
    write_rig_episode(path, frames, storage="mcap")
    return path, frames


def test_roundtrip_keeps_content_and_stamps(episode):
    storage, path, frames = episode
    assert (path / "metadata.yaml").is_file() and (path / "rig_calibration.yaml").is_file()
    with BagReader(path) as r:
        assert r.storage == storage and not r.recovered
        assert r.start_ns == T0_NS and r.end_ns == T0_NS + (N_FRAMES - 1) * DT_NS
        assert r.duration_s == pytest.approx((N_FRAMES - 1) * DT_NS / 1e9)
        assert len(r.topics) == 4 * 2 + 2  # color, depth, info, mask per camera + GT + clock
        for info in r.topics.values():
            assert info.count == N_FRAMES
            assert info.rate_hz == pytest.approx(1e9 / DT_NS, rel=1e-6)
        assert r.topics["/cam1/color/camera_info"].msgtype == msgs.CAMERA_INFO
        # raw bytes are exactly what msgs.serialize produced, in time order
        stamps = [s for _t, _mt, s, _d in r.messages(["/cam0/color/image_raw"])]
        assert stamps == [f.frame.stamp_ns for f in frames]
        calib = r.calibration()
        np.testing.assert_allclose(calib["cam1"], frames[0].frame.views[1].camera.T_world_cam, atol=1e-6)
        assert all(v.mask is None for mv in r.multiview_frames() for v in mv.views)  # true masks are not perception's
        mvs = list(r.multiview_frames(masks_from=msgs.sim_mask_topic))
        assert len(mvs) == N_FRAMES
        for mv, rf in zip(mvs, frames, strict=True):
            assert mv.stamp_ns == rf.frame.stamp_ns and [v.camera.name for v in mv.views] == ["cam0", "cam1"]
            for a, b in zip(rf.frame.views, mv.views, strict=True):
                np.testing.assert_array_equal(a.color, b.color)
                np.testing.assert_array_equal(a.mask, b.mask)
                np.testing.assert_allclose(a.depth, b.depth, atol=0.0005 + 1e-6)
                np.testing.assert_allclose(b.camera.K, a.camera.K)
                np.testing.assert_allclose(b.camera.T_world_cam, a.camera.T_world_cam, atol=1e-6)
        gt = list(r.object_poses())
        assert [s for s, _ in gt] == [f.frame.stamp_ns for f in frames]
        np.testing.assert_allclose(gt[3][1][1].position, [-0.05, 0.03, 0.02])
        clock = [msgs.stamp_to_ns(m.clock) for *_, m in r.decoded("/clock")]
        assert clock == stamps


def test_independent_mcap_reader_sees_identical_bytes_and_stamps(mcap_episode):
    path, frames = mcap_episode
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    (mcap_file,) = path.glob("*.mcap")
    seen = {}
    with open(mcap_file, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, ros in reader.iter_decoded_messages():
            seen.setdefault(channel.topic, []).append((message.log_time, ros))
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
    assert len(seen) == 10
    color = seen["/cam1/color/image_raw"]
    assert [t for t, _ in color] == [f.frame.stamp_ns for f in frames]
    for (t, ros), rf in zip(color, frames, strict=True):
        assert ros.encoding == "rgb8" and (ros.height, ros.width) == (12, 16)
        assert ros.header.stamp.sec * 10**9 + ros.header.stamp.nanosec == t
        assert bytes(ros.data) == rf.frame.views[1].color.tobytes()
    depth = seen["/cam0/aligned_depth_to_color/image_raw"][2][1]
    mm = np.frombuffer(bytes(depth.data), dtype="<u2").reshape(12, 16)
    np.testing.assert_allclose(mm / 1000.0, frames[2].frame.views[0].depth, atol=0.0005 + 1e-6)
    gt = seen[msgs.OBJECT_POSES_TOPIC][1][1]
    assert gt.poses[1].position.y == pytest.approx(0.01)
    info = seen["/cam0/color/camera_info"][0][1]
    assert info.k[0] == 20.0 and info.distortion_model == "plumb_bob"


def test_writer_accepts_bytes_and_messages_and_checks_types(tmp_path):
    with BagWriter(tmp_path / "b") as w:
        w.write("/vidyn/cmd", msgs.TWIST_STAMPED, msgs.twist_stamped_msg([0.1, 0, 0], stamp_ns=5), 5)
        w.write("/vidyn/cmd", msgs.TWIST_STAMPED, msgs.serialize(msgs.twist_stamped_msg([0.2, 0, 0], stamp_ns=6)), 6)
        with pytest.raises(BagError, match="/vidyn/cmd"):
            w.write("/vidyn/cmd", msgs.CLOCK, msgs.clock_msg(7), 7)
        with pytest.raises(BagError, match="no_such_msgs/msg/Foo"):
            w.write("/x", "no_such_msgs/msg/Foo", b"", 7)
    with BagReader(tmp_path / "b") as r:
        lin = [msgs.twist_from_msg(m)[0][0] for *_, m in r.decoded()]
    assert lin == [0.1, 0.2]


def test_an_exception_while_writing_keeps_what_was_written(tmp_path):
    def frames():
        yield from make_frames(2)
        raise RuntimeError("camera unplugged")

    with pytest.raises(RuntimeError):
        write_rig_episode(tmp_path / "b", frames())
    with BagReader(tmp_path / "b") as r:
        assert not r.recovered and r.topics["/cam0/color/image_raw"].count == 2


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys, numpy as np
    from vidyn_ros import msgs
    from vidyn_ros.bags import BagWriter
    w = BagWriter(sys.argv[1])
    img = np.full((12, 16, 3), 7, np.uint8)
    for i in range(5):
        w.write("/cam0/color/image_raw", msgs.IMAGE, msgs.image_msg(img, i, "f"), i)
    w.flush()
    w.write("/cam0/color/image_raw", msgs.IMAGE, msgs.image_msg(img, 5, "f"), 5)  # never flushed
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_sigkilled_mcap_writer_leaves_a_readable_bag(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "k")], capture_output=True, timeout=120)
    assert proc.returncode == -9
    assert not (tmp_path / "k" / "metadata.yaml").exists()
    with BagReader(tmp_path / "k") as r:
        assert r.recovered
        assert r.topics["/cam0/color/image_raw"].count == 5
        data = [msgs.image_to_array(m) for *_, m in r.decoded()]
    assert len(data) == 5 and all(int(d[0, 0, 0]) == 7 for d in data)
    assert "recovered" in format_summary(bag_summary(tmp_path / "k"))


def test_missing_and_non_bag_paths_give_one_line_errors(tmp_path):
    for bad, pattern in [
        (tmp_path / "nope", "no such bag"),
        (tmp_path, "not a rosbag2 bag"),
        (Path(__file__), "not a rosbag2 bag"),
    ]:
        with pytest.raises(BagError, match=pattern) as e:
            BagReader(bad)
        assert "\n" not in str(e.value) and str(bad) in str(e.value)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "junk.mcap").write_bytes(b"not an mcap file at all")
    with pytest.raises(BagError, match="cannot read bag"):
        BagReader(tmp_path / "junk")
    (tmp_path / "junk" / "metadata.yaml").write_text("rosbag2_bagfile_information: [")
    with pytest.raises(BagError, match="cannot read bag"):
        BagReader(tmp_path / "junk")


@pytest.fixture(scope="module")
def chunked_bag(tmp_path_factory):
    """A zstd MCAP bag flushed after every frame (as a recorder does every few seconds): 10 frames, 10 chunks."""
    frames = make_frames(10)
    path = tmp_path_factory.mktemp("chunked") / "ep"
    with BagWriter(path, compression="zstd") as w:
        w.write_calibration({c.name: c.T_world_cam for c in frames[0].frame.cameras})
        for rf in frames:
            w.write_rig_frame(rf)
            w.flush()
    return path, frames


def _cut_in_half(src: Path, dst: Path, keep_metadata: bool) -> Path:
    import shutil

    shutil.copytree(src, dst)
    if not keep_metadata:
        (dst / "metadata.yaml").unlink()
    (f,) = dst.glob("*.mcap")
    os.truncate(f, f.stat().st_size // 2)
    return f


@pytest.mark.parametrize("keep_metadata", [True, False])
def test_truncated_mcap_is_recovered_with_or_without_metadata(chunked_bag, tmp_path, caplog, keep_metadata):
    path, frames = chunked_bag
    _cut_in_half(path, tmp_path / "ep", keep_metadata)
    with BagReader(tmp_path / "ep") as r:
        assert r.recovered
        n = r.message_count
        # every complete chunk before the cut: about half of the 10 frames, whole frames only (one chunk per frame)
        assert 3 * 10 <= n <= 6 * 10 and n % 10 == 0
        assert f"recovered {n} messages" in r.recovered_note
        got = list(r.multiview_frames())
    assert len(got) == n // 10
    for mv, rf in zip(got, frames, strict=False):
        np.testing.assert_array_equal(mv.views[1].color, rf.frame.views[1].color)
    assert f"recovered {n} messages" in caplog.text
    text = format_summary(bag_summary(tmp_path / "ep"))
    assert f"recovered {n} messages" in text and "vidyn reindex" in text


def test_reindex_makes_a_truncated_bag_readable_by_the_mcap_default_reader(chunked_bag, tmp_path):
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    from vidyn_ros.bags import reindex

    path, frames = chunked_bag
    f = _cut_in_half(path, tmp_path / "ep", keep_metadata=True)
    with open(f, "rb") as fh, pytest.raises(McapError):  # the mcap library's default (seeking) reader refuses it
        list(make_reader(fh).iter_messages())
    with BagReader(tmp_path / "ep") as r:
        n = r.message_count
    out = reindex(tmp_path / "ep")
    assert out["messages"] == n and out["recovered"] and out["compression"] == "zstd"
    with open(f, "rb") as fh:
        reader = make_reader(fh)
        summary = reader.get_summary()
        assert summary is not None and summary.statistics.message_count == n
        assert {c.compression for c in summary.chunk_indexes} == {"zstd"}
        stamps = [m.log_time for _s, ch, m in reader.iter_messages() if ch.topic == "/cam0/color/image_raw"]
    assert stamps == [rf.frame.stamp_ns for rf in frames[: n // 10]]
    with BagReader(tmp_path / "ep") as r:  # and ours reads it as a normal, complete bag with its calibration
        assert not r.recovered and r.message_count == n and r.calibration() is not None
    assert reindex(tmp_path / "ep")["messages"] == n  # idempotent on a complete bag


def test_reindex_a_killed_writer_bag_writes_metadata_and_keeps_custom_types(tmp_path):
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from vidyn_ros.bags import reindex

    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "k")], capture_output=True, timeout=120)
    assert proc.returncode == -9 and not (tmp_path / "k" / "metadata.yaml").exists()
    out = reindex(tmp_path / "k")
    assert out["messages"] == 5 and out["metadata"]
    with BagReader(tmp_path / "k") as r:
        assert not r.recovered and r.topics["/cam0/color/image_raw"].count == 5
    # a custom message type keeps its definition through a reindex (another program's type store wrote it)
    from rosbags.rosbag2 import StoragePlugin, Writer

    other = get_typestore(Stores.ROS2_KILTED)
    other.register(get_types_from_msg("float64 push_force\nstring label", "my_rig2/msg/Push"))
    with Writer(tmp_path / "custom", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/push", "my_rig2/msg/Push", typestore=other)
        w.write(c, 7, other.serialize_cdr(other.types["my_rig2/msg/Push"](push_force=2.5, label="a"),
                                          "my_rig2/msg/Push"))
    (tmp_path / "custom" / "metadata.yaml").unlink()
    assert reindex(tmp_path / "custom")["messages"] == 1
    with BagReader(tmp_path / "custom") as r:
        ((_t, mt, stamp, got),) = list(r.decoded())
    assert (mt, stamp, got.push_force, got.label) == ("my_rig2/msg/Push", 7, 2.5, "a")


def test_reindex_of_the_storage_file_of_a_killed_bag_writes_its_metadata_too(tmp_path):
    """`vidyn reindex out/bag/bag.mcap` (the file a shell completes to) repaired the file but left the bag directory
    without metadata.yaml: `vidyn info out/bag` still said 'recovered: no metadata.yaml'. A storage file elsewhere
    (not named after its directory) still gets no metadata.yaml beside it."""
    from vidyn_ros.bags import reindex

    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "k")], capture_output=True, timeout=120)
    assert proc.returncode == -9
    (f,) = (tmp_path / "k").glob("*.mcap")
    out = reindex(f)
    assert out["messages"] == 5 and out["metadata"]
    with BagReader(tmp_path / "k") as r:
        assert not r.recovered and r.topics["/cam0/color/image_raw"].count == 5
    lone = tmp_path / "downloads" / "some_recording.mcap"
    lone.parent.mkdir()
    shutil.copyfile(f, lone)
    assert not reindex(lone)["metadata"] and sorted(p.name for p in lone.parent.iterdir()) == [lone.name]


def test_reindex_errors_are_one_line(tmp_path):
    from vidyn_ros.bags import reindex

    with pytest.raises(BagError, match="no such bag") as e:
        reindex(tmp_path / "nope")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_written_from_several_threads(tmp_path, storage):
    """A recorder node writes from whichever executor thread delivered a message, flushes from a timer thread and
    closes from the main thread: an sqlite3 connection used that way failed ('SQLite objects created in a thread
    can only be used in that same thread')."""
    from concurrent.futures import ThreadPoolExecutor

    w = BagWriter(tmp_path / "b", storage=storage)

    def produce(topic: str) -> None:
        for k in range(20):
            w.write(topic, msgs.CLOCK, msgs.clock_msg(k), k)
            if k % 7 == 0:
                w.flush()

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(produce, ["/a", "/b", "/c"]))
    w.close()
    with BagReader(tmp_path / "b") as r:
        assert {t: i.count for t, i in r.topics.items()} == {"/a": 20, "/b": 20, "/c": 20}


def test_unknown_topic_names_the_topic(episode):
    _, path, _ = episode
    with BagReader(path) as r, pytest.raises(BagError, match="/cam9/color/image_raw") as e:
        list(r.messages(["/cam9/color/image_raw"]))
    assert "/cam0/color/image_raw" in str(e.value)  # and says which topics exist
    with BagReader(path) as r, pytest.raises(BagError, match="/cam7/color/image_raw"):
        list(r.multiview_frames(cameras=["cam7"]))


def test_existing_or_unwritable_output_is_refused_without_losing_data(tmp_path, mcap_episode):
    path, _ = mcap_episode
    before = sorted(p.name for p in path.iterdir())
    with pytest.raises(OutputError, match="already exists"):
        BagWriter(path)
    assert sorted(p.name for p in path.iterdir()) == before
    other = tmp_path / "mywork"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not a bag directory"):
        BagWriter(other, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    with BagWriter(tmp_path / "empty") as w:  # an empty directory is fine
        w.write("/clock", msgs.CLOCK, msgs.clock_msg(1), 1)
    with BagWriter(tmp_path / "empty", overwrite=True) as w:  # and a bag may be replaced on request
        w.write("/clock", msgs.CLOCK, msgs.clock_msg(2), 2)
    with BagReader(tmp_path / "empty") as r:
        assert r.start_ns == 2
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="a_file") as e:  # parent is a file: unwritable even for root
        BagWriter(blocker / "bag")
    assert "\n" not in str(e.value)
    with pytest.raises(OutputError, match="storage"):
        BagWriter(tmp_path / "x", storage="rosbag1")


def test_read_only_parent_directory_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: directory permissions are not enforced (the file-as-parent case covers it)")
        with pytest.raises(OutputError, match=str(ro)) as e:
            BagWriter(ro / "sub" / "bag")
        assert "\n" not in str(e.value)
    finally:
        ro.chmod(0o700)


def test_summary_lists_topics_counts_and_rates(episode):
    _, path, _ = episode
    s = bag_summary(path)
    assert s["topics"]["/vidyn/sim/cam0/mask"] == {"type": "sensor_msgs/msg/Image", "count": N_FRAMES, "rate_hz": 30.0}
    assert s["cameras"] == ["cam0", "cam1"] and s["calibrated_cameras"] == ["cam0", "cam1"]
    text = format_summary(s)
    assert "/vidyn/sim/object_poses" in text and "geometry_msgs/msg/PoseArray" in text and "30.00" in text


def test_reads_foreign_bag_grouping_by_header_stamps(tmp_path):
    """A bag as `ros2 bag record` writes it (rosbag2 v8, sqlite3): log times are arrival times, not header stamps,
    camera_info arrives once, and the two cameras' messages interleave."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    frames = make_frames(3)
    ts = msgs.TYPESTORE
    path = tmp_path / "recorded"
    rng = np.random.default_rng(1)
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as w:
        conns = {}
        items = []
        for k, rf in enumerate(frames):
            for topic, mt, m, stamp in msgs.rig_frame_messages(rf, include_ground_truth=False):
                if topic.endswith("camera_info") and k > 0:
                    continue
                items.append((stamp + int(rng.integers(1_000_000, 9_000_000)), topic, mt, m))
        for arrival, topic, mt, m in sorted(items, key=lambda x: x[0]):
            if topic not in conns:
                conns[topic] = w.add_connection(topic, mt, typestore=ts)
            w.write(conns[topic], arrival, msgs.serialize(m, mt))
    with BagReader(path) as r:
        assert r.storage == "sqlite3" and r.calibration() is None
        got = list(r.multiview_frames())
    assert [mv.stamp_ns for mv in got] == [rf.frame.stamp_ns for rf in frames]
    for mv, rf in zip(got, frames, strict=True):
        for a, b in zip(rf.frame.views, mv.views, strict=True):
            np.testing.assert_array_equal(a.color, b.color)
            assert b.camera.name == a.camera.name and b.camera.width == 16
            np.testing.assert_allclose(b.camera.T_world_cam, np.eye(4))  # no calibration file: identity
    # the storage file on its own reads too
    (db,) = path.glob("*.db3")
    with BagReader(db) as r:
        assert r.topics["/cam0/color/image_raw"].count == 3


def test_cameras_on_realsense_ros_prefixes_take_their_poses_from_the_calibration(tmp_path):
    """A bag of a realsense-ros rig: topics /camera/cam0/color/image_raw ... (namespace + camera name) and a
    rig_calibration.yaml keyed by camera name, as the nodes and /tf_static use it. The frames read back had identity
    poses (the calibration was looked up by the topic prefix only)."""
    frames = make_frames(2)
    poses = {}
    with BagWriter(tmp_path / "rs") as w:
        for rf in frames:
            views = [replace(v, camera=replace(v.camera, name=f"camera/{v.camera.name}")) for v in rf.frame.views]
            poses = {msgs.camera_name(v.camera.name): v.camera.T_world_cam for v in views}
            w.write_many(msgs.rig_frame_messages(MultiViewFrame(rf.frame.stamp_ns, views)))
        w.write_calibration(poses)
    with BagReader(tmp_path / "rs") as r:
        assert r.camera_names() == ["camera/cam0", "camera/cam1"]
        got = list(r.multiview_frames())
    assert len(got) == 2
    for v in got[0].views:
        assert v.camera.name.startswith("camera/")
        np.testing.assert_allclose(v.camera.T_world_cam, poses[msgs.camera_name(v.camera.name)], atol=1e-9)


def test_multiview_skips_incomplete_stamps_and_waits_for_a_late_camera_info(tmp_path, caplog):
    frames = make_frames(3)
    with BagWriter(tmp_path / "b") as w:
        for k, rf in enumerate(frames):
            for topic, mt, m, stamp in msgs.rig_frame_messages(rf, include_ground_truth=False):
                if topic.endswith("camera_info") and k == 0:
                    continue  # frame 0's camera_info is only sent after the frame's images (below)
                if k == 1 and topic == "/cam1/aligned_depth_to_color/image_raw":
                    continue  # frame 1 loses one depth image: that stamp cannot be complete
                w.write(topic, mt, m, stamp)
            if k == 0:
                for topic, mt, m, stamp in msgs.rig_frame_messages(rf, include_ground_truth=False):
                    if topic.endswith("camera_info"):
                        w.write(topic, mt, m, stamp + 1)
    with BagReader(tmp_path / "b") as r:
        got = [mv.stamp_ns for mv in r.multiview_frames()]
        assert got == [frames[0].frame.stamp_ns, frames[2].frame.stamp_ns]
        assert "1 stamps had incomplete camera sets" in caplog.text
        only_cam0 = [mv.stamp_ns for mv in r.multiview_frames(cameras=["cam0"])]
        assert only_cam0 == [rf.frame.stamp_ns for rf in frames]


def test_custom_message_types_decode_from_the_definitions_in_the_bag(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    other = get_typestore(Stores.ROS2_KILTED)  # another program's type store, with a custom message
    other.register(get_types_from_msg("std_msgs/Header header\nfloat32[] forces\nstring label", "my_rig/msg/Wrench2"))
    Wrench2 = other.types["my_rig/msg/Wrench2"]
    msg = Wrench2(header=other.types["std_msgs/msg/Header"](stamp=other.types["builtin_interfaces/msg/Time"](
        sec=3, nanosec=4), frame_id="w"), forces=np.array([1.5, -2.0], np.float32), label="push")
    with Writer(tmp_path / "custom", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/wrench", "my_rig/msg/Wrench2", typestore=other)
        w.write(c, 7, other.serialize_cdr(msg, "my_rig/msg/Wrench2"))
    with BagReader(tmp_path / "custom") as r:
        ((topic, mt, stamp, got),) = list(r.decoded())
    assert (topic, mt, stamp) == ("/wrench", "my_rig/msg/Wrench2", 7)
    assert got.label == "push" and list(got.forces) == [1.5, -2.0] and msgs.stamp_to_ns(got.header) == 3_000_000_004
