"""Checkpoints hold tensors and plain values only: they load with weights_only=True, and a
file that is anything else is refused with a message that says what is wrong with it."""

import os
import pickle

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_stein
from pyro_stein.fitting.checkpoint import read_state, write_state


def model():
    pyro.sample("x", dist.Normal(0.0, 1.0))


class _RunsCode:
    """A pickle payload that runs code when it is unpickled (the attack)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_fit_checkpoint_loads_with_weights_only(tmp_path):
    path = tmp_path / "fit.pt"
    pyro_stein.fit(model, num_steps=10, seed=0, progress=False, checkpoint=path, checkpoint_every=5)
    payload = torch.load(path, weights_only=True)  # raises if anything but tensors and plain values
    assert payload["format"] == "pyro_stein.checkpoint" and payload["kind"] == "pyro_stein.fit"
    assert payload["state"]["num_steps"] == 10


def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pt"
    torch.save({"format": "pyro_stein.checkpoint", "payload": _RunsCode(marker)}, path)
    with pytest.raises(ValueError, match="refused unread, since loading it could run arbitrary code"):
        pyro_stein.fit(model, num_steps=5, progress=False, checkpoint=path)
    assert not marker.exists()
    with open(tmp_path / "plain.pkl", "wb") as file:  # a bare pickle, not even torch.save's zip
        pickle.dump(_RunsCode(marker), file)
    with pytest.raises(ValueError, match="checkpoint .*plain.pkl"):
        read_state(tmp_path / "plain.pkl", "pyro_stein.fit")
    assert not marker.exists()


def test_damaged_files_say_so(tmp_path):
    good = tmp_path / "good.pt"
    pyro_stein.fit(model, num_steps=5, seed=0, progress=False, checkpoint=good)
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all\n" * 10)
    corrupted = bytearray(data)
    corrupted[len(data) // 3 : len(data) // 3 + 64] = b"\xff" * 64
    (tmp_path / "corrupted.pt").write_bytes(bytes(corrupted))
    for name in ("truncated.pt", "garbage.pt", "corrupted.pt"):
        with pytest.raises(ValueError, match=rf"checkpoint '.*{name}' is not a readable checkpoint") as caught:
            pyro_stein.fit(model, num_steps=5, progress=False, checkpoint=tmp_path / name)
        assert "another model" not in str(caught.value)
    with pytest.raises(ValueError, match="is a directory; pass a file path"):
        pyro_stein.fit(model, num_steps=5, progress=False, checkpoint=tmp_path)
    with pytest.raises(ValueError, match="is a directory, not a checkpoint file"):
        read_state(tmp_path, "pyro_stein.fit")


def test_foreign_and_other_kinds_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="was not written by pyro_stein"):
        read_state(tmp_path / "foreign.pt", "pyro_stein.fit")
    write_state(tmp_path / "other.pt", {"epoch": 1}, "pyro_stein.contrib.imaging.train")
    with pytest.raises(ValueError, match="written by 'pyro_stein.contrib.imaging.train', not by 'pyro_stein.fit'"):
        pyro_stein.fit(model, num_steps=5, progress=False, checkpoint=tmp_path / "other.pt")
    torch.save({"format": "pyro_stein.checkpoint", "version": 99, "kind": "pyro_stein.fit", "state": {}},
               tmp_path / "future.pt")
    with pytest.raises(ValueError, match="format version 99"):
        read_state(tmp_path / "future.pt", "pyro_stein.fit")


def test_the_generators_round_trip_exactly():
    import numpy as np

    from pyro_stein.fitting.checkpoint import rng_state, set_rng_state

    pyro.set_rng_seed(3)
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), __import__("random").random())
    torch.rand(5), np.random.rand(5)
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and (expected[1] == again[1]).all() and expected[2] == again[2]
