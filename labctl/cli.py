"""The command line: parse, call one workflow, render. Each command imports its workflow when it runs, so that
``labctl --help`` loads none of the heavy libraries (azure, paramiko, docker, torch)."""

from __future__ import annotations

import gc
import inspect
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import typer
from typer.core import TyperCommand

from labctl import __version__
from labctl.errors import LabctlError
from labctl.spec import TARGETS
from labctl.ui import Outcome, PlainReporter, Reporter


class LabctlCommand(TyperCommand):
    """Help that reads like a man page: placeholders such as SIZE or PATH, never Python types like <list[str]>."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
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


def _text(*names: str, help: str, metavar: str | None = None) -> Any:
    return typer.Option(*names, help=help, metavar=metavar, callback=_not_blank)


def _run_id(value: str | None) -> str | None:
    if value is not None:
        from labctl.validate import check_run_id

        try:
            check_run_id(value, "the run id")
        except LabctlError as exc:
            raise typer.BadParameter(exc.render()) from None
    return value


NameOpt = Annotated[str | None, _text("--name", "-n", help="Which lab (default: the only one).")]
RunArg = Annotated[str | None, typer.Argument(help="Run id (default: the latest).", callback=_run_id)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DetachOpt = Annotated[bool, typer.Option("--detach", help="Start the run and return.")]
ForceOwnerOpt = Annotated[bool, typer.Option("--force", help="Act on a lab someone else owns (with --confirm-name).")]
ConfirmNameOpt = Annotated[
    str | None,
    typer.Option("--confirm-name", help="With --force: the lab's name, to act on a lab someone else owns."),
]


T = TypeVar("T")


def _options(cls: Callable[..., T], given: dict[str, Any], **more: Any) -> T:
    """``cls`` built from a command's parameters (``locals()``) named like its fields, and ``more``; a parameter
    left out (None) keeps the field's default."""
    fields = inspect.signature(cls).parameters
    return cls(**{key: value for key, value in given.items() if key in fields and value is not None} | more)


