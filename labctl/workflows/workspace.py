"""`labctl pull` and `labctl push`, and the copy `labctl down` makes of what changed since `up` before it deletes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labctl import workspace
from labctl.errors import LabctlError
from labctl.labhost import lab_container
from labctl.state import LabRecord, StateStore
from labctl.ui import Outcome, Reporter
from labctl.workflows.runlab_options import results_root


def describe_pull(result: workspace.PullResult) -> str:
    if result.files:
        size = workspace.human_bytes(result.bytes)
        text = f"Copied {len(result.files)} file(s), {size}, each verified, to {result.copy_dir}"
        text += f" (list: {result.dest / workspace.MANIFEST_NAME})."
    elif not result.already_here:
        what = "Nothing changed in the workspace since up" if result.changed_only else "The workspace holds no files"
        text = f"{what}; nothing to copy."
    else:
        text = f"Nothing new to copy to {result.copy_dir}."
    lines = [text]
    if result.already_here:
        lines.append(f"{len(result.already_here)} file(s) were already there from an earlier copy, checked.")
    large = [s for s in result.skipped if s.reason == "too large"]
    if large:
        shown = ", ".join(f"{s.path} ({workspace.human_bytes(s.size)})" for s in large[:5])
        more = f" and {len(large) - 5} more" if len(large) > 5 else ""
        lines.append(
            f"Left in the lab, larger than the limit: {shown}{more}. Name them to copy them anyway: "
            f"'labctl pull {large[0].path}'."
        )
    gone = [s.path for s in result.skipped if s.reason == "deleted during the copy"]
    if gone:
        lines.append(f"Deleted in the lab while copying: {', '.join(gone[:5])}.")
    return "\n".join([*lines, *(f"Your local edit was kept as {path}." for path in result.kept_local)])


def pull(
    ui: Reporter,
    name: str | None = None,
    paths: list[str] | None = None,
    dest: Path | None = None,
    changed: bool = False,
    max_size_mb: int = workspace.DEFAULT_MAX_FILE_MB,
) -> Outcome:
    for path in paths or []:
        workspace.workspace_path(path)  # a path out of /workspace is refused before anything connects
    record = StateStore().resolve(name)
    step = f"Copying the workspace of lab '{record.name}'"
    result = _pull(record, ui, step, dest, paths=paths or [], changed_only=changed, max_size=max_size_mb * workspace.MB)
    return Outcome({"name": record.name, **result.to_json()}, describe_pull(result))


def push(ui: Reporter, paths: list[Path], name: str | None = None, to: str = "") -> Outcome:
    workspace.workspace_path(to)  # refused before anything connects
    record = StateStore().resolve(name)
    progress = workspace.progress_lines(ui.info, "Sent")
    with lab_container(record, ui) as box, ui.step(f"Copying {len(paths)} path(s) into lab '{record.name}'"):
        result = workspace.push(box, paths, to, progress=progress)
    size = workspace.human_bytes(result.bytes)
    lines = [f"Sent {len(result.files)} file(s), {size}, to {result.dest}; each checked there."]
    if result.skipped:
        lines.append(f"Not sent (links and caches): {', '.join(result.skipped[:5])}.")
    return Outcome({"name": record.name, **result.to_json()}, "\n".join(lines))


def _pull(record: LabRecord, ui: Reporter, step: str, dest: Path | None, **options: Any) -> workspace.PullResult:
    with lab_container(record, ui) as box, ui.step(step):
        root = dest or results_root()
        progress = workspace.progress_lines(ui.info)
        return workspace.pull(box, dest or root / record.name, root=root, progress=progress, **options)


def save_before_down(record: LabRecord, ui: Reporter) -> workspace.PullResult | None:
    if record.status not in ("ready", "stopped"):
        return None  # never ready: nothing of the user's can be there; deleting: an earlier `down` saved it
    try:  # no size limit: nothing is deleted unsaved
        result = _pull(record, ui, "Saving your work from the lab's workspace", None, changed_only=True, max_size=0)
    except LabctlError as exc:
        raise LabctlError(
            f"Lab '{record.name}' was not deleted: your work in its workspace could not be saved first "
            f"({exc.message.rstrip('.')}).",
            hint=(exc.hint + " " if exc.hint else "")
            + f"Or delete it without saving: 'labctl down --name {record.name} --no-save'.",
            exit_code=exc.exit_code,
        ) from None
    ui.info(describe_pull(result))
    return result
