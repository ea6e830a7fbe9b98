"""Every tutorial runs headless, in fast mode, as a plain Python script."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"

# Lines each tutorial must print (beyond saving its figure).
EXPECTED_OUTPUT = {
    "bayesian_regression.py": [
        "NUTS reference: 4000 draws", "worst standardized mean error", "sd ratio", "KSD of the draws", "PSIS-LOO elpd",
    ],
    "logistic_regression.py": ["NUTS reference: 2000 draws", "lpd/tumour", "AutoMultivariateNormal"],
    "eight_schools.py": ["divergent transitions", "CTF, centered", "Amortized SVGD, non-centered"],
    "multimodal_2d.py": ["right-mode mass", "SVGD particles (Pyro)", "CTF distillation"],
    "vae_digits.py": ["AutoAmortizedSampler", "Stein VAE: test log-likelihood", "Trace_ELBO VAE: test log-likelihood"],
}


@pytest.mark.parametrize("script", sorted(p.name for p in TUTORIALS.glob("*.py")))
def test_tutorial_runs_in_fast_mode(script, tmp_path):
    # Fast-mode figures go to a temporary folder, not over the committed full-run ones.
    env = dict(os.environ, PYRO_STEIN_FAST="1", PYRO_STEIN_FIGURES=str(tmp_path), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    completed = subprocess.run(
        [sys.executable, str(TUTORIALS / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    for line in EXPECTED_OUTPUT.get(script, []):
        assert line in completed.stdout, line
    figures = [Path(line.split("figure saved to", 1)[1].strip()) for line in completed.stdout.splitlines()
               if line.startswith("figure saved to")]
    assert figures, "the tutorial saved no figure"
    for figure in figures:
        assert figure.parent == tmp_path and figure.exists() and figure.stat().st_size > 10_000, figure