def _version(value: bool) -> None:
    if value:
        print(f"labctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show underlying calls and tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    global _VERBOSE
    _VERBOSE = verbose
    if verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")


def _fail(message: str, code: int) -> NoReturn:
    print(f"Error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _connection_lost(exc: BaseException) -> bool:
    """A network that drops mid-command is the world, not a bug: say so plainly, whichever library noticed."""
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError, EOFError]
    for module, name in (("requests.exceptions", "ConnectionError"), ("paramiko", "SSHException")):
        if module in sys.modules:
            kinds.append(getattr(sys.modules[module], name))
    return isinstance(exc, tuple(kinds))


def _run(action: Callable[[Reporter], Outcome], as_json: bool = False) -> None:
    """Run one workflow and turn every outcome into output and an exit code."""
    ui: Reporter
    if as_json or not sys.stderr.isatty():
        ui = PlainReporter(sys.stderr, json_output=as_json)
    else:
        from labctl.ui import RichReporter

        ui = RichReporter()
    try:
        from labctl.config import Settings
        from labctl.validate import check_environment

        check_environment()  # a bad LABCTL_* variable or config value is named before anything happens
        Settings().check()
        outcome = action(ui)
    except LabctlError as exc:
        if _VERBOSE:
            import traceback

            traceback.print_exc()
        if as_json:
            print(json.dumps({"error": exc.render(), "exit_code": exc.exit_code}))
        _fail(exc.render(), exc.exit_code)
    except KeyboardInterrupt:
        _fail("Interrupted. Whatever was already created is recorded; run the same command again to resume.", 130)
    except Exception as exc:  # a bug or an unexpected failure: still one paragraph, traceback on request
        if _VERBOSE:
            raise
        if _connection_lost(exc):
            _fail(
                f"The connection broke off ({type(exc).__name__}: {exc}). What runs in the lab goes on without it; "
                "run the same command again once the network is back ('labctl status' says whether the lab answers).",
                1,
            )
        _fail(
            f"unexpected {type(exc).__name__}: {exc}. Run again with --verbose for the details, and please "
            "report it if it persists.",
            1,
        )
    if as_json:
        print(json.dumps(outcome.data, indent=2, default=str))
    elif outcome.text:
        print(outcome.text)
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


# ----------------------------------------------------------------------------------------------- up / down


# Options declared apart so that each command fits a screen.
HostOpt = Annotated[
    list[str] | None,
    _text(
        "--host",
        metavar="USER@HOST[:PORT]",
        help="The machine, for --target ssh; repeat for a cluster (the first is the head node).",
    ),
]
NodesOpt = Annotated[
    int | None,
    typer.Option(
        "--nodes",
        metavar="N",
        help="Machines in the lab, trained on together with torchrun (Azure: N VMs of one size; default 1).",
    ),
]
IdleActionOpt = Annotated[
    str,
    typer.Option("--idle-action", metavar="ACTION", help="stop (the default) or shutdown (power an SSH host off)."),
]
BudgetOpt = Annotated[
    str | None,
    typer.Option("--budget", metavar="USD", help="US dollars since creation after which the VM stops itself."),
]
HostKeyFingerprintOpt = Annotated[
    str | None,
    typer.Option(
        "--host-key-fingerprint",
        metavar="SHA256:...",
        help="The --host's key fingerprint, to pin it without a question.",
    ),
]
IdleStopOpt = Annotated[
    str | None,
    typer.Option(
        "--idle-stop", metavar="MINUTES", help="Minutes idle before the lab stops itself, or 0/off (Azure default: 60)."
    ),
]


@app.command("up")
def up_cmd(
    name: Annotated[str | None, _text("--name", "-n", help="Lab name (default: 'lab').")] = None,
    target: Annotated[
        Literal[TARGETS] | None,  # type: ignore[valid-type]
        typer.Option("--target", "-t", help="Where the lab runs: azure (default), ssh or local."),
    ] = None,
    hosts: HostOpt = None,
    host_key_fingerprint: HostKeyFingerprintOpt = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="A GPU machine (N-series on Azure).")] = False,
    nodes: NodesOpt = None,
    sizes: Annotated[
        list[str] | None, _text("--size", metavar="SIZE", help="VM size; repeat to give fall-backs in order.")
    ] = None,
    region: Annotated[str | None, _text("--region", metavar="REGION", help="Azure region, or 'auto'.")] = None,
    image: Annotated[str | None, _text("--image", metavar="IMAGE", help="Use this container image as is.")] = None,
    subscription: Annotated[str | None, _text("--subscription", metavar="ID", help="Azure subscription id.")] = None,
    allow_ip: Annotated[
        str | None, _text("--allow-ip", metavar="CIDR", help="CIDR allowed to reach SSH (default: your IP).")
    ] = None,
    ssh_key: Annotated[
        Path | None, typer.Option("--ssh-key", metavar="PATH", help="Your private key (default: new).")
    ] = None,
    shutdown_at: Annotated[
        str | None, _text("--shutdown-at", metavar="HH:MM", help="Daily auto-shutdown, HH:MM (19:00).")
    ] = None,
    no_shutdown: Annotated[bool, typer.Option("--no-shutdown", help="No auto-shutdown schedule.")] = False,
    spot: Annotated[bool, typer.Option("--spot", help="A Spot VM (cheaper, can be evicted).")] = False,
    idle_stop: IdleStopOpt = None,
    idle_action: IdleActionOpt = "stop",
    budget: BudgetOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and create nothing.")] = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a lab (or converge an existing one): machine, Docker, the Jupyter container.

    Examples:

    \b
      labctl up --gpu --region auto
      labctl up --gpu --nodes 2 --size Standard_NC4as_T4_v3
      labctl up --target ssh --host me@10.0.0.4 --host me@10.0.0.5
    """
    from labctl.spec import LabSpec, parse_host
    from labctl.workflows.up import up

    given = locals()

    def go(ui: Reporter) -> Outcome:
        machines = [parse_host(h) for h in hosts or []]
        asked = _options(LabSpec, given, host=machines[0] if machines else None, workers=machines[1:])
        return up(asked, ui, dry_run=dry_run)

    _run(go, as_json)


@app.command("down")
def down_cmd(
    name: NameOpt = None,
    yes: YesOpt = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Delete even with a run in progress, results not fetched, or someone else's lab."),
    ] = False,
    confirm_name: ConfirmNameOpt = None,
    no_save: Annotated[
        bool,
        typer.Option("--no-save", help="Do not copy what changed in the workspace since up to this computer first."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy your work out of the workspace, then delete everything the lab created, check nothing is left, forget it.

    What changed in /workspace since 'up', whatever its size, is copied to ./labctl-results/LAB/workspace/ first,
    each file verified; if that cannot be done, nothing is deleted (--no-save discards it).

    Example: labctl down --name cifar-gpu
    """
    from labctl.workflows.down import DownOptions, down

    opts = _options(DownOptions, locals(), save=not no_save)
    _run(lambda ui: down(opts, ui), as_json)


