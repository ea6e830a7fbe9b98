import numpy as np
import torch

from pyro_stein.ops.digest import describe


def test_order_counts_where_it_means_something():
    assert describe(np.array([1, "x"], dtype=object)) != describe(np.array(["x", 1], dtype=object))
    assert describe([1, 2]) != describe([2, 1])
    assert describe({1, 2}) == describe({2, 1})
    assert describe({"a": 1, "b": 2}) == describe({"b": 2, "a": 1})


def test_tensors_are_compared_by_contents_and_device():
    x = torch.arange(6.0).reshape(2, 3)
    assert describe(x.t()) == describe(x.t().contiguous())
    assert describe(x) != describe(x + 1e-6 * (x == 5))
    assert "cuda" not in describe(x)
