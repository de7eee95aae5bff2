"""Lab runs inside the lab container: start detached, follow, list, fetch and verify.

Everything goes through the docker SDK's container API (exec, put/get archive), so the same code serves a
container on this computer and one on a VM reached through labctl's verified SSH connection. A run lives in
its own directory on the container's volume (see ``templates/lab-run.sh``): the run survives a dropped
connection, and any later `labctl logs` or `labctl fetch` picks it up from the files.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import shlex
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from labctl import assets
from labctl import container as container_module
from labctl.errors import LabctlError, NotFound

WORKSPACE = PurePosixPath(container_module.WORKSPACE)
RUNS_DIR = WORKSPACE / "runs"
LABCTL_DIR = WORKSPACE / ".labctl"
RUNNER = LABCTL_DIR / "lab-run.sh"
_SKIP = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}


class ExecResult(Protocol):
    exit_code: int | None
    output: Any


class Container(Protocol):
    """The part of ``docker.models.containers.Container`` this module uses."""

    name: str

    def exec_run(self, cmd: Any, **kwargs: Any) -> Any: ...

    def put_archive(self, path: str, data: bytes) -> bool: ...

    def get_archive(self, path: str, **kwargs: Any) -> tuple[Iterable[bytes], dict[str, Any]]: ...


@dataclass
class RunInfo:
    run_id: str
    state: str  # running | succeeded | failed | interrupted | lost
    exit_code: int | None = None
    accuracy: float | None = None
    started_at: str | None = None
    command: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def new_run_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


def sh(container: Container, script: str, *, check: bool = True) -> tuple[int, bytes]:
    """Run a shell snippet in the container and return its exit code and output."""
    result = container.exec_run(["sh", "-c", script], stdout=True, stderr=True)
    code = int(result.exit_code if result.exit_code is not None else -1)
    output = bytes(result.output or b"")
    if check and code != 0:
        raise LabctlError(
            f"A command in the lab container failed (exit {code}): {output.decode(errors='replace').strip()[:400]}",
            hint="Check the lab with 'labctl status'; 'labctl up' repairs a broken container.",
        )
    return code, output


# --------------------------------------------------------------------------------------------- uploads


def _tar_dir(root: Path, arcname: str) -> bytes:
    buffer = io.BytesIO()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = set(PurePosixPath(info.name).parts)
        if parts & _SKIP or info.name.endswith(".pyc"):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(root), arcname=arcname, filter=keep)
    return buffer.getvalue()


def _tar_files(files: dict[str, bytes], mode: int = 0o644) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tree_fingerprint(root: Path) -> str:
    """A content hash of a directory: the lab's version as far as the container is concerned."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if set(rel.parts) & _SKIP or path.suffix == ".pyc":
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def ensure_lab_code(container: Container, lab_dir: Path | None = None) -> PurePosixPath:
    """Make the container hold exactly this labctl's lab (uploaded once per version); return its path."""
    lab_dir = lab_dir or assets.lab_dir()
    version = tree_fingerprint(lab_dir)
    target = LABCTL_DIR / "lab" / version
    code, _ = sh(container, f"test -f {target}/.complete", check=False)
    if code != 0:
        sh(container, f"mkdir -p {LABCTL_DIR / 'lab'} && rm -rf {target}")
        container.put_archive(str(LABCTL_DIR / "lab"), _tar_dir(lab_dir, version))
        sh(container, f"touch {target}/.complete")
    runner = assets.template("lab-run.sh").read_bytes()
    container.put_archive(str(LABCTL_DIR), _tar_files({RUNNER.name: runner}, mode=0o755))
    return target


