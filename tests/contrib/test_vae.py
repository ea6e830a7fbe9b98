"""VAE case study: the four methods run end to end, the command line writes its metrics and
figure, and bad options are refused."""

import json

import numpy as np
import pytest
import torch

from pyro_stein.contrib.vae import METHODS, binarize, run_experiment
from pyro_stein.contrib.vae.__main__ import main


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_and_is_measured(method):
    report = run_experiment("digits", method, epochs=1, seed=0, test_images=20, importance_samples=100, progress=False)
    final = report["final"]
    assert final["method"] == method and final["steps"] == 11  # 1347 training images, 128 a step
    # 64 binary pixels: a log-likelihood between that of a perfect model (0) and of fair coins.
    assert 64 * np.log(0.5) - 30 < final["test_log_likelihood"] < 0
    assert 0 < final["effective_sample_fraction"] <= 1
    assert report["reconstructions"].shape == (8, 64) and report["samples"].shape == (8, 64)


def test_the_command_line_writes_metrics_and_figure(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["--method", "stein_vae", "--epochs", "1", "--test-images", "10", "--importance-samples", "50",
                   "--out", str(out), "--no-progress"])
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "stein_vae" and "test_log_likelihood" in metrics
    assert (out / "samples.png").stat().st_size > 5000
    assert "test_log_likelihood" in capsys.readouterr().out


def test_bad_input_is_refused(tmp_path, capsys):
    assert main(["--dataset", str(tmp_path / "missing.npz"), "--epochs", "1", "--out", str(tmp_path / "o")]) == 2
    assert "error" in capsys.readouterr().err
    with pytest.raises(ValueError, match="method must be one of"):
        run_experiment("digits", "gan", epochs=1)


def test_binarize_is_fixed():
    images = torch.tensor([[[[0.2, 0.6], [0.5, 0.9]]]])
    assert binarize(images).tolist() == [[0.0, 1.0, 0.0, 1.0]]
