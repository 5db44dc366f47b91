"""Object-id voting: the paper's rule on synthetic contributions, and through the renderer on a synthetic scene."""

import torch

from vidyn_ros.scene.voting import vote_from_contributions


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
