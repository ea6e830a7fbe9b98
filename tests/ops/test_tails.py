import math

import torch

from pyro_stein.ops.tails import tail_stretch, tail_stretch_log_derivative


def test_the_stretch_is_the_identity_at_zero_weight_and_increasing_otherwise():
    u = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    assert torch.equal(tail_stretch(u, torch.zeros(1, dtype=torch.float64)), u)
    stretched = tail_stretch(u, torch.tensor([1.5], dtype=torch.float64))
    assert (stretched.diff() > 0).all()


def test_the_log_derivative_matches_autograd():
    u = torch.linspace(-4, 4, 81, dtype=torch.float64, requires_grad=True)
    weight = torch.tensor([0.7], dtype=torch.float64)
    (derivative,) = torch.autograd.grad(tail_stretch(u, weight).sum(), u)
    torch.testing.assert_close(tail_stretch_log_derivative(u.detach(), weight), derivative.log())


def test_weight_two_gives_a_cauchy_like_tail_index_one():
    # P(|x| > t) ~ t^(-1): doubling a far threshold halves the exceedance probability
    # (up to the logarithmic factor), computed exactly from the normal tail.
    weight = torch.tensor(2.0, dtype=torch.float64)

    def exceedance(t: float) -> float:
        # invert x = u exp(u^2 / 2) for u by bisection, then P(|u| > u_t)
        low, high = 0.0, 10.0
        for _ in range(200):
            mid = (low + high) / 2
            low, high = (mid, high) if float(tail_stretch(torch.tensor(mid, dtype=torch.float64), weight)) < t else (low, mid)
        return math.erfc(low / math.sqrt(2))

    ratio = exceedance(1e4) / exceedance(2e4)
    assert 1.8 < ratio < 2.2