@app.command("idle-stop")
def idle_stop_cmd(
    minutes: Annotated[str, typer.Argument(help="Minutes idle before the lab stops itself, or 'off'.")],
    name: NameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change how long a running lab may sit idle before it stops itself (rewrites the agent's config there).

    Example: labctl idle-stop --name cifar-gpu 30
    """
    from labctl.workflows.idle import set_idle_stop

    _run(lambda ui: set_idle_stop(name, minutes, ui), as_json)


# ----------------------------------------------------------------------------------------------- your own work


@app.command("pull")
def pull_cmd(
    paths: Annotated[
        list[str] | None,
        typer.Argument(metavar="[PATH]...", help="Files or folders in /workspace (default: all of it)."),
    ] = None,
    name: NameOpt = None,
    dest: Annotated[
        Path | None, typer.Option("--to", metavar="DIR", help="Local folder (default: ./labctl-results/LAB).")
    ] = None,
    changed: Annotated[bool, typer.Option("--changed", help="Only what changed since 'up'.")] = False,
    max_size_mb: Annotated[
        int,
        typer.Option("--max-size", metavar="MB", help="Leave files larger than this in the lab unless named."),
    ] = 200,
    as_json: JsonOpt = False,
) -> None:
    """Copy your files from the lab's /workspace here, each one verified against its sha256 in the lab.

    Caches (.cache, __pycache__, .ipynb_checkpoints), labctl's own folders (runs/, .labctl/) and files larger
    than --max-size stay in the lab. The copy lands in DIR/workspace/, with MANIFEST.json and SHA256SUMS
    beside it ('sha256sum -c SHA256SUMS' checks it again).

    Example: labctl pull analysis.ipynb src/
    """
    from labctl.workflows.workspace import PullOptions, pull

    opts = _options(PullOptions, locals())
    _run(lambda ui: pull(opts, ui), as_json)


@app.command("push")
def push_cmd(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH...", help="Local files or folders to send.")],
    name: NameOpt = None,
    to: Annotated[
        str, typer.Option("--to", metavar="DIR", help="Folder in /workspace (default: /workspace itself).")
    ] = "",
    as_json: JsonOpt = False,
) -> None:
    """Copy local files or folders into the lab's /workspace and check each one's sha256 there.

    Example: labctl push train.py data/labels.csv --to project
    """
    from labctl.workflows.workspace import PushOptions, push

    opts = _options(PushOptions, locals())
    _run(lambda ui: push(opts, ui), as_json)


# ----------------------------------------------------------------------------------------------- use


@app.command("open")
def open_cmd(
    name: NameOpt = None,
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="Local port for the tunnel (next free if busy).")
    ] = 8888,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the URL and exit (for a tunnel held elsewhere).")
    ] = False,
    browser: Annotated[bool, typer.Option("--browser", help="Open the URL in the browser.")] = False,
    forward: Annotated[
        list[int] | None,
        typer.Option(
            "--forward",
            metavar="PORT",
            help="Also forward this port of the lab (TensorBoard 6006, MLflow 5000) to this computer's "
            "127.0.0.1 through the same tunnel; repeatable. The server must listen on all the lab's addresses.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Tunnel to the lab's Jupyter and print its URL with the token; Ctrl-C closes the tunnel.

    Example: labctl open --browser --forward 6006
    """
    from labctl.workflows.open import OpenOptions, open_lab

    opts = _options(OpenOptions, locals(), json_out=as_json)
    _run(lambda ui: open_lab(opts, ui), as_json)


GpusOpt = Annotated[
    int | None,
    typer.Option(
        "--gpus",
        metavar="N",
        help="GPUs to train on, one process each under torchrun (default: every GPU of the machine; a CPU "
        "machine and --notebook run one process).",
    ),
]
RunNodesOpt = Annotated[
    int | None,
    typer.Option("--nodes", metavar="N", help="Machines of the lab to train on together (default: all of them)."),
]
NotebookArg = Annotated[
    str | None,
    typer.Argument(
        metavar="[NOTEBOOK]",
        help="With --notebook: your own .ipynb, on this computer or in /workspace.",
        show_default=False,
    ),
]


def _with_lab_options(command: Callable[..., None]) -> Callable[..., None]:
    """The lab's training options (cifarlab's own table, ``LAB_OPTIONS``) as options of ``command`` after its
    first two; their values reach its ``**training``."""
    from labctl.workflows.runlab_options import LAB_OPTIONS

    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    lab = [
        inspect.Parameter(
            key,
            inspect.Parameter.KEYWORD_ONLY,
            default=option.default,
            annotation=Annotated[
                (Literal[option.choices] if option.choices else option.type) | None,
                typer.Option("--" + key.replace("_", "-"), metavar=option.run_lab, help=option.help),
            ],
        )
        for key, option in LAB_OPTIONS.items()
        if option.run_lab
    ]
    command.__signature__ = inspect.Signature([*own[:2], *lab, *own[2:]])  # type: ignore[attr-defined]
    return command


@app.command("run-lab")
@_with_lab_options
def run_lab_cmd(
    *,
    name: NameOpt = None,
    here: Annotated[
        bool, typer.Option("--here", help="Run in this Python environment (no cloud, no container).")
    ] = False,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            metavar="DATA",
            help="cifar10 (download), synthetic[:N], a path to train/<class>/*.jpg or .tar.gz here, or "
            "machine:PATH for data already on the lab's machine.",
            callback=_not_blank,
            autocompletion=lambda: ["cifar10", "synthetic"],
        ),
    ] = None,
    gpus: GpusOpt = None,
    nodes: RunNodesOpt = None,
    notebook: Annotated[
        bool,
        typer.Option("--notebook", help="Execute the notebook headless instead (or NOTEBOOK, your own) and keep it."),
    ] = False,
    notebook_file: NotebookArg = None,
    detach: DetachOpt = False,
    out: Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Where results go.")] = None,
    extra: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Extra training option KEY=VALUE (repeatable)."),
    ] = None,
    as_json: JsonOpt = False,
    **training: Any,
) -> None:
    """Train the bundled CIFAR-10 classifier on the lab, stream progress, fetch the results.

    The run goes on in the lab if the connection drops: 'labctl logs -f' reattaches, 'labctl fetch' brings
    the results, 'labctl cancel' stops it (its checkpoint is saved). Without a test/ folder, --holdout sets the
    share of train/ kept aside for evaluation.

    Examples:

    \b
      labctl run-lab --epochs 10 --model fast
      labctl run-lab --notebook my-experiment.ipynb
      labctl run-lab --nodes 2   # a lab on two machines: one model trained on both
    """
    from labctl.workflows.runlab import run_lab
    from labctl.workflows.runlab_options import RunLabOptions

    opts = _options(
        RunLabOptions,
        locals(),
        notebook=notebook or notebook_file is not None,
        training={key: value for key, value in training.items() if value is not None},
    )
    _run(lambda ui: run_lab(opts, ui), as_json)


