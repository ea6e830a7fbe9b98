"""The one batching probe and its agreement rule."""

import warnings

import pytest
import torch

from pyro_stein.glue.batching import agree, choose_batching


def test_agreement_is_relative_to_the_dtype_and_the_scale():
    reference = torch.tensor([1000.0, -2.0, float("-inf")])
    assert agree(reference + torch.tensor([0.05, 0.0, 0.0]), reference)  # 1e-4 of 1001, float32
    assert not agree(reference + torch.tensor([0.5, 0.0, 0.0]), reference)
    assert not agree(torch.tensor([1000.0, -2.0, 0.0]), reference)  # the non-finite entry differs
    assert not agree(reference[:2], reference)
    reference64 = reference.double()
    assert agree(reference64 + 1e-6, reference64) and not agree(reference64 + 1e-3, reference64)


def test_dict_outputs_ignore_random_keys():
    a = {"log_likelihood/y": torch.ones(3), "predictive/y": torch.zeros(3)}
    b = {"log_likelihood/y": torch.ones(3), "predictive/y": torch.ones(3)}
    assert agree(a, b, ignore=("predictive/",)) and not agree(a, b)
    assert not agree({**a, "predictive/y": torch.zeros(4)}, b, ignore=("predictive/",))  # shapes still count


def test_the_first_candidate_that_agrees_is_chosen():
    outputs = {"loop": torch.ones(3), "plate": torch.zeros(3), "vmap": torch.ones(3)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_batching(outputs.__getitem__, what="the density") == "vmap"


def test_the_loop_fallback_warns_with_each_reason():
    def evaluate(batching):
        if batching == "plate":
            raise RuntimeError("shapes do not broadcast")
        return torch.ones(2) * (batching == "loop")

    with pytest.warns(RuntimeWarning, match=r"plate: it raised RuntimeError: shapes do not broadcast; "
                                            r"vmap: the density differs from one draw at a time") as caught:
        assert choose_batching(evaluate, what="the density", unit="draw", advice="Write it batched.") == "loop"
    assert "per-draw loop" in str(caught[0].message) and str(caught[0].message).endswith("Write it batched.")
    assert caught[0].filename == __file__  # the caller's line, not the library's


def test_boolean_and_integer_outputs_compare_exactly():
    flags = torch.tensor([True, False])
    assert agree(flags, flags.clone()) and not agree(flags, ~flags)
    assert not agree(torch.tensor([1.0, 0.0]), torch.tensor([1, 0]))  # another dtype
    inf = torch.tensor([float("inf")])
    assert not agree(-inf, inf) and not agree(torch.tensor([float("nan")]), inf)
