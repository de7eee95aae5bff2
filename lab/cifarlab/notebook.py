"""Execute the bundled notebook headless (nbclient) and keep the executed copy.

The notebook's parameters cell reads ``LAB_*`` environment variables, so a run is configured by environment:
``run_notebook(out_dir, {"data": "synthetic:400", "max_steps": "20"})`` sets ``LAB_DATA`` and ``LAB_MAX_STEPS``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cifarlab.errors import LabError

NOTEBOOK_NAME = "first_pytorch_classifier.ipynb"
LAB_DIR = Path(__file__).resolve().parent.parent


def notebook_path() -> Path:
    path = LAB_DIR / NOTEBOOK_NAME
    if not path.is_file():
        raise LabError(f"the lab notebook is missing: expected {path} next to the cifarlab package.")
    return path


def run_notebook(out_dir: str | Path, params: dict[str, str] | None = None, timeout: int = 1800) -> Path:
    """Execute every cell; results land in ``out_dir`` (``LAB_OUT``) next to the executed notebook.

    A failing cell still leaves the partially executed copy behind, so the error can be read in place.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    src = notebook_path()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env_updates = {f"LAB_{k.upper()}": str(v) for k, v in (params or {}).items()}
    env_updates.setdefault("LAB_OUT", str(out))
    python_path = os.pathsep.join(p for p in (str(LAB_DIR), os.environ.get("PYTHONPATH", "")) if p)
    env_updates["PYTHONPATH"] = python_path
    nb = nbformat.read(src, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(out)}})
    executed = out / NOTEBOOK_NAME
    saved = {k: os.environ.get(k) for k in env_updates}
    os.environ.update(env_updates)  # the kernel inherits this process's environment
    t0 = time.time()
    try:
        client.execute()
    except CellExecutionError as exc:
        nbformat.write(nb, executed)
        first = str(exc).strip().splitlines()
        raise LabError(
            f"the notebook stopped with an error after {time.time() - t0:.0f}s; the executed copy with the failing "
            f"cell is at {executed}. {first[-1] if first else ''}"
        ) from exc
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    nbformat.write(nb, executed)
    return executed
