"""3DGS PLY save/load: round trip, and the file parses with a plain numpy header reader."""

import numpy as np
import pytest
import torch

from vidyn_ros.errors import VidynError
from vidyn_ros.scene.ply import PROPERTIES, SH_C0, load_ply, read_ply_vertices, save_ply
from vidyn_ros.types import GaussianSet


def _random_set(n: int = 257, seed: int = 0) -> GaussianSet:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g)
    return GaussianSet(
        means=torch.randn(n, 3, generator=g),
        quats=q / q.norm(dim=1, keepdim=True),
        log_scales=torch.rand(n, 3, generator=g) * -5,
        colors=torch.rand(n, 3, generator=g),
        opacity_logits=torch.randn(n, generator=g),
        object_ids=torch.randint(0, 7, (n,), generator=g),
    )


def test_round_trip(tmp_path):
    g = _random_set()
    path = save_ply(g, tmp_path / "scene.ply")
    back = load_ply(path)
    assert len(back) == len(g)
    for f in ("means", "quats", "log_scales", "colors", "opacity_logits"):
        torch.testing.assert_close(getattr(back, f), getattr(g, f), atol=1e-6, rtol=1e-5)
    assert torch.equal(back.object_ids, g.object_ids)
    assert torch.equal(back.particle_ids, g.particle_ids)


def test_particle_ids_survive_exactly_also_beyond_float_precision(tmp_path):
    """Stable particle ids travel in the PLY: as a float property while exact (< 2^24), as uint32 beyond (a scene
    that densified for hours), and the reader gives back the same ids either way."""
    g = _random_set(20)
    g.particle_ids = torch.arange(20, dtype=torch.int64) * 1000 + 7
    assert torch.equal(load_ply(save_ply(g, tmp_path / "a.ply")).particle_ids, g.particle_ids)
    g.particle_ids = torch.arange(20, dtype=torch.int64) + 2**24 - 3  # 2^24 + 1 is not a float32
    path = save_ply(g, tmp_path / "b.ply")
    assert b"property uint particle_id" in path.read_bytes()[:2000]
    assert torch.equal(load_ply(path).particle_ids, g.particle_ids)


def test_plain_numpy_reader_sees_3dgs_layout(tmp_path):
    g = _random_set(50, seed=3)
    path = save_ply(g, tmp_path / "scene.ply")
    raw = path.read_bytes()
    head, body = raw.split(b"end_header\n", 1)
    lines = head.decode().splitlines()
    assert lines[0] == "ply" and lines[1] == "format binary_little_endian 1.0"
    assert "element vertex 50" in lines
    props = [ln.split()[2] for ln in lines if ln.startswith("property")]
    assert props == list(PROPERTIES)
    assert all(ln.split()[1] == "float" for ln in lines if ln.startswith("property"))  # viewers assume all-float
    table = np.frombuffer(body, dtype="<f4").reshape(50, len(props))
    col = {p: table[:, i] for i, p in enumerate(props)}
    np.testing.assert_allclose(col["f_dc_0"] * SH_C0 + 0.5, g.colors[:, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(col["opacity"], g.opacity_logits.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.exp(col["scale_2"]), g.scales[:, 2].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(col["object_id"].astype(int), g.object_ids.numpy())
    assert read_ply_vertices(path)["x"].shape == (50,)


def test_reads_foreign_3dgs_file_without_object_id(tmp_path):
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(45)] + ["opacity", "scale_0", "scale_1", "scale_2"]
    names += ["rot_0", "rot_1", "rot_2", "rot_3"]
    data = np.random.default_rng(0).normal(size=(10, len(names))).astype("<f4")
    head = "ply\nformat binary_little_endian 1.0\nelement vertex 10\n"
    head += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    p = tmp_path / "other.ply"
    p.write_bytes(head.encode() + data.tobytes())
    g = load_ply(p)
    assert len(g) == 10 and int(g.object_ids.abs().sum()) == 0
    np.testing.assert_allclose(g.means[:, 1].numpy(), data[:, 1])


def test_bad_files_raise_one_line_errors(tmp_path):
    with pytest.raises(VidynError, match="not found"):
        load_ply(tmp_path / "missing.ply")
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"hello")
    with pytest.raises(VidynError, match="not a PLY"):
        load_ply(bad)
    g = _random_set(5)
    p = save_ply(g, tmp_path / "t.ply")
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(VidynError, match="truncated"):
        load_ply(p)
