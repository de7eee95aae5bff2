"""The command line: parse, call one workflow, render. Each command imports its workflow when it runs, so that
``labctl --help`` loads none of the heavy libraries (azure, paramiko, docker, torch)."""

from __future__ import annotations

import gc
import importlib
import inspect
import json
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import typer
from typer.core import TyperCommand

from labctl import __version__
from labctl.errors import LabctlError
from labctl.spec import LabSpec, Settings, parse_host, show_config, trust_project
from labctl.ui import Outcome, PlainReporter, Reporter, RichReporter
from labctl.validate import TARGETS, check_run_id


class LabctlCommand(TyperCommand):
    """Help that reads like a man page: placeholders such as SIZE or PATH, never Python types like <list[str]>."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            if (record := param.get_help_record(ctx)) is None:
                continue
            name, text = record
            if param.param_type_name == "argument":
                args.append((_placeholder(param), text))
            else:
                opts.append((re.sub(r" <[^>]*>", f" {param.metavar or (param.name or 'value').upper()}", name), text))
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return ["[OPTIONS]", *(_placeholder(p) for p in self.get_params(ctx) if p.param_type_name == "argument")]


def _placeholder(param: Any) -> str:
    """An argument as usage shows it: SCRIPT, [RUN], [ARGS]..."""
    name = str(param.metavar or param.name or "ARG").removesuffix("...").strip("[]").upper()
    shown = name if param.required else f"[{name}]"
    return f"{shown}..." if param.nargs == -1 else shown


app = typer.Typer(
    name="labctl",
    help="A PyTorch + Jupyter lab on Azure (GPU or CPU), an SSH host or this computer: up, open, run-lab, down.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_VERBOSE = False


def _not_blank(value: Any) -> Any:
    """An option given as '' or spaces is a mistake, never a way to ask for the default."""
    for text in value if isinstance(value, list) else [value]:
        if text is not None and not str(text).strip():
            raise typer.BadParameter("is empty; give a value, or leave the option out for the default.")
    return value


def _opt(
    names: str, help: str, metavar: str | None = None, *, default: Any = None, text: bool = False, **more: Any
) -> Any:
    """An option by its names ("--name -n"); a ``text`` one given as '' or spaces is refused."""
    if text:
        more["callback"] = _not_blank
    return typer.Option(default, *names.split(), help=help, metavar=metavar, **more)


def _flag(names: str, help: str, **more: Any) -> Any:
    return _opt(names, help, default=False, **more)


def _arg(metavar: str, help: str, default: Any = None, **more: Any) -> Any:
    return typer.Argument(default, metavar=metavar, help=help, show_default=False, **more)


def _run_id(value: str | None) -> str | None:
    if value is not None:
        try:
            check_run_id(value, "the run id")
        except LabctlError as exc:
            raise typer.BadParameter(exc.render()) from None
    return value


NAME = _opt("--name -n", "Which lab (default: the only one).", text=True)
RUN = typer.Argument(None, help="Run id (default: the latest).", callback=_run_id)
JSON = _flag("--json", "Print the result as JSON on stdout.")
YES = _flag("--yes -y", "Do not ask for confirmation.")
DETACH = _flag("--detach", "Start the run and return.")
FORCE_OWNER = _flag("--force", "Act on a lab someone else owns (with --confirm-name).")
CONFIRM_NAME = _opt("--confirm-name", "With --force: the lab's name, to act on a lab someone else owns.")
SUBSCRIPTION = _opt("--subscription", "Azure subscription id.", "ID", text=True)

T = TypeVar("T")


def _call(fn: Callable[..., T], given: dict[str, Any], **more: Any) -> T:
    """``fn`` given a command's parameters (``locals()``) that it names, and ``more``; None keeps its default."""
    takes = inspect.signature(fn).parameters
    return fn(**{key: value for key, value in given.items() if key in takes and value is not None} | more)


