"""labctl runs on laptops: every module imports where POSIX-only modules and functions do not exist.

Windows has no fcntl, termios, pwd, grp or resource, no os.fork or os.fchmod, no Unix sockets and no SIGHUP
or SIGKILL. A fresh interpreter hides all of them, then imports every labctl module: one that needs them at
import time (rather than behind a platform check, where it is called) fails here on Linux already.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import importlib, importlib.abc, os, pkgutil, signal, socket, sys

HIDDEN = {"fcntl", "termios", "pwd", "grp", "resource", "posix_ipc", "tty", "pty"}
for name in HIDDEN:
    sys.modules.pop(name, None)


class WindowsLike(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ImportError(f"No module named {name!r} (hidden: not on Windows)")
        return None


sys.meta_path.insert(0, WindowsLike())
for module, names in ((os, ("fork", "fchmod", "getuid", "geteuid")), (signal, ("SIGHUP", "SIGKILL")),
                      (socket, ("AF_UNIX",))):
    for name in names:
        if hasattr(module, name):
            delattr(module, name)

import labctl

failed = []
for info in pkgutil.walk_packages(labctl.__path__, "labctl."):
    if info.name.endswith(".__main__"):  # runs the command line when imported
        continue
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed.append(f"{info.name}: {type(exc).__name__}: {exc}")
print("\n".join(failed) or "ok")
"""


def test_every_module_imports_without_posix_only_modules() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "lab")])}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok", result.stdout


def test_the_check_sees_a_posix_only_import(tmp_path: Path) -> None:
    """The hiding works: a module importing fcntl at the top is reported."""
    package = tmp_path / "labctl"
    package.mkdir()
    (package / "__init__.py").write_text("__path__ = [__path__[0]]\n")
    (package / "needs_fcntl.py").write_text("import fcntl\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "labctl.needs_fcntl: ImportError" in result.stdout, result.stdout + result.stderr
