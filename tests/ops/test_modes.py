import torch

from pyro_stein.ops.modes import ascend


def _counted_gaussian(calls):
    def gaussian(z):
        calls.append(len(z))
        z = z.detach().requires_grad_(True)
        log_p = -z.pow(2).sum(-1) / 2
        (score,) = torch.autograd.grad(log_p.sum(), z)
        return log_p.detach(), score, torch.ones(len(z), dtype=torch.bool)

    return gaussian


def test_searches_that_all_settle_stop_early_at_the_mode():
    calls = []
    start = 3.0 * torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    ends = ascend(_counted_gaussian(calls), start, num_steps=300)
    assert bool(ends.converged.all())
    assert float(ends.points.abs().max()) < 0.05
    # One evaluation at the start, one per step; far fewer steps than the budget.
    assert len(calls) - 1 < 100


def test_a_search_that_cannot_settle_runs_the_whole_budget():
    calls = []

    def unbounded(z):  # grows without bound: no search ever settles
        calls.append(len(z))
        return z.sum(-1), torch.ones_like(z), torch.ones(len(z), dtype=torch.bool)

    ends = ascend(unbounded, torch.zeros(3, 2), num_steps=50)
    assert len(calls) == 51 and not bool(ends.converged.any())
