"""A physics model built from the live scene: one rigid body per object id, Gaussians riding their bodies.

``build_from_scene(gaussians, pusher_id)`` fits a collision shape to every object's Gaussians
(:func:`~vidyn_ros.physics.shapes.fit_shape`), makes the pusher's object a kinematic body, and records where on its
body each Gaussian sits (:class:`ParticleBinding`). Posing the particles from body states is then a rigid map, so
every simulated state renders through the project's renderer (``ParticleState.to_gaussians`` -> ``render``) and
gradients flow pixels -> Gaussians -> body states -> parameters and actions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from vidyn_ros.geometry import quat_wxyz_to_matrix
from vidyn_ros.geometry_torch import quat_mul, quat_normalize, quat_to_matrix
from vidyn_ros.physics._warp_sim import ShapeSpec
from vidyn_ros.physics.model import Body, PhysicsConfig, PhysicsModel, PhysicsParams
from vidyn_ros.physics.shapes import fit_shape, separate
from vidyn_ros.types import GaussianSet

__all__ = ["STATIC", "ParticleBinding", "build_from_scene", "quat_conj"]

log = logging.getLogger(__name__)

STATIC = -1  # binding.body value of particles that never move (table, background, objects without a body)
PUSHER = -2  # binding.body value of the pusher's particles (moved by the control)


def quat_conj(q: torch.Tensor) -> torch.Tensor:
    return q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype, device=q.device)


@dataclass
class ParticleBinding:
    """Where every particle sits on its body.

    Attributes:
        particle_ids: [N] stable ids (as in the scene).
        body: [N] int64 body index into ``PhysicsModel.bodies``, STATIC (-1) or PUSHER (-2).
        local_position: [N, 3] position in its body's frame (world position for STATIC particles).
        local_quat: [N, 4] rotation relative to its body (q_world = q_body ⊗ q_local; the world rotation for STATIC).
        object_ids: [N] object id per particle.
        pusher_position, pusher_quat: the pusher body's pose when built ([3], [4] wxyz; zeros / identity if none):
            the pusher's particles are stored relative to it.
    """

    particle_ids: torch.Tensor
    body: torch.Tensor
    local_position: torch.Tensor
    local_quat: torch.Tensor
    object_ids: torch.Tensor
    pusher_position: torch.Tensor
    pusher_quat: torch.Tensor

    def pose(
        self,
        body_position: torch.Tensor,
        body_quat: torch.Tensor,
        pusher_position: torch.Tensor | None = None,
        pusher_quat: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """World positions [..., N, 3] and rotations [..., N, 4] of all particles for body poses [..., K, 3] /
        [..., K, 4] and the pusher's [..., 3] / [..., 4] (None: the pusher's particles stay where they were built).
        Differentiable in the poses."""
        batch = body_position.shape[:-2]
        K = body_position.shape[-2]
        dt = body_position.dtype
        ident_p = torch.zeros(*batch, 1, 3, dtype=dt)
        ident_q = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dt).expand(*batch, 1, 4)
        if pusher_position is None:
            pusher_position, pusher_quat = self.pusher_position.to(dt), self.pusher_quat.to(dt)
        pp = pusher_position.to(dt).expand(*batch, 3).unsqueeze(-2)
        pq = (pusher_quat if pusher_quat is not None else self.pusher_quat).to(dt).expand(*batch, 4).unsqueeze(-2)
        all_p = torch.cat([body_position, pp, ident_p], -2)
        all_q = torch.cat([body_quat.to(dt), pq, ident_q], -2)
        idx = torch.where(self.body >= 0, self.body, torch.where(self.body == PUSHER, K, K + 1))
        bp, bq = all_p[..., idx, :], all_q[..., idx, :]
        lp, lq = self.local_position.to(dt), self.local_quat.to(dt)
        p = bp + (quat_to_matrix(bq) @ lp.unsqueeze(-1)).squeeze(-1)
        q = quat_normalize(quat_mul(bq, lq.expand_as(bq)))
        return p, q


def build_from_scene(
    gaussians: GaussianSet,
    pusher_id: int | None = None,
    params: PhysicsParams | None = None,
    config: PhysicsConfig | None = None,
    min_particles: int = 10,
    shapes: dict[int, tuple[str, tuple[float, ...], np.ndarray, np.ndarray]] | None = None,
    separate_overlaps: bool = True,
) -> tuple[PhysicsModel, ParticleBinding]:
    """One rigid body per object id of ``gaussians`` (id 0 = table/background stays static), the pusher kinematic.

    Args:
        gaussians: the scene (e.g. ``SceneEstimator.gaussians`` or ``ParticleState.to_gaussians()``).
        pusher_id: object id of the pusher (``dynamics.pusher_object_id``), or None.
        params: per-body parameters in the order of the bodies (sorted object ids); default from the shapes.
        min_particles: objects with fewer Gaussians stay static (too few to fit a shape), with a warning.
        shapes: optional known shapes per object id (kind, size, centre, wxyz) instead of fitting (an oracle for
            evaluation, e.g. the simulator's true shapes; never the default).
        separate_overlaps: translate the fitted shapes (not the pusher's) out of each other and out of the table
            before the bodies are made (:func:`~vidyn_ros.physics.shapes.separate`; the Gaussians stay where they
            are and ride the moved bodies): penalty contact turns an initial overlap into a launch
            (docs/physics.md).
    Returns:
        (model, binding): the physics model and where each Gaussian sits on its body.
    """
    means = gaussians.means.detach().to("cpu", torch.float64)
    quats = quat_normalize(gaussians.quats.detach().to("cpu", torch.float64))
    oids = gaussians.object_ids.detach().to("cpu")
    n = len(oids)
    body = torch.full((n,), STATIC, dtype=torch.int64)
    local_p = means.clone()
    local_q = quats.clone()
    bodies: list[Body] = []
    pusher: Body | None = None
    fits: list[tuple[int, ShapeSpec, np.ndarray, np.ndarray]] = []
    for oid in sorted(int(k) for k in torch.unique(oids).tolist() if k != 0):
        sel = oids == oid
        pts = means[sel].numpy()
        if len(pts) < min_particles:
            log.warning("object %d has %d Gaussians (< %d): it stays static in the physics model", oid, len(pts),
                        min_particles)
            continue
        if shapes is not None and oid in shapes:
            kind, size, centre, qwxyz = shapes[oid]
            shape, centre, qwxyz = ShapeSpec(kind, tuple(float(s) for s in size)), np.asarray(centre), np.asarray(qwxyz)
        else:
            fit = fit_shape(pts)
            shape, centre, qwxyz = fit.shape, fit.center, fit.quat_wxyz
        fits.append((oid, shape, np.asarray(centre, dtype=np.float64), np.asarray(qwxyz, dtype=np.float64)))
    free = [k for k, f in enumerate(fits) if f[0] != pusher_id]
    if separate_overlaps and free:
        # the shapes move, the Gaussians stay where they were seen (they are bound to the moved body below). Not
        # the pusher: it is where the robot put it, and pressing into a block is how it pushes
        centres, before, after = separate([fits[k][1] for k in free], np.stack([fits[k][2] for k in free]),
                                          np.stack([fits[k][3] for k in free]), np.ones(len(free), dtype=bool))
        if before > 1e-4:
            log.debug("fitted shapes overlapped by up to %.1f mm: separated (%.2f mm left)", before * 1e3, after * 1e3)
        for i, k in enumerate(free):
            fits[k] = (fits[k][0], fits[k][1], centres[i], fits[k][3])
    for oid, shape, centre, qwxyz in fits:
        sel = oids == oid
        b = Body(object_id=oid, shape=shape, position=centre, quat_wxyz=qwxyz, kinematic=oid == pusher_id)
        R = torch.tensor(quat_wxyz_to_matrix(b.quat_wxyz), dtype=torch.float64)
        local_p[sel] = (means[sel] - torch.tensor(b.position)) @ R
        qb = torch.tensor(b.quat_wxyz, dtype=torch.float64)
        local_q[sel] = quat_normalize(quat_mul(quat_conj(qb).expand(int(sel.sum()), 4), quats[sel]))
        if oid == pusher_id:
            pusher = b
            body[sel] = PUSHER
        else:
            body[sel] = len(bodies)
            bodies.append(b)
    if pusher_id is not None and pusher is None:
        log.warning("pusher object %d not found among the scene's objects: no pusher in the physics model", pusher_id)
    model = PhysicsModel(bodies, pusher, params=params, config=config)
    binding = ParticleBinding(particle_ids=gaussians.particle_ids.detach().to("cpu").clone(), body=body,
                              local_position=local_p.float(), local_quat=local_q.float(), object_ids=oids.clone(),
                              pusher_position=torch.tensor(pusher.position if pusher else np.zeros(3),
                                                           dtype=torch.float32),
                              pusher_quat=torch.tensor(pusher.quat_wxyz if pusher else [1.0, 0.0, 0.0, 0.0],
                                                       dtype=torch.float32))
    return model, binding
