"""Save / load Gaussian scenes as standard 3D Gaussian Splatting PLY files, plus an ``object_id`` property.

Layout (binary little endian, one ``vertex`` element, every property float32 so that viewers which assume an
all-float vertex stride — SuperSplat, antimatter15/splat, gsplat.js — open it):

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  opacity  scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3  object_id
    particle_id

Conventions are those of the original 3DGS code (Kerbl et al. 2023): ``f_dc`` is the degree-0 spherical-harmonic
coefficient, colour = 0.5 + C0 * f_dc with C0 = 0.28209479; ``opacity`` is the pre-sigmoid logit; ``scale_*`` are log
standard deviations; ``rot_*`` is the quaternion (w, x, y, z). ``object_id`` (0..65535, ``types.OBJECT_ID_MAX``) and
``particle_id`` (``GaussianSet.particle_ids``: the same particle across files) are extra properties that viewers
ignore, stored as floats holding integers (exact below 2^24); a scene whose particle ids reach 2^24 (hours of
densification) stores ``particle_id`` as ``uint`` instead, which our reader and header-driven viewers handle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vidyn_ros.errors import OutputError, VidynError
from vidyn_ros.types import GaussianSet

SH_C0 = 0.28209479177387814
PROPERTIES = (
    "x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "object_id", "particle_id",
)  # fmt: skip
FLOAT_EXACT = 1 << 24  # integers below this are exact in float32

_PLY_TYPES = {
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1", "uint8": "u1", "char": "i1",
    "int8": "i1", "ushort": "u2", "uint16": "u2", "short": "i2", "int16": "i2", "uint": "u4", "uint32": "u4",
    "int": "i4", "int32": "i4",
}  # fmt: skip


def save_ply(gaussians: GaussianSet, path: str | Path) -> Path:
    """Write ``gaussians`` (any device) as a binary 3DGS PLY with ``object_id`` and ``particle_id`` properties.
    Returns the path."""
    path = Path(path)
    g = gaussians.detach().to("cpu")
    n = len(g)
    colors = g.colors.float().numpy()
    pids = g.particle_ids.numpy().astype(np.int64)
    pid_type = "float" if n == 0 or int(pids.max()) < FLOAT_EXACT else "uint"
    data = np.zeros((n, len(PROPERTIES) - 1), dtype="<f4")
    data[:, 0:3] = g.means.float().numpy()
    # normals stay 0: 3DGS files carry them but nobody reads them
    data[:, 6:9] = (colors - 0.5) / SH_C0
    data[:, 9] = g.opacity_logits.float().numpy()
    data[:, 10:13] = g.log_scales.float().numpy()
    q = g.quats.float().numpy()
    data[:, 13:17] = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    data[:, 17] = g.object_ids.numpy().astype(np.float32)
    record = np.zeros(n, dtype=[("f", "<f4", (len(PROPERTIES) - 1,)), ("pid", "<f4" if pid_type == "float" else "<u4")])
    record["f"] = data
    record["pid"] = pids
    header = "ply\nformat binary_little_endian 1.0\n"
    header += "comment vidyn_ros Gaussian scene (3DGS layout + object_id, particle_id)\n"
    header += f"element vertex {n}\n" + "".join(f"property float {p}\n" for p in PROPERTIES[:-1])
    header += f"property {pid_type} particle_id\nend_header\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(record.tobytes())
    except OSError as err:
        raise OutputError(f"{path}: cannot write PLY ({err.strerror})") from None
    return path


def read_ply_vertices(path: str | Path) -> dict[str, np.ndarray]:
    """Plain PLY reader (binary little endian or ascii, vertex element only) -> {property name: [N] array}.

    Independent of the writer on purpose: it parses whatever header it finds, so it also reads PLYs from other 3DGS
    tools (with f_rest_* and without object_id).
    """
    path = Path(path)
    if not path.is_file():
        raise VidynError(f"{path}: PLY file not found")
    raw = path.read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply") or end < 0:
        raise VidynError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    fmt, n_vertex, props, element = None, 0, [], None
    for line in lines:
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            element = tok[1]
            if element == "vertex":
                n_vertex = int(tok[2])
            elif int(tok[2]) > 0 and not props:
                raise VidynError(f"{path}: element {element!r} before vertex is not supported")
        elif tok[0] == "property" and element == "vertex":
            if tok[1] == "list" or tok[1] not in _PLY_TYPES:
                raise VidynError(f"{path}: unsupported vertex property type {' '.join(tok[1:])!r}")
            props.append((tok[2], _PLY_TYPES[tok[1]]))
    body = raw[end + len(b"end_header\n") :]
    if fmt == "binary_little_endian":
        dtype = np.dtype([(name, "<" + t) for name, t in props])
        if len(body) < dtype.itemsize * n_vertex:
            raise VidynError(f"{path}: truncated ({len(body)} bytes for {n_vertex} vertices of {dtype.itemsize} bytes)")
        arr = np.frombuffer(body, dtype=dtype, count=n_vertex)
        return {name: arr[name].copy() for name, _ in props}
    if fmt == "ascii":
        table = np.loadtxt(body.decode("ascii").splitlines()[:n_vertex], ndmin=2)
        return {name: table[:, i].astype(t) for i, (name, t) in enumerate(props)}
    raise VidynError(f"{path}: PLY format {fmt!r} not supported (binary_little_endian or ascii)")


def load_ply(path: str | Path, device: str = "cpu") -> GaussianSet:
    """Read a 3DGS PLY (ours or another tool's; missing ``object_id`` -> 0, missing ``particle_id`` -> 0..N-1) into a
    GaussianSet on ``device``."""
    import torch

    v = read_ply_vertices(path)
    missing = [p for p in PROPERTIES[:3] + PROPERTIES[6:17] if p not in v]  # object_id, particle_id optional
    if missing:
        raise VidynError(f"{path}: not a 3DGS PLY, missing vertex properties {missing}")

    def stack(names: list[str]) -> torch.Tensor:
        return torch.from_numpy(np.stack([v[k].astype(np.float32) for k in names], axis=1)).to(device)

    n = len(v["x"])
    ids = v["object_id"].round().astype(np.int64) if "object_id" in v else np.zeros(n, dtype=np.int64)
    return GaussianSet(
        means=stack(["x", "y", "z"]),
        quats=stack([f"rot_{i}" for i in range(4)]),
        log_scales=stack([f"scale_{i}" for i in range(3)]),
        colors=(stack([f"f_dc_{i}" for i in range(3)]) * SH_C0 + 0.5).clamp(0.0, 1.0),
        opacity_logits=torch.from_numpy(v["opacity"].astype(np.float32)).to(device),
        object_ids=torch.from_numpy(ids).to(device),
        particle_ids=torch.from_numpy(np.round(v["particle_id"]).astype(np.int64)).to(device)
        if "particle_id" in v else None,
    )
