"""MkDocs hook: render the jupytext tutorials in ``tutorials/`` as documentation pages.

Each ``tutorials/<name>.py`` (percent format) becomes ``tutorials/<name>.md``: markdown cells
as text, code cells as Python blocks. Figures the tutorials save under ``tutorials/figures/``
are published beside them (the scripts' markdown refers to them as ``figures/<file>``), and
``tutorials/outputs/<name>.txt``, the printed output of the last full run, is appended.
The scripts are not executed here: the test suite runs them.
"""

from __future__ import annotations

from pathlib import Path

import jupytext
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = ROOT / "tutorials"


def _page(script: Path) -> str:
    notebook = jupytext.read(script)
    parts = []
    for cell in notebook.cells:
        source = cell.source.strip("\n")
        if not source:
            continue
        parts.append(source if cell.cell_type == "markdown" else f"```python\n{source}\n```")
    output = TUTORIALS / "outputs" / f"{script.stem}.txt"
    if output.exists():
        printed = output.read_text().replace(f"{ROOT}/", "").rstrip()  # paths relative to the repository
        parts.append(
            "## Output of a full run\n\n"
            f"What `python tutorials/{script.name}` printed on the 2-core CPU machine (one thread) the figures "
            "above come from (progress bars omitted):\n\n"
            f"```text\n{printed}\n```"
        )
    parts.append(f"*This page is rendered from `tutorials/{script.name}`; run it with `python tutorials/{script.name}`.*")
    return "\n\n".join(parts) + "\n"


def on_files(files: Files, config) -> Files:
    for script in sorted(TUTORIALS.glob("*.py")):
        files.append(File.generated(config, f"tutorials/{script.stem}.md", content=_page(script)))
    for figure in sorted((TUTORIALS / "figures").glob("*.png")):
        files.append(File.generated(config, f"tutorials/figures/{figure.name}", abs_src_path=str(figure)))
    return files
