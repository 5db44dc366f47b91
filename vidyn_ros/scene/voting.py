"""Object ids for Gaussians by cross-view voting (the paper's rule).

Contribution of Gaussian i to pixel u of view c: γ_c^(i)(u) = α_c^(i)(u) Π_{j in front of i} (1 − α_c^(j)(u)).
Per mask m of view c: Γ_{c,m}^(i) = max_{u in mask(c,m)} γ_c^(i)(u). View c votes ID_c^(i) = argmax_m Γ_{c,m}^(i);
the id is the majority over the views.

Deviations from the paper (measured in docs/scene.md, "Deviations from the paper's vote"):
- the table/background region is one more mask (id 0), so a table Gaussian wins the background vote instead of being
  assigned to whichever object it bleeds into;
- a view in which the Gaussian's best Γ is below ``min_contribution`` abstains, and a Gaussian no view votes for keeps
  ``fallback`` (the scene passes the mask id of the pixels it was fused from). With 1e-3 this is the paper's rule; the
  scene's default 0.05 (``SceneConfig.vote_min_contribution``) only lets views abstain whose contribution is
  negligible (silhouette tails over background edge pixels), so most Gaussians are still decided by the vote.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vidyn_ros.types import CameraModel, GaussianSet


def vote_from_contributions(
    contribution: torch.Tensor,
    mask_ids: torch.Tensor,
    min_contribution: float = 1e-3,
    fallback: torch.Tensor | None = None,
    prior: torch.Tensor | None = None,
    prior_weight: float = 0.0,
) -> torch.Tensor:
    """Majority vote over views of the per-view argmax over masks.

    Args:
        contribution: [C, M, N] Γ per view, mask and Gaussian.
        mask_ids: [M] the object id each mask row stands for (0 allowed: the background mask).
        min_contribution: a view whose best Γ is below this abstains for that Gaussian.
        fallback: [N] ids for Gaussians no view voted for (default 0 = background).
        prior: [N] ids that cast ``prior_weight`` extra votes (e.g. the mask label of the pixel a Gaussian was
            initialised from); 0 weight = the paper's rule.
    Returns:
        [N] int64 object ids.
    """
    _, M, N = contribution.shape
    device = contribution.device
    if M == 0 or N == 0:
        return fallback.clone() if fallback is not None else torch.zeros(N, dtype=torch.long, device=device)
    best, arg = contribution.max(dim=1)  # [C, N]
    valid = best >= min_contribution
    # vote over the ids that occur, not over 0..max id: a segmenter's ids may be large (16-bit, growing track ids)
    use_prior = prior is not None and prior_weight > 0
    all_ids = mask_ids.to(device).long()
    if use_prior:
        all_ids = torch.cat([all_ids, prior.to(device).long()])
    uniq, compact = torch.unique(all_ids, return_inverse=True)
    votes_id = compact[:M][arg]  # [C, N] index into uniq
    counts = torch.zeros(N, len(uniq), device=device, dtype=contribution.dtype)
    counts.scatter_add_(1, votes_id.T, valid.T.to(contribution.dtype))
    if use_prior:
        counts.scatter_add_(1, compact[M:, None],
                            torch.full((N, 1), prior_weight, device=device, dtype=contribution.dtype))
    # ties between ids (e.g. 1 view each) go to the larger summed contribution, not to the smaller id
    strength = torch.zeros_like(counts)
    strength.scatter_add_(1, votes_id.T, (best * valid).T)
    score = counts + 1e-3 * strength / strength.sum(dim=1, keepdim=True).clamp_min(1e-12)
    ids = uniq[score.argmax(dim=1)]
    none = counts.sum(dim=1) == 0
    if bool(none.any()):
        fb = fallback.to(device).long() if fallback is not None else torch.zeros(N, dtype=torch.long, device=device)
        ids = torch.where(none, fb, ids)
    return ids


@torch.no_grad()
def vote_object_ids(
    gaussians: GaussianSet,
    cameras: Sequence[CameraModel],
    masks: torch.Tensor,
    *,
    min_contribution: float = 1e-3,
    backend: str = "auto",
    fallback: torch.Tensor | None = None,
    prior_weight: float = 0.0,
) -> torch.Tensor:
    """Object id per Gaussian by rendering the contributions Γ against instance masks and voting.

    Args:
        gaussians: N Gaussians.
        cameras: C cameras; the masks must be at each camera's resolution.
        masks: [C, H, W] int instance ids (0 = background).
        fallback: [N] ids for Gaussians that no view sees (default: their current ids).
        prior_weight: extra votes for each Gaussian's current id (see ``vote_from_contributions``).
    Returns:
        [N] int64 ids.
    """
    from vidyn_ros.render import render

    # shift by one so that the background is a mask of its own (the renderer only reports ids > 0)
    out = render(gaussians, cameras, masks=masks.long() + 1, backend=backend)
    if out.mask_contribution is None or out.mask_ids is None:
        raise RuntimeError("renderer returned no mask_contribution although masks were given")
    fb = gaussians.object_ids if fallback is None else fallback
    return vote_from_contributions(out.mask_contribution, out.mask_ids - 1, min_contribution, fallback=fb,
                                   prior=gaussians.object_ids, prior_weight=prior_weight)
