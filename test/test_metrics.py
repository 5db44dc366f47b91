"""Geometry vs simulator truth (vidyn_ros.metrics): surface samples, Chamfer distance, δ, truth ids."""

import numpy as np
import pytest

from vidyn_ros.metrics import (
    chamfer_distance,
    contact_band,
    delta_within,
    object_surface_points,
    sample_surface,
    surface_area,
    true_object_ids,
)
from vidyn_ros.rig.scenario import shape_sdf
from vidyn_ros.types import ObjectPose

SHAPES = [("box", [0.05, 0.02, 0.01]), ("sphere", [0.03]), ("cylinder", [0.02, 0.04]), ("capsule", [0.01, 0.03])]


@pytest.mark.parametrize(("shape", "size"), SHAPES)
def test_samples_lie_on_the_surface_uniformly_by_area(shape, size):
    pts = sample_surface(shape, size, 20000, seed=1)
    assert np.abs(shape_sdf(pts, shape, size)).max() < 1e-9
    # uniform by area: the share of points on the +x half equals the share of area there (symmetry), and points
    # above z > 0 are half of all
    assert abs((pts[:, 2] > 0).mean() - 0.5) < 0.02 and abs((pts[:, 0] > 0).mean() - 0.5) < 0.02
    np.testing.assert_array_equal(pts, sample_surface(shape, size, 20000, seed=1))  # seeded


def test_box_faces_get_points_in_proportion_to_their_area():
    size = np.array([0.05, 0.02, 0.01])
    pts = sample_surface("box", size, 40000, seed=0)
    on_z_faces = np.isclose(np.abs(pts[:, 2]), size[2]).mean()
    assert on_z_faces == pytest.approx(8 * size[0] * size[1] / surface_area("box", size), abs=0.01)


def test_chamfer_and_delta():
    sphere = sample_surface("sphere", [0.05], 4000, seed=0)
    cd = chamfer_distance(sphere, sphere)
    assert cd.distance == 0.0 and cd.accuracy == 0.0 and cd.completeness == 0.0
    shifted = chamfer_distance(sphere + np.array([0.01, 0.0, 0.0]), sphere)
    assert 0.003 < shifted.distance < 0.01  # a 1 cm shift of a 5 cm sphere: nearest points are closer than 1 cm
    half = sphere[sphere[:, 2] > 0]  # only the top half predicted: accurate, but incomplete
    cd = chamfer_distance(half, sphere)
    assert cd.accuracy < 0.002 < 0.01 < cd.completeness
    assert cd.distance == pytest.approx((cd.accuracy + cd.completeness) / 2)
    assert np.isnan(chamfer_distance(np.zeros((0, 3)), sphere).distance)
    d = delta_within(np.array([[0.0, 0.0, 0.06], [0.0, 0.0, 0.08], [0.0, 0.0, 0.2]]), sphere, (0.015, 0.05))
    assert d[0.015] == pytest.approx(1 / 3) and d[0.05] == pytest.approx(2 / 3)


def test_true_ids_are_the_nearest_true_surface_and_surface_points_follow_the_pose():
    q = np.array([np.cos(np.pi / 8), 0.0, 0.0, np.sin(np.pi / 8)])  # 45 degrees about z
    shapes = {1: ("box", np.array([0.05, 0.02, 0.02])), 2: ("sphere", np.array([0.03]))}
    poses = [ObjectPose(1, np.array([0.0, 0.0, 0.02]), q),
             ObjectPose(2, np.array([0.2, 0.0, 0.03]), np.array([1.0, 0, 0, 0]))]
    surf = object_surface_points(shapes, poses, 3000, min_height=0.002)
    assert set(surf) == {1, 2} and all(p[:, 2].min() >= 0.002 for p in surf.values())  # bottom faces dropped
    assert np.abs(true_object_ids(surf[1], shapes, poses) - 1).max() == 0
    assert np.abs(true_object_ids(surf[2], shapes, poses) - 2).max() == 0
    probes = np.array([
        [0.0, 0.0, 0.045],     # 5 mm above the box's top face: the box
        [0.3, 0.3, 0.001],     # on the table, far from everything: 0
        [0.2, 0.0, 0.07],      # 1 cm above the sphere: the sphere
        [0.0, 0.0, 0.5],       # in the air, 0.46 m from the box: background
        [0.22, 0.0, 0.001],    # on the table beside the sphere's contact, nearer the table plane than the sphere: 0
        [0.2, 0.0, 0.004],     # inside the sphere 4 mm above its contact point: the table is covered there
        [0.0, 0.0, 0.001],     # on the box's contact face, 1 mm inside its solid (ties with the table plane): the box
        [0.0, 0.0, -0.002],    # 2 mm under the box's contact face: the box, not the table it covers
        [-0.0177, 0.0177, 0.001],  # on the table 5 mm beside the box's long side: 0
    ])  # fmt: skip
    assert true_object_ids(probes, shapes, poses).tolist() == [1, 0, 2, 0, 0, 2, 1, 1, 0]
    # the box's samples rotate with its pose (45 degrees): its x extent shrinks from 5 cm to (5 + 2) / sqrt(2) cm
    assert surf[1][:, 0].max() == pytest.approx(0.07 / np.sqrt(2), abs=0.002)


def test_a_contact_face_is_the_objects_and_the_tables():
    """A cube lying on the table: Gaussians on its contact face belong to it (true_object_ids), and a table Gaussian
    it slid over is right too (contact_band); beside the cube the table alone is right, above it the cube alone."""
    import torch

    from vidyn_ros.scene.metrics import IdAssociation, truth_metrics
    from vidyn_ros.types import GaussianSet

    shapes = {1: ("box", np.array([0.025, 0.025, 0.025]))}
    poses = [ObjectPose(1, np.array([0.0, 0.0, 0.025]), np.array([1.0, 0, 0, 0]))]
    pts = np.array([
        [0.0, 0.01, 0.004],   # the cube's contact face, 4 mm inside (cube id: right; table id: right)
        [0.01, 0.0, 0.001],   # a table Gaussian under the cube (table id: right)
        [0.04, 0.0, 0.001],   # the table 15 mm beside the cube (cube id: wrong)
        [0.0, 0.0, 0.049],    # the cube's top face (table id: wrong)
    ])  # fmt: skip
    assert true_object_ids(pts, shapes, poses).tolist() == [1, 1, 0, 1]
    assert contact_band(pts, shapes, poses).tolist() == [True, True, False, False]
    n = len(pts)
    g = GaussianSet(torch.as_tensor(pts, dtype=torch.float32), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                    torch.full((n, 3), -5.0), torch.full((n, 3), 0.5), torch.zeros(n),
                    torch.tensor([1, 0, 1, 0]))
    s = truth_metrics(g, shapes, poses, IdAssociation(oracle=True), n_surface=200)
    assert s["id_accuracy"] == pytest.approx(2 / 4)  # contact face (cube id), under the cube (table id)
    g.object_ids = torch.tensor([0, 1, 0, 1])
    s = truth_metrics(g, shapes, poses, IdAssociation(oracle=True), n_surface=200)
    assert s["id_accuracy"] == pytest.approx(1.0)
