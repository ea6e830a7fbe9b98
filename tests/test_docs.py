"""The documentation site builds without warnings, and its quick start runs as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strictly(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    site = tmp_path / "site"
    for page in ("index.html", "api/index.html", "arviz/index.html", "choosing/index.html", "architecture/index.html"):
        assert (site / page).exists(), page
    for tutorial in sorted((ROOT / "tutorials").glob("*.py")):
        page = site / "tutorials" / tutorial.stem / "index.html"
        assert page.exists(), page
    # Every figure a tutorial's text shows is published beside it.
    for figure in re.findall(r"figures/[\w.-]+\.png", "".join(p.read_text() for p in (ROOT / "tutorials").glob("*.py"))):
        assert (site / "tutorials" / figure).exists(), figure
    api = (site / "api" / "index.html").read_text()
    assert "to_inference_data" in api and "from_mcmc" in api


def test_quick_start_runs(monkeypatch):
    """The landing page's quick start, executed with its example model on generated data
    (fewer training steps than the default, for time)."""
    import matplotlib

    matplotlib.use("Agg")
    import pyro_stein.fitting

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "index.md").read_text(), flags=re.S)
    quick_start, example_model = blocks[0], blocks[1]
    monkeypatch.setitem(pyro_stein.fitting.DEFAULTS, "num_steps", 100)
    import torch

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=generator)
    y = 1.0 + x @ torch.tensor([0.5, -1.0, 0.0]) + 0.5 * torch.randn(50, generator=generator)
    namespace = {"x": x, "y": y}
    exec(example_model, namespace)
    exec(quick_start.replace("az.plot_trace(idata); ", "az.plot_trace(idata, show=False); "), namespace)
    idata = namespace["idata"]
    assert set(idata.groups()) >= {"posterior", "log_likelihood", "posterior_predictive", "sample_stats"}
    assert idata.posterior["beta"].shape == (1, 4000, 3)


@pytest.mark.parametrize("readme_line", ["pip install -c constraints.txt"])
def test_readme_install_commands_use_the_constraints(readme_line):
    assert readme_line in (ROOT / "README.md").read_text()