@app.command("run", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
def run_cmd(
    script: Annotated[str, typer.Argument(metavar="SCRIPT", help="Your .py, on this computer or in /workspace.")],
    args: Annotated[
        list[str] | None, typer.Argument(metavar="[ARGS]...", help="Arguments for the script.", show_default=False)
    ] = None,
    name: NameOpt = None,
    detach: DetachOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Run your own Python script in the lab container, the way run-lab runs the lab.

    It runs detached in /workspace/runs/RUN/ (its working folder, also $LAB_OUT), with /workspace on its import
    path; its output streams here, 'labctl logs -f' reattaches, and its folder comes back verified at the end.
    Options for labctl go before SCRIPT; everything after it goes to the script.

    Example: labctl run --name cifar-gpu train.py --epochs 5
    """
    from labctl.workflows.userrun import RunScriptOptions, run_script

    opts = _options(RunScriptOptions, locals())
    _run(lambda ui: run_script(opts, ui), as_json)


@app.command("cancel")
def cancel_cmd(
    run: Annotated[
        str | None,
        typer.Argument(
            metavar="[RUN]", help="Run id (default: the running one).", show_default=False, callback=_run_id
        ),
    ] = None,
    name: NameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop a run: it gets SIGTERM, saves its checkpoint and ends; says what was kept.

    Example: labctl cancel 20260101-120000-ab12
    """
    from labctl.workflows.userrun import cancel

    _run(lambda ui: cancel(name, run, ui), as_json)


@app.command("status")
def status_cmd(name: NameOpt = None, as_json: JsonOpt = False) -> None:
    """What runs where, since when, and what it costs; with several labs and no --name, one table of all.

    Example: labctl status
    """
    from labctl.workflows.status import status

    _run(lambda ui: status(name, ui), as_json)


@app.command("list")
def list_cmd(
    subscription: Annotated[str | None, _text("--subscription", metavar="ID", help="Azure subscription id.")] = None,
    local_only: Annotated[bool, typer.Option("--local", help="Only labs recorded on this computer.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every lab: those recorded here and those found in Azure by their tags.

    Example: labctl list --local
    """
    from labctl.validate import check_subscription
    from labctl.workflows.inventory import list_labs

    def go(ui: Reporter) -> Outcome:
        if subscription is not None:
            check_subscription(subscription)
        return list_labs(subscription, local_only, ui)

    _run(go, as_json)


@app.command("stop")
def stop_cmd(
    name: NameOpt = None,
    yes: YesOpt = False,
    force: ForceOwnerOpt = False,
    confirm_name: ConfirmNameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deallocate the lab's VM: no compute charges until 'start'. A run still training is asked about (--yes: stopped).

    Example: labctl stop --name cifar-gpu
    """
    from labctl.workflows.ownership import Override
    from labctl.workflows.power import stop

    _run(lambda ui: stop(name, ui, Override(force, confirm_name), yes=yes), as_json)


@app.command("start")
def start_cmd(
    name: NameOpt = None, force: ForceOwnerOpt = False, confirm_name: ConfirmNameOpt = None, as_json: JsonOpt = False
) -> None:
    """Start a stopped lab again, with the same IP and keys.

    Example: labctl start --name cifar-gpu
    """
    from labctl.workflows.ownership import Override
    from labctl.workflows.power import start

    _run(lambda ui: start(name, ui, Override(force, confirm_name)), as_json)


@app.command("logs")
def logs_cmd(
    run: RunArg = None,
    name: NameOpt = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the run ends.")] = False,
) -> None:
    """Show a run's log from the start; --follow reattaches to a live run.

    Example: labctl logs -f
    """
    from labctl.workflows.runlab import logs

    _run(lambda ui: logs(name, run, follow, ui))


@app.command("runs")
def runs_cmd(
    name: NameOpt = None,
    here: Annotated[bool, typer.Option("--here", help="Only the runs made here with run-lab --here.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The lab's runs with their state and accuracy, and the runs made here with run-lab --here.

    Example: labctl runs --json
    """
    from labctl.workflows.runlab import list_runs

    _run(lambda ui: list_runs(name, ui, here_only=here), as_json)


@app.command("fetch")
def fetch_cmd(run: RunArg = None, name: NameOpt = None, as_json: JsonOpt = False) -> None:
    """Bring a run's results back and verify them.

    Example: labctl fetch 20260101-120000-ab12
    """
    from labctl.workflows.runlab import fetch

    _run(lambda ui: fetch(name, run, ui), as_json)


@app.command("ssh", context_settings={"allow_interspersed_args": False})
def ssh_cmd(
    command: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[CMD]...", help="One command to run instead of a shell (after --).", show_default=False
        ),
    ] = None,
    name: NameOpt = None,
) -> None:
    """Open a shell on the lab's machine, or run one command there (with the pinned host key).

    Example: labctl ssh -- nvidia-smi
    """
    from labctl.workflows.shell import ssh_shell

    _run(lambda ui: ssh_shell(name, ui, list(command or [])))


def _ask(question: str) -> bool | None:
    """A yes/no question at a terminal; None where no one can answer (a script, a pipe)."""
    return typer.confirm(question, default=False) if sys.stdin.isatty() else None


@app.command("ssh-config")
def ssh_config_cmd(
    name: NameOpt = None,
    local_port: Annotated[
        int | None,
        typer.Option("--local-port", metavar="PORT", help="Port here for Jupyter (default: the lab's own)."),
    ] = None,
    include: Annotated[
        bool, typer.Option("--include", help="Add the Include line to ~/.ssh/config without asking.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a 'Host labctl-LAB' entry for ssh, scp, rsync and VS Code, with the lab's pinned host key.

    The entry goes to ~/.ssh/labctl/config (yours is not edited); labctl asks once before adding one Include
    line at the top of ~/.ssh/config. 'labctl down' removes the entry.

    Example: labctl ssh-config --name cifar-gpu && ssh labctl-cifar-gpu
    """
    from labctl.workflows.shell import ssh_config

    _run(lambda ui: ssh_config(name, ui, _ask, local_port=local_port, include=include), as_json)


@app.command("config")
def config_cmd(
    trust: Annotated[
        bool, typer.Option("--trust", help="Trust ./labctl.toml as it is now, so it may set image, allow_ip, ...")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The effective settings and where each one came from.

    Example: labctl config --json
    """
    from labctl.config import show_config, trust_project

    _run(lambda ui: trust_project() if trust else show_config(), as_json)


for _info in app.registered_commands:
    _info.cls = LabctlCommand  # every command gets the same readable help


def main() -> None:
    try:
        app()
    finally:
        gc.freeze()  # no full collection of the Azure SDK's objects at exit: a second saved on a busy machine
