"""Execute the bundled notebook headless (nbclient) and keep the executed copy.

Its parameters cell reads ``LAB_*`` environment variables: ``run_notebook(out, {"data": "synthetic:400"})`` sets
``LAB_DATA``. Each code cell prints ``cell 7/18: <its first line that is not an import> ...`` as it starts and
``cell 7/18 done in 3.2s`` (or ``failed after``) when it ends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, TextIO

from cifarlab.config import LabError

NOTEBOOK_NAME = "first_pytorch_classifier.ipynb"
LAB_DIR = Path(__file__).resolve().parent.parent
SHOWN_SOURCE = 60  # characters of a cell's first line in its progress line


class CellProgress:
    """The progress lines of a notebook's code cells (nbclient's hooks), and which cell runs now."""

    def __init__(self, cells: list[Any], stream: TextIO | None) -> None:
        runs = [i for i, cell in enumerate(cells) if cell.cell_type == "code" and cell.source.strip()]
        self.number = {index: k + 1 for k, index in enumerate(runs)}  # cell index -> its number among code cells
        self.total = len(runs)
        self.stream = stream
        self.current: tuple[int, str] | None = None  # (number, first line) of the cell that runs
        self.started = 0.0

    def start(self, cell: Any, cell_index: int, **_: Any) -> None:
        lines = [line.strip() for line in cell.source.splitlines() if line.strip()]
        first = next((line for line in lines if not line.startswith(("import ", "from "))), lines[0])
        if len(first) > SHOWN_SOURCE:
            first = first[: SHOWN_SOURCE - 1] + "\u2026"
        self.current = (self.number.get(cell_index, 0), first)
        self.started = time.monotonic()
        self._say(f"cell {self.current[0]}/{self.total}: {first} ...")

    def done(self, cell: Any, cell_index: int, execute_reply: dict[str, Any] | None = None, **_: Any) -> None:
        failed = (execute_reply or {}).get("content", {}).get("status") == "error"
        number = self.number.get(cell_index, 0)
        self._say(f"cell {number}/{self.total} {'failed after' if failed else 'done in'} {self.seconds():.1f}s")

    def seconds(self) -> float:
        return time.monotonic() - self.started

    def where(self) -> str:
        """The cell that runs (or ran last), in words for an error."""
        if self.current is None:
            return "before its first cell"
        number, first = self.current
        return f"in cell {number}/{self.total} ({first}) after {self.seconds():.0f}s"

    def _say(self, line: str) -> None:
        if self.stream is not None:
            self.stream.write(line + "\n")
            self.stream.flush()


def run_notebook(
    out_dir: str | Path,
    params: dict[str, str] | None = None,
    timeout: int = 1800,
    source: str | Path | None = None,
    stream: TextIO | None = None,
) -> Path:
    """Execute every cell; results land in ``out_dir`` (``LAB_OUT``) next to the executed notebook. ``source``: a
    notebook of the user's own, its kernel started in its folder (its relative paths work as in Jupyter).
    ``timeout``: seconds per cell. A failing cell leaves the partially executed copy behind, and is named."""
    import nbformat
    from nbclient import NotebookClient

    src = Path(source).resolve() if source else LAB_DIR / NOTEBOOK_NAME
    if not src.is_file():
        raise LabError(f"the notebook {src} does not exist.")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env_updates = {f"LAB_{k.upper()}": str(v) for k, v in (params or {}).items()}
    env_updates.setdefault("LAB_OUT", str(out))
    python_path = os.pathsep.join(p for p in (str(LAB_DIR), os.environ.get("PYTHONPATH", "")) if p)
    env_updates["PYTHONPATH"] = python_path
    nb = nbformat.read(src, as_version=4)
    cwd = src.parent if source else out
    progress = CellProgress(nb.cells, stream)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
        on_cell_execute=progress.start,
        on_cell_executed=progress.done,
    )
    executed = out / (src.name if src.parent != out else f"{src.stem}.executed{src.suffix}")
    _execute(client, progress, executed, env={**os.environ, **env_updates})
    nbformat.write(nb, executed)
    return executed


def _execute(client: Any, progress: CellProgress, executed: Path, env: dict[str, str]) -> None:
    """Run the client; a cell's error, a cell past the time limit or a dead kernel becomes a LabError that names
    the cell, once the partially executed copy is written to ``executed``."""
    import nbformat
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    try:
        client.execute(env=env)  # the kernel's environment
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        nbformat.write(client.nb, executed)  # the partially executed copy, kept whatever stopped it
        where = progress.where()
        if isinstance(exc, CellExecutionError):
            what, detail = f"the notebook stopped with an error {where}", f" {exc.ename}: {exc.evalue}"
        elif isinstance(exc, CellTimeoutError):
            what, detail = (
                f"the notebook stopped {where}: the cell ran past the limit of {client.timeout}s per cell",
                "",
            )
        else:
            what, detail = f"the notebook's kernel died {where} (out of memory, most often)", ""
        raise LabError(f"{what}; the executed copy is at {executed}.{detail}") from exc
