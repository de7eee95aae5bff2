"""Runs in a lab container, each detached in its own directory (``templates/lab-run.sh``) so that it survives a
dropped connection; listed by ``templates/run_state.py``."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from labctl.container import WORKSPACE, LabContainer, UnsafeArchive, archive_entries, lab_fingerprint
from labctl.errors import LabctlError, NotFound, UsageError
from labctl.files import lab_dir, sha256_of, template
from labctl.workspace import LABCTL_DIR

RUNS_DIR = PurePosixPath(WORKSPACE) / "runs"  # one directory per run, named by its id
TOOLS = ("lab-run.sh", "run_state.py")  # from templates/
COMPLETE = ".complete"  # written last into a shipped directory: without it, the copy is redone
STARTING_GRACE_S = 30  # a run without exit code or pid this young is still starting, not lost
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class RunInfo:
    run_id: str
    state: str  # running | succeeded | failed | interrupted | lost
    exit_code: int | None = None
    accuracy: float | None = None
    started_at: str | None = None
    command: list[str] | None = None
    epoch: float | None = None  # epochs done, of ``epochs`` (the lab's metrics.json)
    epochs: float | None = None
    resumable: bool = False  # the lab's training, which goes on from its checkpoint; not a script or notebook
    resume_off: bool = False  # `run-lab --no-resume`
    resume_reason: str | None = None  # why it was stopped to be resumed (resume.json): stop, idle, budget, ...
    checkpoint: bool = False

    @property
    def to_resume(self) -> bool:
        """Stopped with the machine, to go on when the lab comes back: interrupted, or lost (its checkpoint not
        finished in time) with the checkpoint of its last epoch."""
        stopped = self.state == "interrupted" or (self.state == "lost" and self.checkpoint)
        return stopped and self.resumable and not self.resume_off and self.resume_reason is not None

    def facts(self) -> dict[str, Any]:
        """For --json and `status`: the fields, the state as people read it, and whether it resumes."""
        return {**asdict(self), "shown": self.shown(), "resumes": self.to_resume}

    def shown(self) -> str:
        """The state as people read it: "interrupted at epoch 3/10, resumes on start"."""
        if not (self.to_resume or self.state == "interrupted"):
            return self.state
        at = f" at epoch {self.epoch:g}/{self.epochs:g}" if self.epoch is not None and self.epochs else ""
        if self.to_resume:
            return f"interrupted{at}, resumes on start"
        if not self.resumable:
            return f"interrupted{at}, not resumable (it would start over)"
        return f"interrupted{at}" + (", not resumed (--no-resume)" if self.resume_off else "")


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def run_info_from(facts: dict[str, Any]) -> RunInfo:
    code = facts.get("exit_code")
    if code is None:
        # No exit code yet: running while its process lives, or in the first seconds before it wrote its pid.
        starting = not facts.get("has_pid") and float(facts.get("age") or 0) < STARTING_GRACE_S
        state = "running" if facts.get("alive") or starting else "lost"
    elif code == 0:
        state = "succeeded"
    elif facts.get("status") == "interrupted" or code in (130, 143):  # the lab's own word, or SIGINT/SIGTERM
        state = "interrupted"
    else:
        state = "failed"
    facts = {**facts, "run_id": str(facts["run_id"]), "state": state, "exit_code": code}
    return RunInfo(**{field.name: facts[field.name] for field in fields(RunInfo) if field.name in facts})


@dataclass
class LabRuns:
    box: LabContainer

    def _ship_once(self, dest: PurePosixPath, entries: Mapping[str, Path | bytes]) -> PurePosixPath:
        """Unless a complete copy is already there (a broken one is redone)."""
        if not self.box.exists(str(dest / COMPLETE)):
            self.box.exec(["rm", "-rf", str(dest)])
            self.box.put(str(dest), entries)
            self.box.exec(["touch", str(dest / COMPLETE)])
        return dest

    @functools.cached_property
    def tools(self) -> PurePosixPath:
        files = {name: template(name).read_bytes() for name in TOOLS}
        version = hashlib.sha256(b"".join(files[name] for name in TOOLS)).hexdigest()[:16]
        return self._ship_once(LABCTL_DIR / "tools" / version, files)

    def ensure_lab_code(self, source: Path | None = None) -> PurePosixPath:
        source = source or lab_dir()
        dest = LABCTL_DIR / "lab" / lab_fingerprint(source)
        return self._ship_once(dest, {child.name: child for child in sorted(source.iterdir())})

    def upload_data(self, local: Path) -> PurePosixPath:
        stat = local.stat()
        key = hashlib.sha256(f"{local.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return self._ship_once(LABCTL_DIR / "data" / key, {local.name: local}) / local.name

    def start(
        self,
        run_id: str,
        argv: list[str],
        *,
        path: str,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        files: Mapping[str, Path] | None = None,
        resumable: bool = False,
    ) -> PurePosixPath:
        """``path``: on the run's import path; ``command``: what the run records as its own (default ``argv``);
        ``resumable``: the lab's training, which `resume` starts again from its checkpoint (the stop tool marks
        only such runs to be resumed)."""
        run_dir = RUNS_DIR / run_id
        meta: dict[str, Any] = {"run_id": run_id, "started_at": datetime.now(timezone.utc).isoformat()}
        meta.update({"command": command or argv, "launch": argv, "env": env or {}, "resumable": resumable})
        if not resumable:
            meta["resume"] = False
        self.box.put(str(run_dir), {"run.json": json.dumps(meta, indent=2).encode(), **(files or {})})
        self._launch(run_dir, argv, path, env)
        return run_dir

    def _launch(self, run_dir: PurePosixPath, argv: list[str], path: str, env: dict[str, str] | None) -> None:
        runner = self.tools / "lab-run.sh"
        self.box.exec(["sh", str(runner), str(run_dir), path, *argv], env=env, workdir=str(run_dir), detach=True)

    def meta(self, run_id: str) -> dict[str, Any]:
        """The run's run.json, as `start` wrote it."""
        try:
            meta = json.loads(self.read_from(RUNS_DIR / run_id / "run.json", 0) or b"{}")
        except ValueError:
            meta = {}
        return meta if isinstance(meta, dict) else {}

    def _set_meta(self, run_id: str, meta: dict[str, Any]) -> None:
        self.box.put(str(RUNS_DIR / run_id), {"run.json": json.dumps(meta, indent=2).encode()})

    def interrupt(self, reason: str, wait: float) -> dict[str, list[str]]:
        """Every live run checkpoints and ends, those the lab can resume marked to be: {"interrupted", "timed_out"}."""
        said = self._run_state("stop", dict, "interrupt", reason, str(RUNS_DIR), "--wait", str(wait))
        return {key: [str(run) for run in said.get(key, [])] for key in ("interrupted", "timed_out")}

    def _run_state(self, doing: str, shape: type, *args: str) -> Any:
        """The JSON ``run_state.py ARGS`` prints, a ``shape``, or an error that says what it printed instead. Not
        its exit code: a stop whose ``docker exec`` lost that has still said what it stopped."""
        result = self.box.exec(["python", str(self.tools / "run_state.py"), *args], check=False)
        with suppress(ValueError):
            if isinstance(said := json.loads(result.output), shape):
                return said
        raise LabctlError(
            f"Could not {doing} the runs in the lab container {self.box.name}: {result.text.strip()[-300:]}",
            hint="Check the lab with 'labctl status'; 'labctl up' repairs a broken container.",
        )

    def resume(self, run_id: str) -> None:
        """Starts it again in place from its checkpoint, with what started it: its log goes on, the exit code of
        the interrupted attempt is kept aside (exit_code.1, .2, ...), and it is no longer marked to be resumed."""
        meta, run_dir = self.meta(run_id), RUNS_DIR / run_id
        if not meta.get("resumable") or not isinstance(meta.get("launch"), list):
            raise UsageError(
                f"Run {run_id} cannot be resumed: only the lab's training goes on from a checkpoint, and a script "
                "or notebook would start over.",
                hint="Start it again with 'labctl run' (or 'labctl run-lab --notebook').",
            )
        claim = ["python", str(self.tools / "run_state.py"), "claim", str(run_dir), str(STARTING_GRACE_S)]
        if self.box.exec(claim).text.strip() != "claimed":
            raise UsageError(
                f"Run {run_id} is running already: another command has just resumed it.",
                hint=f"'labctl logs --follow {run_id}' shows it.",
            )
        if meta.pop("resume", True) is False:  # resumed by hand: a later stop resumes it again
            self._set_meta(run_id, meta)
        argv = [*map(str, meta["launch"]), "--resume", str(run_dir)]
        self._launch(
            run_dir, argv, str(self.ensure_lab_code()), {str(k): str(v) for k, v in (meta.get("env") or {}).items()}
        )

    def keep_stopped(self, run_id: str) -> None:
        """`run-lab --no-resume`: it stays as it is when the lab comes back, and after the next stop too."""
        self._set_meta(run_id, {**self.meta(run_id), "resume": False})
        self.box.exec(["rm", "-f", str(RUNS_DIR / run_id / "resume.json")])

    def stop(self, run_id: str) -> bool:
        """SIGTERM to its wrapper, which passes it on; False if it was not running."""
        pid = self.read_from(RUNS_DIR / run_id / "pid", 0).decode().strip()
        if not pid.isdigit():
            return False
        # The shell's own kill (images need not have /bin/kill); the pid is an argument, never part of the script.
        return self.box.exec(["sh", "-c", 'kill -TERM "$1"', "sh", pid], check=False).exit_code == 0

    def files(self, run_id: str) -> list[str]:
        result = self.box.exec(["find", str(RUNS_DIR / run_id), "-type", "f"], check=False)
        prefix = f"{RUNS_DIR / run_id}/"
        return sorted(line.removeprefix(prefix) for line in result.text.splitlines() if line.startswith(prefix))

    def list(self, run_ids: list[str] | None = None) -> list[RunInfo]:
        """All of them, or those named, oldest first."""
        return [run_info_from(facts) for facts in self._run_state("read", list, str(RUNS_DIR), *(run_ids or []))]

    def info(self, run_id: str) -> RunInfo:
        infos = self.list([run_id])
        if not infos:
            raise NotFound(f"The lab container has no run '{run_id}'.", hint="'labctl runs' lists the runs.")
        return infos[0]

    def read_from(self, path: PurePosixPath, offset: int) -> bytes:
        result = self.box.exec(["tail", "-c", f"+{offset + 1}", str(path)], check=False)
        return result.output if result.exit_code == 0 else b""

    def read_log(self, run_id: str, offset: int, wait: float = 0) -> tuple[RunInfo, bytes]:
        """Once the run has ended, to the last byte it wrote. ``wait``: seconds to wait first, in the container, cut
        short by the run's end (its exit_code, written last), so that a follower sees the end at once."""
        log = RUNS_DIR / run_id / "train.log"
        wait_then_read = 'i=0; while [ $i -lt "$3" ] && [ ! -e "$1/exit_code" ]; do sleep 0.1; i=$((i+1)); done; '
        argv = ["sh", "-c", wait_then_read + 'tail -c "+$2" "$1/train.log"', "sh", str(log.parent), str(offset + 1)]
        result = self.box.exec([*argv, str(round(wait * 10))], check=False)
        chunk = result.output if result.exit_code == 0 else b""
        info = self.info(run_id)
        if info.state != "running":  # whatever was written between the two reads
            chunk += self.read_from(log, offset + len(chunk))
        return info, chunk

    def fetch(self, run_id: str, dest: Path, *, verify: bool = True) -> int:
        """The number of verified files (none with ``verify`` off: a run that never finished made no checksums)."""
        source = RUNS_DIR / run_id
        dest.parent.mkdir(parents=True, exist_ok=True)
        own_filter: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python's too
        # Unpack beside the destination, then swap it in: a fetch that breaks off never leaves a half-copied run.
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as staging:
            try:
                for tar, member in archive_entries(self.box.archive(str(source)), run_id, links=True):
                    # A folder's mode waits for its files (extractall's way): a read-only one would refuse them.
                    tar.extract(member, staging, set_attrs=not member.isdir(), **own_filter)
            except UnsafeArchive as exc:
                raise LabctlError(
                    f"Run {run_id} could not be fetched into {dest}: {exc.message} Nothing was written.",
                    hint=f"Look at {source} on the machine ('labctl ssh') and remove the links or odd paths there, "
                    "then 'labctl fetch' again; fetch only unpacks a run into its own folder.",
                ) from None
            except (tarfile.TarError, EOFError) as exc:
                raise LabctlError(
                    f"The copy of {source} from the lab container {self.box.name} could not be unpacked ({exc}); "
                    "nothing was kept.",
                    hint="Check the machine ('labctl ssh') and the lab ('labctl status'), then fetch again.",
                ) from None
            fetched = Path(staging) / run_id
            if not fetched.exists():  # an archive of no entries: the checksum list is missing
                fetched.mkdir()
            count = verify_checksums(fetched) if verify else 0  # before the swap: a bad copy never replaces a good one
            if dest.exists():
                shutil.rmtree(dest)
            fetched.rename(dest)
        return count


