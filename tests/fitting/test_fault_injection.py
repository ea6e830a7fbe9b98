"""Fault injection: a checkpointed `fit` killed with SIGKILL at random moments (no handler
runs, no save on the way out) and started again until it finishes ends exactly where an
uninterrupted run ends, bit for bit."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

CHILD = textwrap.dedent(
    """
    import sys

    import pyro
    import pyro.distributions as dist
    import torch

    import pyro_stein

    torch.set_num_threads(1)


    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
        sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
        offset = pyro.param("offset", torch.tensor(0.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu + offset, sigma), obs=y)


    y = torch.tensor([1.2, 0.4, 2.2, 1.9, 0.8, 1.5])
    checkpoint, out = sys.argv[1], sys.argv[2]
    result = pyro_stein.fit(
        model, y, engine=pyro_stein.AmortizedSVGD(num_particles=64, recenter_every=20), num_steps=120,
        seed=0, progress=False, checkpoint=None if checkpoint == "-" else checkpoint, checkpoint_every=5,
    )
    torch.save({"history": result.history, "guide": result.guide.state_dict(), "params": result.params}, out)
    """
)

TIMEOUT = 120  # seconds for any one child; a run takes a few


def start(checkpoint, out):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(checkpoint), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def finish(process):
    try:
        _, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"the fit did not finish within {TIMEOUT} s")
    assert process.returncode == 0, stderr.decode()[-2000:]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_run_killed_at_random_moments_resumes_bit_for_bit(tmp_path):
    straight_out = tmp_path / "straight.pt"
    finish(start("-", straight_out))

    checkpoint, out = tmp_path / "run.ckpt", tmp_path / "killed.pt"
    chance = random.Random(17)
    kills = 0
    while kills < 2:
        process = start(checkpoint, out)
        # Wait for the run to be under way (a checkpoint newer than the last one), then kill
        # it at a random moment: mid-step, mid-write or between steps.
        before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0
        deadline = time.monotonic() + TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if checkpoint.exists() and checkpoint.stat().st_mtime_ns != before:
                break
            time.sleep(0.01)
        time.sleep(chance.uniform(0.0, 0.5))
        if process.poll() is not None:  # it finished first
            break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=TIMEOUT)
        assert process.returncode == -signal.SIGKILL
        kills += 1
    assert kills >= 1, "the run finished before it could be killed"
    if not out.exists():
        finish(start(checkpoint, out))

    straight = torch.load(straight_out, weights_only=True)
    resumed = torch.load(out, weights_only=True)
    assert resumed["history"] == straight["history"]
    assert straight["guide"].keys() == resumed["guide"].keys()
    for name, value in straight["guide"].items():
        assert torch.equal(value, resumed["guide"][name]), name
    assert torch.equal(straight["params"]["offset"], resumed["params"]["offset"])
