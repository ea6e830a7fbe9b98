"""Interrupting `fit` the two ways a user does: Ctrl-C (SIGINT, which fit holds until the
step ends) and an exception raised inside a step (a second Ctrl-C)."""

import os
import signal

from pyro.infer import SVI


def press_ctrl_c_at_step(monkeypatch, step_number):
    """Deliver SIGINT to this process as the step_number-th SVI step starts."""
    original = SVI.step
    calls = {"count": 0}

    def step(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == step_number:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SVI, "step", step)


def raise_inside_step(monkeypatch, step_number):
    """Raise KeyboardInterrupt at the end of the step_number-th SVI step: after it moved the
    guide and the optimizer, before fit counted it."""
    original = SVI.step
    calls = {"count": 0}

    def step(self, *args, **kwargs):
        calls["count"] += 1
        value = original(self, *args, **kwargs)
        if calls["count"] == step_number:
            raise KeyboardInterrupt
        return value

    monkeypatch.setattr(SVI, "step", step)
