"""The habits the test command enforces: the import layers (docs/architecture.md), pure
tensor math in ``ops``, Pyro internals in ``glue`` only, no import cycles, and ruff.

(The docstring examples run too: ``--doctest-modules`` in pyproject's pytest options.)
"""

import ast
import importlib.util
import shutil
import subprocess
import sys
import types
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pyro_stein"
LINT_IMPORTS = shutil.which("lint-imports")

#: Private attributes of Pyro objects, and trace fields, that only the glue layer reads.
PYRO_INTERNALS = {
    "_pyro_context",
    "_unpack_latent",
    "_init_loc",
    "_setup_prototype",
    "_pyro_name",
    "_unconstrained_shapes",
    "_cond_indep_stacks",
    "_prototype_frames",
    "prototype_trace",
    "cond_indep_stack",
    "iter_stochastic_nodes",
    "nodes",
}

#: Reads of those names that are not Pyro's: ``ops.compiled`` walks a ``torch.fx`` graph's nodes.
NOT_PYRO = {"ops/compiled.py": {"nodes"}}


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LINT_IMPORTS, "--config", "pyproject.toml", "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(cwd), "PATH": str(Path(sys.executable).parent)},
    )


@pytest.mark.skipif(LINT_IMPORTS is None, reason="import-linter is not installed (the test extra)")
def test_the_import_contracts_hold():
    completed = _lint_imports(ROOT)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert "0 broken" in completed.stdout


@pytest.mark.skipif(LINT_IMPORTS is None, reason="import-linter is not installed (the test extra)")
def test_an_upward_import_breaks_the_layer_contract(tmp_path):
    """The contract can fail: a copy of the package in which ops imports fit."""
    shutil.copytree(PACKAGE, tmp_path / "pyro_stein", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    kernels = tmp_path / "pyro_stein" / "ops" / "kernels.py"
    kernels.write_text(kernels.read_text() + "\n\ndef _upward():\n    from pyro_stein.fitting import fit\n\n    return fit\n")
    completed = _lint_imports(tmp_path)
    assert completed.returncode != 0
    assert "pyro_stein.ops.kernels -> pyro_stein.fitting" in completed.stdout


def test_ops_imports_without_pyro():
    """Pure tensor math: every ops module imports with ``pyro`` made unimportable (the
    package's own ``__init__``, which imports the Pyro layers, is bypassed)."""
    code = f"""
import importlib, sys, types
sys.modules["pyro"] = None
package = types.ModuleType("pyro_stein")
package.__path__ = [{str(PACKAGE)!r}]
sys.modules["pyro_stein"] = package
for name in {sorted(p.stem for p in (PACKAGE / "ops").glob("*.py") if p.stem != "__init__")!r}:
    importlib.import_module("pyro_stein.ops." + name)
print("ok")
"""
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.stdout.strip() == "ok", completed.stderr[-2000:]


def _attribute_reads(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
    return names


def test_only_the_glue_layer_reads_pyro_internals():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "glue":
            continue
        used = _attribute_reads(path) & PYRO_INTERNALS - NOT_PYRO.get(str(relative), set())
        if used:
            offenders[str(relative)] = sorted(used)
    assert offenders == {}


def test_the_internals_check_can_fail(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f(guide):\n    return guide._unpack_latent\n")
    assert _attribute_reads(planted) & PYRO_INTERNALS == {"_unpack_latent"}


def test_no_import_cycles():
    graph = grimp.build_graph("pyro_stein")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain is not None:
                cycles.append((module, *chain))
    assert cycles == []


def test_the_library_does_not_ship_the_benchmark_ports():
    assert importlib.util.find_spec("pyro_stein.posteriordb") is None
    assert not any(PACKAGE.rglob("posteriordb*.py"))


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (the test extra)")
def test_ruff_is_clean():
    completed = subprocess.run(
        ["ruff", "check", "--no-cache", "pyro_stein", "tests", "benchmarks", "tutorials", "docs"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-4000:]


def test_shims_reexport_the_moved_objects():
    import pyro_stein.engines as engines
    import pyro_stein.glue.density as density
    import pyro_stein.ops.kernels as kernels

    old = types.SimpleNamespace(**{name: importlib.import_module(f"pyro_stein.{name}") for name in (
        "kernels", "asvgd", "model_density", "initialization")})
    assert old.kernels.RBFKernel is kernels.RBFKernel
    assert old.asvgd.AmortizedSVGD is engines.AmortizedSVGD
    assert old.model_density.UnconstrainedLogDensity is density.UnconstrainedLogDensity
    assert old.initialization.laplace_approximation is importlib.import_module("pyro_stein.ops.laplace").laplace_approximation
