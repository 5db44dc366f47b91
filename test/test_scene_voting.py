"""Object-id voting: the paper's rule on synthetic contributions, and through the renderer on a synthetic scene."""

import numpy as np
import torch

from vidyn_ros.scene.voting import vote_from_contributions, vote_object_ids
from vidyn_ros.types import CameraModel, GaussianSet


def test_argmax_per_view_then_majority():
    # 3 views, masks for ids (0=background, 1, 2), 4 Gaussians
    gamma = torch.zeros(3, 3, 4)
    # Gaussian 0: object 1 in all views
    gamma[:, 1, 0] = 0.8
    # Gaussian 1: object 2 in two views, object 1 (stronger) in one view -> majority 2
    gamma[0, 2, 1], gamma[1, 2, 1], gamma[2, 1, 1] = 0.3, 0.3, 0.99
    # Gaussian 2: background in two views, object 1 in one -> 0
    gamma[0, 0, 2], gamma[1, 0, 2], gamma[2, 1, 2] = 0.5, 0.5, 0.9
    # Gaussian 3: invisible everywhere -> fallback
    ids = vote_from_contributions(gamma, torch.tensor([0, 1, 2]), fallback=torch.tensor([5, 5, 5, 7]))
    assert ids.tolist() == [1, 2, 0, 7]


def test_abstaining_views_do_not_vote():
    gamma = torch.zeros(4, 2, 1)
    gamma[0, 1, 0] = 0.2  # one view sees it in mask id 3
    gamma[1:, 0, 0] = 1e-5  # three views barely touch the background: below min_contribution, they abstain
    ids = vote_from_contributions(gamma, torch.tensor([0, 3]), min_contribution=1e-3)
    assert ids.tolist() == [3]


def test_tie_goes_to_stronger_contribution():
    gamma = torch.zeros(2, 2, 1)
    gamma[0, 0, 0] = 0.1
    gamma[1, 1, 0] = 0.7
    assert vote_from_contributions(gamma, torch.tensor([0, 4])).tolist() == [4]


def test_large_ids_and_prior_votes():
    """Ids are whatever the masks carry (a segmenter's 16-bit or growing track ids): no table of size max id."""
    gamma = torch.zeros(3, 2, 2)
    gamma[:, 1, 0] = 0.9  # Gaussian 0: id 2**40 in all three views
    gamma[0, 0, 1], gamma[1, 1, 1] = 0.5, 0.5  # Gaussian 1: one vote each for 0 and 2**40 ...
    big = 2**40
    assert vote_from_contributions(gamma, torch.tensor([0, big])).tolist() == [big, 0]  # ... tie: equal Γ, first id
    # ... and a prior vote for an id no mask has decides it
    prior = torch.tensor([7, 123456])
    assert vote_from_contributions(gamma, torch.tensor([0, big]), prior=prior, prior_weight=1.0).tolist() == [big, 0]
    assert vote_from_contributions(gamma, torch.tensor([0, big]), prior=prior, prior_weight=2.0).tolist() == [big,
                                                                                                              123456]


def test_vote_through_the_renderer():
    """Camera at the origin looking along +z, 31x21 px, f = 100: mask id 2 on the left half, 5 on the right, background
    (0) in the bottom rows. A left, B right, D low (background); C projects onto A's centre pixel, 0.5 m behind the
    nearly opaque and twice as wide A."""
    W, H, f = 31, 21, 100.0
    cam = CameraModel("c", W, H, np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]]), np.eye(4))
    means = torch.tensor([[-0.06, -0.02, 1.0], [0.06, -0.02, 1.0], [-0.09, -0.03, 1.5], [0.0, 0.07, 1.0]])
    op = torch.tensor([0.995, 0.9, 0.9, 0.9])
    g = GaussianSet(means=means, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(4, 1),
                    log_scales=torch.tensor([0.02, 0.01, 0.01, 0.01]).log()[:, None].repeat(1, 3),
                    colors=torch.rand(4, 3, generator=torch.Generator().manual_seed(0)),
                    opacity_logits=torch.log(op / (1 - op)), object_ids=torch.full((4,), 9))
    masks = torch.zeros(1, H, W, dtype=torch.long)
    masks[0, :15, :15] = 2
    masks[0, :15, 16:] = 5
    # the paper's rule (every view votes): C is behind A in mask 2, so it gets A's object
    assert vote_object_ids(g, [cam], masks, min_contribution=1e-3).tolist() == [2, 5, 2, 0]
    # with the scene's threshold C (Γ ~ 0.05: A leaves little transmittance over C's footprint) abstains, keeps its id
    assert vote_object_ids(g, [cam], masks, min_contribution=0.2).tolist() == [2, 5, 9, 0]


def test_voxel_labels_by_majority_with_large_ids():
    """Fusion keeps a voxel's majority mask id, whatever its size."""
    from vidyn_ros.scene.init import FusedCloud, voxel_downsample

    pts = np.array([[0.001, 0.001, 0.001], [0.002, 0.002, 0.002], [0.003, 0.001, 0.002], [0.021, 0.001, 0.001]])
    labels = np.array([2**40, 2**40, 3, 40000])  # a table over 0..max id would not fit in memory
    cloud = FusedCloud(pts, np.zeros((4, 3), np.float32), labels, np.zeros(4, np.int64))
    out = voxel_downsample(cloud, 0.01)
    order = np.argsort(out.points[:, 0])
    assert out.labels[order].tolist() == [2**40, 40000]
