"""Uniform random subsets without a permutation of every row."""

import pytest
import torch

from pyro_stein.ops.subsample import random_subset


@pytest.mark.parametrize("size,count", [(10, 3), (10, 9), (5, 5), (5, 7)])
def test_subsets_are_distinct_indices_of_the_right_size(size, count):
    torch.manual_seed(0)
    rows = random_subset(size, count)
    assert rows.dtype == torch.long
    assert len(rows) == min(size, count) == len(rows.unique())
    assert bool((rows >= 0).all() and (rows < size).all())


def test_every_row_is_chosen_equally_often_and_pairs_are_uniform():
    # 20 of 100 rows, 20000 times: each row is in a subset with probability 0.2 and each
    # pair with 0.2 * 19/99.  Binomial standard errors of the counts: 57 and 26; the
    # bounds are 5 of them, over 100 rows and a 100 x 100 table of pairs.
    torch.manual_seed(0)
    size, count, trials = 100, 20, 20000
    hits = torch.zeros(size, size)
    for _ in range(trials):
        member = torch.zeros(size)
        member[random_subset(size, count)] = 1.0
        hits += member.unsqueeze(0) * member.unsqueeze(1)
    single, pair = trials * count / size, trials * count / size * (count - 1) / (size - 1)
    assert (hits.diagonal() - single).abs().max() < 5 * (trials * 0.2 * 0.8) ** 0.5
    off = hits[~torch.eye(size, dtype=torch.bool)]
    assert (off - pair).abs().max() < 5 * (pair * (1 - pair / trials)) ** 0.5


def test_the_order_is_random():
    torch.manual_seed(0)
    rows = random_subset(10**6, 1000)
    assert not bool((rows[1:] > rows[:-1]).all())
