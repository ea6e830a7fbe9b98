"""Every tutorial runs headless, in fast mode, as a plain Python script."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"

# Lines each tutorial must print (beyond saving its figure).
EXPECTED_OUTPUT = {
    "bayesian_regression.py": ["NUTS reference: 4000 draws", "worst standardized mean error", "sd ratio"],
}


@pytest.mark.parametrize("script", sorted(p.name for p in TUTORIALS.glob("*.py")))
def test_tutorial_runs_in_fast_mode(script, tmp_path):
    env = dict(os.environ, PYRO_STEIN_FAST="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    completed = subprocess.run(
        [sys.executable, str(TUTORIALS / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "figure saved to" in completed.stdout
    for line in EXPECTED_OUTPUT.get(script, []):
        assert line in completed.stdout, line
    figure = Path(completed.stdout.split("figure saved to")[-1].strip())
    assert figure.exists() and figure.stat().st_size > 10_000
