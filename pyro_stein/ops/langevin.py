"""The discretized Langevin flow, vectorized over particles.

Pure tensor math; the log density is a callable, so no Pyro here.  The flow is the one of
Chen et al. (2018),

    dz = 1/2 grad log p(z) dt + dW,

discretized by Euler-Maruyama with step ``h`` (the unadjusted Langevin algorithm, ULA):

    z' = z + h/2 grad log p(z) + sqrt(h) xi,    xi ~ N(0, I),

whose K-step marginal approaches the flow's time-``hK`` marginal as ``h -> 0`` and whose
stationary law differs from ``p`` by O(h).  The Metropolis-adjusted variant (MALA)
accepts ``z'`` with probability ``min(1, p(z') q(z | z') / (p(z) q(z' | z)))``, where
``q(b | a) = N(b; a + h/2 grad log p(a), h I)``; it leaves ``p`` exactly invariant for any
``h``.  Both run on every particle at once, each with its own accept decision.

A particle where the log density or its gradient is not finite cannot move: a proposal
there is rejected (under ULA too), and a chain that starts there stays put and is
reported invalid.

References:
    C. Chen, C. Li, L. Chen, W. Wang, Y. Pu and L. Carin. "Continuous-Time Flows for
    Efficient Inference and Density Estimation." ICML 2018.
    G. O. Roberts and R. L. Tweedie. "Exponential convergence of Langevin distributions and
    their discrete approximations." Bernoulli 2(4), 1996 (ULA and MALA).
    N. Brosse, A. Durmus, E. Moulines and S. Sabanis. "The tamed unadjusted Langevin
    algorithm." Stochastic Processes and their Applications 129(10), 2019.
    G. O. Roberts and J. S. Rosenthal. "Optimal scaling of discrete approximations to
    Langevin diffusions." JRSS B 60(1), 1998 (acceptance rate 0.574).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["LangevinRun", "langevin_flow", "langevin_proposal", "mala_log_acceptance"]

#: ``(N, D) -> (log_p (N,), score (N, D), valid (N,))``.
LogProbAndScore = Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]


class LangevinRun(NamedTuple):
    """The end of a K-step flow.

    Attributes:
        particles: ``(N, D)`` after the last step.
        log_p, score: the log density and its gradient there.
        valid: ``(N,)``: the log density and score are finite at ``particles``.
        acceptance: the Metropolis acceptance probability ``min(1, alpha)`` averaged over
            steps and valid particles; under ULA it is computed but not applied, and
            measures how far one step is from leaving ``p`` invariant.
        moved: the fraction of particle-steps that moved.
        path: ``(K, N, D)``, the particles after each step (with ``keep_path``), else ``None``.
        path_valid: ``(K, N)``, their validity, else ``None``.
        invalid_proposals: the fraction of proposals, over steps and all particles, from
            particles that started valid, where the log density or its gradient was not
            finite (a hard wall, or arithmetic overflow).
    """

    particles: Tensor
    log_p: Tensor
    score: Tensor
    valid: Tensor
    acceptance: Tensor
    moved: Tensor
    path: Tensor | None = None
    path_valid: Tensor | None = None
    invalid_proposals: Tensor | None = None


def langevin_proposal(z: Tensor, score: Tensor, step_size: float | Tensor, noise: Tensor, *, tamed: bool = False) -> Tensor:
    """One Euler-Maruyama step of ``dz = 1/2 grad log p dt + dW``: ``z + h/2 s + sqrt(h) xi``.

    With ``tamed``, the drift ``h/2 s`` is divided by ``1 + |h/2 s|`` (Brosse et al., 2019):
    unchanged where the step is small, bounded by 1 where the score is huge, so a particle
    far in a tail with a superlinear score is not thrown further out.
    """
    drift = 0.5 * step_size * score
    if tamed:
        drift = drift / (1.0 + drift.norm(dim=-1, keepdim=True))
    return z + drift + math.sqrt(float(step_size)) * noise


def _log_transition(to: Tensor, start: Tensor, start_score: Tensor, step_size: float | Tensor) -> Tensor:
    """``log q(to | start)`` up to a constant that cancels in the acceptance ratio."""
    mean = start + 0.5 * step_size * start_score
    return -(to - mean).pow(2).sum(-1) / (2.0 * step_size)


def mala_log_acceptance(
    z: Tensor,
    log_p: Tensor,
    score: Tensor,
    proposal: Tensor,
    proposal_log_p: Tensor,
    proposal_score: Tensor,
    step_size: float | Tensor,
) -> Tensor:
    """``log alpha`` of the Metropolis-adjusted Langevin step from ``z`` to ``proposal``,
    ``(N,)``; ``-inf`` where the proposal's log density or score is not finite.

    Example:
        >>> import torch
        >>> z, s = torch.zeros(1, 2), torch.zeros(1, 2)          # at the mode of N(0, I)
        >>> y = torch.ones(1, 2)
        >>> a = mala_log_acceptance(z, torch.zeros(1), s, y, -y.pow(2).sum(-1) / 2, -y, 0.5)
        >>> bool(a < 0)
        True
    """
    log_alpha = (
        proposal_log_p
        - log_p
        + _log_transition(z, proposal, proposal_score, step_size)
        - _log_transition(proposal, z, score, step_size)
    )
    finite = torch.isfinite(proposal_log_p) & torch.isfinite(proposal_score).all(-1)
    return torch.where(finite, log_alpha, torch.full_like(log_alpha, -math.inf))


def langevin_flow(
    log_prob_and_score: LogProbAndScore,
    start: Tensor,
    num_steps: int,
    step_size: float | Tensor,
    *,
    metropolis: bool = True,
    initial: tuple[Tensor, Tensor, Tensor] | None = None,
    generator: torch.Generator | None = None,
    keep_path: bool = False,
    tamed: bool = False,
) -> LangevinRun:
    """Run ``num_steps`` Langevin steps from every row of ``start`` at once.

    Args:
        log_prob_and_score: ``z (N, D) -> (log_p (N,), score (N, D), valid (N,))``.
        start: ``(N, D)`` starting points (not differentiated through).
        num_steps: ``K >= 1``.
        step_size: ``h > 0``.
        metropolis: accept or reject each step (MALA); ``False`` gives ULA, which moves
            every particle whose proposal has a finite log density.
        initial: ``(log_p, score, valid)`` at ``start`` if already known.
        generator: the source of the noise (default: torch's global generator).
        keep_path: also return every step's particles (the sample path).
        tamed: tame the unadjusted flow's drift (see `langevin_proposal()`); only
            without ``metropolis``, whose acceptance ratio assumes the plain proposal.

    Returns:
        A `LangevinRun`; it costs ``num_steps`` evaluations of
        ``log_prob_and_score`` (plus one at ``start`` without ``initial``).

    Example:
        >>> import torch
        >>> def gaussian(z):
        ...     return -z.pow(2).sum(-1) / 2, -z, torch.ones(len(z), dtype=torch.bool)
        >>> run = langevin_flow(gaussian, 5.0 + torch.zeros(4000, 1), 200, 0.2)
        >>> abs(run.particles.mean().item()) < 0.1 and abs(run.particles.std().item() - 1) < 0.1
        True
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps!r}")
    if tamed and metropolis:
        raise ValueError("tamed=True is for the unadjusted flow (metropolis=False)")
    if not float(step_size) > 0:
        raise ValueError(f"step_size must be positive, got {float(step_size)!r}")
    z = start.detach()
    log_p, score, valid = initial if initial is not None else log_prob_and_score(z)
    log_p, score = log_p.detach(), score.detach()
    started_valid = valid
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    acceptance_sum, moved_sum, invalid_sum = zero, zero, zero
    path, path_valid = [], []
    for _ in range(num_steps):
        noise = torch.randn(z.shape, dtype=z.dtype, device=z.device, generator=generator)
        safe_score = torch.where(valid.unsqueeze(-1), score, torch.zeros_like(score))
        proposal = langevin_proposal(z, safe_score, step_size, noise, tamed=tamed)
        new_log_p, new_score, new_valid = log_prob_and_score(proposal)
        new_log_p, new_score = new_log_p.detach(), new_score.detach()
        new_valid = new_valid & torch.isfinite(new_log_p) & torch.isfinite(new_score).all(-1)
        log_alpha = mala_log_acceptance(z, log_p, safe_score, proposal, new_log_p, new_score, step_size)
        # An invalid proposal, or a ratio of infinities (NaN), is a rejection.
        log_alpha = torch.where(new_valid & ~torch.isnan(log_alpha), log_alpha, torch.full_like(log_alpha, -math.inf))
        acceptance = log_alpha.clamp(max=0.0).exp()
        if metropolis:
            uniform = torch.rand(log_alpha.shape, dtype=z.dtype, device=z.device, generator=generator)
            accept = uniform < acceptance
        else:
            accept = new_valid.clone()
        accept &= started_valid  # a chain that starts where p is undefined cannot move
        z = torch.where(accept.unsqueeze(-1), proposal, z)
        log_p = torch.where(accept, new_log_p, log_p)
        score = torch.where(accept.unsqueeze(-1), new_score, score)
        valid = torch.where(accept, new_valid, valid)
        weight = started_valid.to(z.dtype)
        acceptance_sum = acceptance_sum + (acceptance * weight).sum() / weight.sum().clamp_min(1.0)
        moved_sum = moved_sum + accept.to(z.dtype).mean()
        invalid_sum = invalid_sum + (~new_valid & started_valid).to(z.dtype).mean()
        if keep_path:
            path.append(z)
            path_valid.append(valid)
    return LangevinRun(
        z,
        log_p,
        score,
        valid,
        acceptance_sum / num_steps,
        moved_sum / num_steps,
        torch.stack(path) if keep_path else None,
        torch.stack(path_valid) if keep_path else None,
        invalid_sum / num_steps,
    )