def upload_data(container: Container, local: Path) -> PurePosixPath:
    """Copy a local dataset (a directory or an archive) into the container once; return where it is."""
    if not local.exists():
        raise NotFound(
            f"The dataset {local} does not exist on this computer.",
            hint="Give a path to train/<class>/*.jpg (a directory, .tar or .tar.gz), or 'cifar10' to download it "
            "on the machine.",
        )
    stat = local.stat()
    key = hashlib.sha256(f"{local.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    remote_dir = LABCTL_DIR / "data" / key
    remote = remote_dir / local.name
    code, _ = sh(container, f"test -f {remote_dir}/.complete", check=False)
    if code != 0:
        sh(container, f"rm -rf {remote_dir} && mkdir -p {remote_dir}")
        if local.is_dir():
            container.put_archive(str(remote_dir), _tar_dir(local, local.name))
        else:
            container.put_archive(str(remote_dir), _tar_files({local.name: local.read_bytes()}))
        sh(container, f"touch {remote_dir}/.complete")
    return remote


# --------------------------------------------------------------------------------------------- runs


def start_run(
    container: Container, run_id: str, lab_code: PurePosixPath, args: list[str], env: dict[str, str] | None = None
) -> PurePosixPath:
    """Start ``python -m cifarlab ARGS`` detached in the container, in the run's own directory."""
    run_dir = RUNS_DIR / run_id
    meta = {"run_id": run_id, "started_at": datetime.now(timezone.utc).isoformat(), "command": args}
    sh(container, f"mkdir -p {run_dir}")
    container.put_archive(str(run_dir), _tar_files({"run.json": json.dumps(meta, indent=2).encode()}))
    container.exec_run(
        ["sh", str(RUNNER), str(run_dir), str(lab_code), *args],
        detach=True,
        environment=env or {},
        workdir=str(run_dir),
    )
    return run_dir


_STATE_SCRIPT = r"""
import json, os, sys, time
root = sys.argv[1]
only = sys.argv[2:] or (sorted(os.listdir(root)) if os.path.isdir(root) else [])
out = []
for run in only:
    d = os.path.join(root, run)
    if not os.path.isdir(d):
        continue
    info = {"run_id": run, "exit_code": None, "accuracy": None, "started_at": None, "command": None,
            "status": None, "alive": False, "has_pid": os.path.exists(os.path.join(d, "pid")),
            "age": time.time() - os.path.getmtime(d)}
    try:
        meta = json.load(open(os.path.join(d, "run.json")))
        info["started_at"], info["command"] = meta.get("started_at"), meta.get("command")
    except Exception:
        pass
    try:
        info["exit_code"] = int(open(os.path.join(d, "exit_code")).read().strip())
    except Exception:
        pass
    try:
        pid = int(open(os.path.join(d, "pid")).read().strip())
        os.kill(pid, 0)
        info["alive"] = True
    except Exception:
        pass
    try:
        m = json.load(open(os.path.join(d, "metrics.json")))
        info["accuracy"], info["status"] = m.get("accuracy"), m.get("status")
    except Exception:
        pass
    out.append(info)
print(json.dumps(out))
"""


def _to_info(raw: dict[str, Any]) -> RunInfo:
    code = raw.get("exit_code")
    if code is None:
        # No exit code yet: running while its process lives, or in the first seconds before it wrote its pid.
        starting = not raw.get("has_pid") and float(raw.get("age") or 0) < 30
        state = "running" if raw.get("alive") or starting else "lost"
    elif code == 0:
        state = "succeeded"
    elif raw.get("status") == "interrupted":
        state = "interrupted"
    else:
        state = "failed"
    return RunInfo(
        run_id=str(raw["run_id"]),
        state=state,
        exit_code=code,
        accuracy=raw.get("accuracy"),
        started_at=raw.get("started_at"),
        command=raw.get("command"),
    )


def list_runs(container: Container, run_ids: list[str] | None = None) -> list[RunInfo]:
    """What the container knows about its runs, newest last."""
    # "$0" is the script: whichever of python3/python the image has runs it.
    launcher = 'exec "$(command -v python3 || command -v python)" -c "$0" "$@"'
    cmd = ["sh", "-c", launcher, _STATE_SCRIPT, str(RUNS_DIR), *(run_ids or [])]
    result = container.exec_run(cmd, stdout=True, stderr=True)
    if result.exit_code != 0:
        raise LabctlError(
            "Could not read the runs in the lab container: "
            + bytes(result.output or b"").decode(errors="replace").strip()[:300],
            hint="Check the lab with 'labctl status'.",
        )
    return [_to_info(raw) for raw in json.loads(bytes(result.output).decode())]


def run_info(container: Container, run_id: str) -> RunInfo:
    infos = list_runs(container, [run_id])
    if not infos:
        raise NotFound(f"The lab container has no run '{run_id}'.", hint="'labctl runs' lists the runs.")
    return infos[0]


def read_from(container: Container, path: PurePosixPath, offset: int) -> bytes:
    """The bytes of a file in the container from ``offset`` on (empty if it does not exist yet)."""
    code, data = sh(container, f"tail -c +{offset + 1} {shlex.quote(str(path))} 2>/dev/null", check=False)
    return data if code == 0 else b""


def follow(
    container: Container,
    run_id: str,
    on_output: Callable[[str], None],
    *,
    offset: int = 0,
    poll: float = 1.0,
    follow: bool = True,
) -> RunInfo:
    """Stream a run's log from ``offset`` until the run ends (or once, without ``follow``).

    Polling the log file by offset is what makes reattaching lossless: a new `labctl logs --follow` after a
    dropped connection starts again from 0 and sees every line.
    """
    log = RUNS_DIR / run_id / "train.log"
    while True:
        info = run_info(container, run_id)
        chunk = read_from(container, log, offset)
        if chunk:
            offset += len(chunk)
            on_output(chunk.decode(errors="replace"))
        if info.state != "running" or not follow:
            tail = read_from(container, log, offset)  # whatever was written between the two reads
            if tail:
                on_output(tail.decode(errors="replace"))
            return info
        if not chunk:
            time.sleep(poll)


# --------------------------------------------------------------------------------------------- fetch


def verify_checksums(run_dir: Path) -> int:
    """Check every file listed in SHA256SUMS (computed on the machine); return how many were verified."""
    sums = run_dir / "SHA256SUMS"
    if not sums.is_file():
        raise LabctlError(
            f"The run's checksum list is missing from {run_dir}.",
            hint="The run may not have finished; wait for it ('labctl logs --follow') and fetch again.",
        )
    count = 0
    bad = []
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        expected, name = line.split(maxsplit=1)
        path = run_dir / name.lstrip("*")
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            bad.append(name)
        count += 1
    if bad:
        raise LabctlError(
            f"{len(bad)} fetched file(s) do not match the checksums computed on the machine: {', '.join(bad[:5])}.",
            hint="Fetch again with 'labctl fetch RUN'; the files on the machine are untouched.",
        )
    return count


def fetch_run(container: Container, run_id: str, dest: Path, *, verify: bool = True) -> int:
    """Copy a run's directory to ``dest`` and verify it; return the number of verified files.

    ``verify=False`` is for runs that never finished (a VM restarted under them): their partial results, the
    last checkpoint above all, are still worth having, but no checksums were ever made for them.
    """
    box = container_module.LabContainer(container)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Unpack beside the destination, then swap it in: a fetch that breaks off never leaves a half-copied run.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as staging:
        fetched = box.get(str(RUNS_DIR / run_id), Path(staging))  # streamed via a spooled file, safely extracted
        if dest.exists():
            shutil.rmtree(dest)
        fetched.rename(dest)
    return verify_checksums(dest) if verify else 0