def _command(
    name: str, calls: str = "", *, lab: bool = True, json: bool = True, **settings: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``action(ui, ...)`` returns the Outcome ``_run`` renders, or with ``calls`` ("status.status") only declares the
    options that workflow gets (``ui`` too). Unless ``lab``/``json`` refuse them: --name first, --json last."""

    def register(action: Callable[..., Any]) -> Callable[..., Any]:
        params = list(inspect.signature(action, eval_str=True).parameters.values())[0 if calls else 1 :]
        own = {p.name for p in params}

        def command(**given: Any) -> None:
            mine = {key: value for key, value in given.items() if key in own}
            outcome = (lambda ui: _call(_workflow(calls), given, ui=ui)) if calls else (lambda ui: action(ui, **mine))
            _run(outcome, bool(given.get("as_json")))

        kind = inspect.Parameter.KEYWORD_ONLY
        if lab and "name" not in own:
            params.insert(0, inspect.Parameter("name", kind, default=NAME, annotation=str | None))
        if json and "as_json" not in own:
            params.append(inspect.Parameter("as_json", kind, default=JSON, annotation=bool))
        command.__signature__ = inspect.Signature([p.replace(kind=kind) for p in params])  # type: ignore[attr-defined]
        command.__doc__ = action.__doc__
        app.command(name, cls=LabctlCommand, **settings)(command)
        return action

    return register


def _workflow(calls: str) -> Callable[..., Outcome]:
    module, function = calls.rsplit(".", 1)
    return getattr(importlib.import_module(f"labctl.workflows.{module}"), function)


def _version(value: bool) -> None:
    if value:
        print(f"labctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = _flag("--verbose -v", "Show underlying calls and tracebacks."),
    version: bool = _flag("--version", "Print the version and exit.", is_eager=True, callback=_version),
) -> None:
    global _VERBOSE
    _VERBOSE = verbose
    if verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")


def _fail(message: str, code: int = 1) -> NoReturn:
    print(f"Error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _run(action: Callable[[Reporter], Outcome], as_json: bool = False) -> None:
    plain = as_json or not sys.stderr.isatty()
    ui: Reporter = PlainReporter(sys.stderr, json_output=as_json) if plain else RichReporter()
    try:
        Settings().check()  # a bad LABCTL_* variable or config value is named before anything happens
        outcome = action(ui)
    except LabctlError as exc:
        if _VERBOSE:
            traceback.print_exc()
        if as_json:
            print(json.dumps({"error": exc.render(), "exit_code": exc.exit_code}))
        _fail(exc.render(), exc.exit_code)
    except KeyboardInterrupt:
        _fail("Interrupted. Whatever was already created is recorded; run the same command again to resume.", 130)
    except Exception as exc:  # a bug or an unexpected failure: still one paragraph, traceback on request
        if _VERBOSE:
            raise
        # A network that drops mid-command is the world, not a bug: say so plainly, whichever library noticed.
        libraries = {"requests.exceptions": "ConnectionError", "paramiko": "SSHException"}
        lost = [getattr(sys.modules[module], name) for module, name in libraries.items() if module in sys.modules]
        if isinstance(exc, (ConnectionError, TimeoutError, EOFError, *lost)):
            _fail(
                f"The connection broke off ({type(exc).__name__}: {exc}). What runs in the lab goes on without it; "
                "run the same command again once the network is back ('labctl status' says whether the lab answers)."
            )
        _fail(
            f"unexpected {type(exc).__name__}: {exc}. Run again with --verbose for the details, and please "
            "report it if it persists."
        )
    if as_json:
        print(json.dumps(outcome.data, indent=2, default=str))
    elif outcome.text:
        print(outcome.text)
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


@_command("up", lab=False)
def up_cmd(
    ui: Reporter,
    name: str | None = _opt("--name -n", "Lab name (default: 'lab').", text=True),
    target: Literal[TARGETS] | None = _opt("--target -t", "Where the lab runs: azure (default), ssh or local."),  # type: ignore[valid-type]
    hosts: list[str] | None = _opt(
        "--host", "The machine for --target ssh; repeat for a cluster, head node first.", "USER@HOST[:PORT]", text=True
    ),
    host_key_fingerprint: str | None = _opt(
        "--host-key-fingerprint", "The --host's key fingerprint, to pin it without a question.", "SHA256:..."
    ),
    gpu: bool = _flag("--gpu", "A GPU machine (N-series on Azure)."),
    nodes: int | None = _opt(
        "--nodes", "Machines in the lab, trained on together with torchrun (Azure: N VMs of one size; default 1).", "N"
    ),
    sizes: list[str] | None = _opt("--size", "VM size; repeat to give fall-backs in order.", "SIZE", text=True),
    region: str | None = _opt("--region", "Azure region, or 'auto'.", "REGION", text=True),
    image: str | None = _opt("--image", "Use this container image as is.", "IMAGE", text=True),
    requirements: Path | None = _opt(
        "--requirements",
        "pip's requirements file (or an environment.yml's pip: list): a layer over the lab image, kept for next up.",
        "FILE",
    ),
    subscription: str | None = SUBSCRIPTION,
    allow_ip: str | None = _opt("--allow-ip", "CIDR allowed to reach SSH (default: your IP).", "CIDR", text=True),
    ssh_key: Path | None = _opt("--ssh-key", "Your private key (default: new).", "PATH"),
    shutdown_at: str | None = _opt("--shutdown-at", "Daily auto-shutdown, HH:MM (19:00).", "HH:MM", text=True),
    no_shutdown: bool = _flag("--no-shutdown", "No auto-shutdown schedule."),
    spot: bool = _flag("--spot", "A Spot VM (cheaper, can be evicted)."),
    idle_stop: str | None = _opt(
        "--idle-stop", "Minutes idle before the lab stops itself, or 0/off (Azure default: 60).", "MINUTES"
    ),
    idle_action: Literal["stop", "shutdown"] = _opt(
        "--idle-action", "stop (the default) or shutdown (power an SSH host off).", "ACTION", default="stop"
    ),
    budget: str | None = _opt("--budget", "US dollars since creation after which the VM stops itself.", "USD"),
    dry_run: bool = _flag("--dry-run", "Print the plan and create nothing."),
    yes: bool = YES,
) -> Outcome:
    """Create a lab (or converge an existing one): machine, Docker, the Jupyter container.

    Examples:

    \b
      labctl up --gpu --region auto
      labctl up --gpu --nodes 2 --size Standard_NC4as_T4_v3
      labctl up --target ssh --host me@10.0.0.4 --host me@10.0.0.5
      labctl up --target local --requirements requirements.txt
    """
    from labctl.workflows.lifecycle import up

    machines = [parse_host(h) for h in hosts or []]
    asked = _call(LabSpec, locals(), host=machines[0] if machines else None, workers=machines[1:])
    return up(asked, ui, dry_run=dry_run)


@_command("down", "lifecycle.down")
def down_cmd(
    yes: bool = YES,
    force: bool = _flag("--force", "Delete even with a run in progress, results not fetched, or someone else's lab."),
    confirm_name: str | None = CONFIRM_NAME,
    no_save: bool = _flag("--no-save", "Do not copy what changed in the workspace since up to this computer first."),
    keep_workspace: bool = _flag("--keep-workspace", "Keep /workspace where it lives, for the next up of this name."),
    delete_workspace: bool = _flag("--delete-workspace", "Delete a workspace kept by --keep-workspace (not copied)."),
) -> None:
    """Copy your work out of the workspace, then delete everything the lab created, check nothing is left, forget it.

    What changed in /workspace since 'up', whatever its size, is copied to ./labctl-results/LAB/workspace/ first,
    each file verified; if that cannot be done, nothing is deleted (--no-save discards it). --keep-workspace copies
    nothing and keeps /workspace where it lives instead (a Docker volume); the next 'up' of the lab's name finds it.

    Examples:

    \b
      labctl down --name cifar-gpu
      labctl down --keep-workspace
    """


@_command("idle-stop", "lifecycle.set_idle_stop")
def idle_stop_cmd(
    minutes: str = typer.Argument(..., help="Minutes idle before the lab stops itself, or 'off'."),
) -> None:
    """Change how long a running lab may sit idle before it stops itself (rewrites the agent's config there).

    Example: labctl idle-stop --name cifar-gpu 30
    """


@_command("pull", "reach.pull")
def pull_cmd(
    paths: list[str] | None = typer.Argument(
        None, metavar="[PATH]...", help="Files or folders in /workspace (default: all of it)."
    ),
    dest: Path | None = _opt("--to", "Local folder (default: ./labctl-results/LAB).", "DIR"),
    changed: bool = _flag("--changed", "Only what changed since 'up'."),
    max_size_mb: int = _opt("--max-size", "Leave files larger than this in the lab unless named.", "MB", default=200),
) -> None:
    """Copy your files from the lab's /workspace here, each one verified against its sha256 in the lab.

    Caches (.cache, __pycache__, .ipynb_checkpoints), labctl's own folders (runs/, .labctl/) and files larger
    than --max-size stay in the lab. The copy lands in DIR/workspace/, with MANIFEST.json and SHA256SUMS
    beside it ('sha256sum -c SHA256SUMS' checks it again).

    Example: labctl pull analysis.ipynb src/
    """


@_command("push", "reach.push")
def push_cmd(
    paths: list[Path] = typer.Argument(..., metavar="PATH...", help="Local files or folders to send."),
    to: str = _opt("--to", "Folder in /workspace (default: /workspace itself).", "DIR", default=""),
) -> None:
    """Copy local files or folders into the lab's /workspace and check each one's sha256 there.

    Example: labctl push train.py data/labels.csv --to project
    """


@_command("open", "reach.open_lab")
def open_cmd(
    port: int = _opt("--port", "Local port for the tunnel (next free if busy).", "PORT", default=8888),
    print_only: bool = _flag("--print", "Print the URL and exit (for a tunnel held elsewhere)."),
    browser: bool = _flag("--browser", "Open the URL in the browser."),
    forward: list[int] | None = _opt(
        "--forward",
        "Also forward this port of the lab (TensorBoard 6006, MLflow 5000) to this computer's "
        "127.0.0.1 through the same tunnel; repeatable. The server must listen on all the lab's addresses.",
        "PORT",
    ),
) -> None:
    """Tunnel to the lab's Jupyter and print its URL with the token; Ctrl-C closes the tunnel.

    Example: labctl open --browser --forward 6006
    """


def _with_lab_options(command: Callable[..., Outcome]) -> Callable[..., Outcome]:
    """cifarlab's ``LAB_OPTIONS`` as options after ``here``, declared once there; their values reach ``**training``."""
    from labctl.workflows.runlab_options import LAB_OPTIONS

    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    after = [p.name for p in own].index("here") + 1
    lab = [
        inspect.Parameter(
            key,
            inspect.Parameter.KEYWORD_ONLY,
            default=_opt("--" + key.replace("_", "-"), option.help, option.run_lab, default=option.default),
            annotation=(Literal[option.choices] if option.choices else option.type) | None,
        )
        for key, option in LAB_OPTIONS.items()
        if option.run_lab
    ]
    command.__signature__ = inspect.Signature([*own[:after], *lab, *own[after:]])  # type: ignore[attr-defined]
    return command


@_command("run-lab")
@_with_lab_options
def run_lab_cmd(
    ui: Reporter,
    *,
    name: str | None = NAME,  # given to RunLabOptions with the rest
    here: bool = _flag("--here", "Run in this Python environment (no cloud, no container)."),
    data: str | None = _opt(
        "--data",
        "cifar10 (download), synthetic[:N], a path to train/<class>/*.jpg or .tar.gz here, or "
        "machine:PATH for data already on the lab's machine.",
        "DATA",
        text=True,
        autocompletion=lambda: ["cifar10", "synthetic"],
    ),
    gpus: int | None = _opt(
        "--gpus",
        "GPUs to train on, one process each under torchrun (default: every GPU of the machine; a CPU "
        "machine and --notebook run one process).",
        "N",
    ),
    nodes: int | None = _opt("--nodes", "Machines of the lab to train on together (default: all of them).", "N"),
    notebook: bool = _flag("--notebook", "Execute the notebook headless instead (or NOTEBOOK, your own) and keep it."),
    notebook_file: str | None = _arg(
        "[NOTEBOOK]", "With --notebook: your own .ipynb, on this computer or in /workspace."
    ),
    detach: bool = DETACH,
    out: Path | None = _opt("--out", "Where results go.", "DIR"),
    extra: list[str] | None = _opt("--set", "Extra training option KEY=VALUE (repeatable).", "KEY=VALUE"),
    resume: str | None = _opt(
        "--resume", "Go on with run RUN, stopped before its end, from its checkpoint, with its own options.", "RUN"
    ),
    no_resume: str | None = _opt("--no-resume", "Leave run RUN stopped when the lab comes back.", "RUN"),
    **training: Any,
) -> Outcome:
    """Train the bundled CIFAR-10 classifier on the lab, stream progress, fetch the results.

    The run goes on in the lab if the connection drops: 'labctl logs -f' reattaches, 'labctl fetch' brings
    the results, 'labctl cancel' stops it (its checkpoint is saved). Without a test/ folder, --holdout sets the
    share of train/ kept aside for evaluation. A run that 'labctl stop' (or the idle stop, the budget, the
    daily shutdown, a Spot eviction) interrupts saves its checkpoint and resumes when the lab comes back.

    Examples:

    \b
      labctl run-lab --epochs 10 --model fast
      labctl run-lab --notebook my-experiment.ipynb
      labctl run-lab --nodes 2   # a lab on two machines: one model trained on both
      labctl run-lab --resume 20260101-120000-ab12
    """
    from labctl.workflows.runlab import run_lab
    from labctl.workflows.runlab_options import RunLabOptions

    given = {key: value for key, value in training.items() if value is not None}
    notebook = notebook or notebook_file is not None
    return run_lab(_call(RunLabOptions, locals(), training=given, notebook=notebook), ui)


@_command(
    "run", "runlab.run_script", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True}
)
def run_cmd(
    script: str = _arg("SCRIPT", "Your .py, on this computer or in /workspace.", ...),
    args: list[str] | None = _arg("[ARGS]...", "Arguments for the script."),
    detach: bool = DETACH,
) -> None:
    """Run your own Python script in the lab container, the way run-lab runs the lab.

    It runs detached in /workspace/runs/RUN/ (its working folder, also $LAB_OUT), with /workspace on its import
    path; its output streams here, 'labctl logs -f' reattaches, and its folder comes back verified at the end.
    Options for labctl go before SCRIPT; everything after it goes to the script. A requirements.txt or
    environment.yml beside a SCRIPT on this computer joins the lab's packages first, as 'up --requirements' would.

    Example: labctl run --name cifar-gpu train.py --epochs 5
    """


@_command("cancel", "runlab.cancel")
def cancel_cmd(run: str | None = _arg("[RUN]", "Run id (default: the running one).", callback=_run_id)) -> None:
    """Stop a run: it gets SIGTERM, saves its checkpoint and ends; says what was kept.

    Example: labctl cancel 20260101-120000-ab12
    """


@_command("status", "status.status")
def status_cmd() -> None:
    """What runs where, since when, and what it costs; with several labs and no --name, one table of all.

    Example: labctl status
    """


@_command("list", "status.list_labs", lab=False)
def list_cmd(
    subscription: str | None = SUBSCRIPTION, local_only: bool = _flag("--local", "Only labs recorded on this computer.")
) -> None:
    """Every lab: those recorded here and those found in Azure by their tags.

    Example: labctl list --local
    """


@_command("stop", "lifecycle.stop")
def stop_cmd(yes: bool = YES, force: bool = FORCE_OWNER, confirm_name: str | None = CONFIRM_NAME) -> None:
    """Deallocate the lab's VM: no compute charges until 'start'. A run still training is asked about (--yes: stopped).

    Example: labctl stop --name cifar-gpu
    """


@_command("start", "lifecycle.start")
def start_cmd(force: bool = FORCE_OWNER, confirm_name: str | None = CONFIRM_NAME) -> None:
    """Start a stopped lab again, with the same IP and keys.

    Example: labctl start --name cifar-gpu
    """


@_command("resize", "lifecycle.resize")
def resize_cmd(
    gpu: bool = _flag("--gpu", "The default GPU size (Standard_NC4as_T4_v3)."),
    size: str | None = _opt("--size", "The VM size to change to.", "SIZE", text=True),
    yes: bool = YES,
    force: bool = FORCE_OWNER,
    confirm_name: str | None = CONFIRM_NAME,
) -> None:
    """Resize an Azure lab's VMs once the size fits; they restart with the same disk, workspace, address and keys.

    Example: labctl resize --gpu
    """


@_command("logs", "runlab.logs", json=False)
def logs_cmd(run: str | None = RUN, follow: bool = _flag("--follow -f", "Keep streaming until the run ends.")) -> None:
    """Show a run's log from the start; --follow reattaches to a live run.

    Example: labctl logs -f
    """


@_command("runs", "runlab.list_runs")
def runs_cmd(here: bool = _flag("--here", "Only the runs made here with run-lab --here.")) -> None:
    """The lab's runs with their state and accuracy, and the runs made here with run-lab --here.

    Example: labctl runs --json
    """


@_command("fetch", "runlab.fetch")
def fetch_cmd(run: str | None = RUN) -> None:
    """Bring a run's results back and verify them.

    Example: labctl fetch 20260101-120000-ab12
    """


@_command("ssh", "reach.ssh_shell", json=False, context_settings={"allow_interspersed_args": False})
def ssh_cmd(command: list[str] | None = _arg("[CMD]...", "One command to run instead of a shell (after --).")) -> None:
    """Open a shell on the lab's machine, or run one command there (with the pinned host key).

    Example: labctl ssh -- nvidia-smi
    """


@_command("ssh-config", "reach.ssh_config")
def ssh_config_cmd(
    local_port: int | None = _opt("--local-port", "Port here for Jupyter (default: the lab's own).", "PORT"),
    include: bool = _flag("--include", "Add the Include line to ~/.ssh/config without asking."),
) -> None:
    """Write a 'Host labctl-LAB' entry for ssh, scp, rsync and VS Code, with the lab's pinned host key.

    The entry goes to ~/.ssh/labctl/config (yours is not edited); labctl asks once before adding one Include
    line at the top of ~/.ssh/config. 'labctl down' removes the entry.

    Example: labctl ssh-config --name cifar-gpu && ssh labctl-cifar-gpu
    """


@_command("config", lab=False)
def config_cmd(
    ui: Reporter,
    trust: bool = _flag("--trust", "Trust ./labctl.toml as it is now, so it may set image, allow_ip, ..."),
) -> Outcome:
    """The effective settings and where each one came from.

    Example: labctl config --json
    """
    return trust_project() if trust else show_config()


def main() -> None:
    try:
        app()
    finally:
        gc.freeze()  # no full collection of the Azure SDK's objects at exit: a second saved on a busy machine