def verify_checksums(run_dir: Path) -> int:
    sums = run_dir / "SHA256SUMS"
    if not sums.is_file():
        raise LabctlError(
            f"The run's checksum list is missing from {run_dir}.",
            hint="The run may not have finished; wait for it ('labctl logs --follow') and fetch again.",
        )
    count, bad = 0, []
    for line in filter(str.strip, sums.read_text(errors="replace").splitlines()):
        expected, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")
        if not _SHA256.match(expected) or not name:
            raise LabctlError(
                f"The run's checksum list in {run_dir} has a line labctl cannot read: '{line.strip()[:100]}'.",
                hint="The machine wrote it, so check the run there ('labctl ssh'); the files on it are untouched.",
            )
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            raise LabctlError(
                f"The run's checksum list in {run_dir} names '{name}', which is outside the run's directory.",
                hint="No lab run writes that, so check the machine ('labctl ssh') before trusting its results.",
            )
        path = run_dir / name
        if not path.is_file() or sha256_of(path) != expected:
            bad.append(name)
        count += 1
    if bad:
        raise LabctlError(
            f"{len(bad)} fetched file(s) do not match the checksums computed on the machine: {', '.join(bad[:5])}.",
            hint="Fetch again with 'labctl fetch RUN'; the files on the machine are untouched.",
        )
    return count
