import math

import pyro.distributions as dist
import torch

from pyro_stein.ops.tails import (
    HEAVY_TAIL_SLOPE,
    TailFreeCoordinates,
    far_log_density_slope,
    tail_stretch,
    tail_stretch_log_derivative,
    tail_unstretch,
)


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


def test_the_inverse_undoes_the_stretch_to_round_off_across_its_range():
    for weight in (1e-30, 1e-3, 0.0067, 0.5, 2.0, 10.0):
        # up to just below the clamp of the stretch (weight u^2 / 4 = 60)
        largest = (240 / weight) ** 0.5 if weight > 1e-20 else 1e6
        u = torch.cat(
            [torch.zeros(1, dtype=torch.float64), torch.logspace(-30, 0, 300, dtype=torch.float64) * largest]
        )
        u = torch.cat([u, -u])
        tail_weight = torch.full_like(u, weight)
        back = tail_unstretch(tail_stretch(u, tail_weight), tail_weight)
        assert torch.isfinite(back).all()
        assert ((back - u).abs() <= 1e-13 * u.abs().clamp(min=1e-300)).all(), weight
    float32 = torch.linspace(-9, 9, 101)
    weight32 = torch.full_like(float32, 2.0)
    torch.testing.assert_close(
        tail_unstretch(tail_stretch(float32, weight32), weight32), float32, rtol=1e-5, atol=1e-6
    )


def test_a_zero_weight_leaves_the_coordinate_exactly_as_it_is():
    x = torch.randn(50, 3) * 7
    tails = TailFreeCoordinates(torch.randn(3), torch.rand(3) + 0.5, torch.tensor([0.0, 1.3, 0.0]))
    v, log_derivative = tails.from_stretched(x)
    assert torch.equal(v[:, [0, 2]], x[:, [0, 2]])
    assert torch.equal(log_derivative[:, [0, 2]], torch.zeros(50, 2))
    score = torch.randn(50, 3)
    assert torch.equal(tails.pull_back_score(score, v, log_derivative)[:, [0, 2]], score[:, [0, 2]])


def test_the_map_round_trips_and_its_log_jacobian_and_pulled_back_score_match_autograd():
    torch.manual_seed(0)
    dtype = torch.float64
    loc, scale = torch.tensor([0.3, -1.0], dtype=dtype), torch.tensor([0.8, 1.7], dtype=dtype)
    tails = TailFreeCoordinates(loc, scale, torch.tensor([2.0, 0.4], dtype=dtype))
    v = (loc + 2 * torch.randn(200, 2, dtype=dtype)).requires_grad_(True)
    w, log_derivative = tails.to_stretched(v)
    back, log_derivative_back = tails.from_stretched(w.detach())
    torch.testing.assert_close(back, v.detach())
    torch.testing.assert_close(log_derivative_back, log_derivative.detach())
    for coordinate in range(2):
        (derivative,) = torch.autograd.grad(w[:, coordinate].sum(), v, retain_graph=True)
        torch.testing.assert_close(derivative[:, coordinate].log(), log_derivative[:, coordinate].detach())

    # The pulled-back density of a Cauchy in w: log p(w(v)) + log |dw/dv|; its autograd score.
    def log_p(w):
        return -torch.log1p(w.square()).sum(-1)

    w_detached = w.detach().requires_grad_(True)
    (score_w,) = torch.autograd.grad(log_p(w_detached).sum(), w_detached)
    (expected,) = torch.autograd.grad((log_p(w) + log_derivative.sum(-1)).sum(), v)
    torch.testing.assert_close(tails.pull_back_score(score_w, v.detach(), log_derivative.detach()), expected)


def test_a_pushed_direction_gives_the_surrogate_the_gradient_of_the_direction_in_free_coordinates():
    # sum_i <push(phi_i), dw_i/deta> must equal sum_i <phi_i, dv_i/deta>, v = v(w(eta)).
    dtype = torch.float64
    torch.manual_seed(1)
    tails = TailFreeCoordinates(
        torch.tensor([0.2], dtype=dtype), torch.tensor([1.3], dtype=dtype), torch.tensor([1.5], dtype=dtype)
    )
    noise = torch.randn(40, 1, dtype=dtype)
    eta = torch.tensor([0.7, 1.1], dtype=dtype, requires_grad=True)
    w = tail_stretch(eta[0] + eta[1] * noise, torch.tensor([1.2], dtype=dtype))
    v, log_derivative = tails.from_stretched(w)
    phi = torch.randn(40, 1, dtype=dtype)
    (through_free,) = torch.autograd.grad((phi * v).sum(), eta, retain_graph=True)
    pushed = tails.push_direction(phi, log_derivative.detach())
    (through_pushed,) = torch.autograd.grad((pushed * w).sum(), eta)
    torch.testing.assert_close(through_pushed, through_free)


def test_the_far_slope_separates_tails_without_a_variance_from_gaussian_ones():
    # Expected medians at the farthest 5% of 20000 draws: Gaussian (|x| > 1.96) about 5;
    # Student-t with 2 degrees of freedom (|x| > 4.3) about 2.7; Cauchy about 2.
    torch.manual_seed(0)
    gaussian = 2.0 * torch.randn(20000, 1)
    t2 = dist.StudentT(2.0).sample((20000, 1))
    cauchy = dist.Cauchy(0.0, 1.0).sample((20000, 1))
    slopes = [
        far_log_density_slope(gaussian, -gaussian / 4.0).item(),
        far_log_density_slope(t2, -3 * t2 / (2 + t2**2)).item(),
        far_log_density_slope(cauchy, -2 * cauchy / (1 + cauchy**2)).item(),
    ]
    assert 4.5 < slopes[0] < 6.0 and 2.5 < slopes[1] < 2.9 and 1.9 < slopes[2] <= 2.0, slopes
    assert slopes[0] > HEAVY_TAIL_SLOPE > slopes[1]
    # Invalid draws are left out, whatever their values.
    x = torch.cat([gaussian, torch.full((100, 1), 1e6)])
    score = torch.cat([-gaussian / 4.0, torch.full((100, 1), float("nan"))])
    valid = torch.cat([torch.ones(20000, dtype=torch.bool), torch.zeros(100, dtype=torch.bool)])
    assert far_log_density_slope(x, score, valid).item() == slopes[0]


def test_a_restricted_map_keeps_only_the_chosen_coordinates():
    tails = TailFreeCoordinates(torch.zeros(3), torch.ones(3), torch.tensor([1.0, 2.0, 0.0]))
    assert tails.restricted(torch.tensor([True, False, True])).tail_weight.tolist() == [1.0, 0.0, 0.0]
    assert tails.restricted(torch.tensor([False, False, True])) is None
