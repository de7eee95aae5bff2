"""The command line: parse, call one workflow, render. No cloud, SSH or Docker logic lives here.

Heavy libraries (azure, paramiko, docker, torch) are imported inside the workflows, so ``labctl --help``
starts instantly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from labctl import __version__
from labctl.errors import LabctlError
from labctl.ui import Outcome, PlainReporter, Reporter

app = typer.Typer(
    name="labctl",
    help="A PyTorch + Jupyter lab on Azure (GPU or CPU), an SSH host or this computer: up, open, run-lab, down.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_VERBOSE = False


def _not_blank(value: str | None) -> str | None:
    """An option given as '' or spaces is a mistake, never a way to ask for the default."""
    if value is not None and not str(value).strip():
        raise typer.BadParameter("is empty; give a value, or leave the option out for the default.")
    return value


def _text(*names: str, help: str) -> Any:
    """A text option that refuses '' and blanks."""
    return typer.Option(*names, help=help, callback=_not_blank)


def _none_blank(values: list[str] | None) -> list[str] | None:
    for value in values or []:
        _not_blank(value)
    return values


def _run_id(value: str | None) -> str | None:
    if value is not None:
        from labctl.validate import check_run_id

        try:
            check_run_id(value, "the run id")
        except LabctlError as exc:
            raise typer.BadParameter(exc.render()) from None
    return value


# Options with fixed choices: refused by the parser at once, and completed by the shell.
class TargetChoice(str, Enum):
    azure = "azure"
    ssh = "ssh"
    local = "local"


class ModelChoice(str, Enum):
    tutorial = "tutorial"
    fast = "fast"


class OptimizerChoice(str, Enum):
    sgd = "sgd"
    adamw = "adamw"


class DeviceChoice(str, Enum):
    auto = "auto"
    cuda = "cuda"
    mps = "mps"
    cpu = "cpu"


def _value(choice: Enum | None) -> str | None:
    return None if choice is None else str(choice.value)


NameOpt = Annotated[
    str | None, typer.Option("--name", "-n", help="Which lab (default: the only one).", callback=_not_blank)
]
RunArg = Annotated[str | None, typer.Argument(help="Run id (default: the latest).", callback=_run_id)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
ForceOwnerOpt = Annotated[bool, typer.Option("--force", help="Act on a lab someone else owns (with --confirm-name).")]
ConfirmNameOpt = Annotated[
    str | None,
    typer.Option("--confirm-name", help="With --force: the lab's name, to act on a lab someone else owns."),
]


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


def _run(action: Callable[[Reporter], Outcome], as_json: bool = False) -> None:
    """Run one workflow and turn every outcome into output and an exit code."""
    ui: Reporter
    if as_json or not sys.stderr.isatty():
        ui = PlainReporter(sys.stderr)
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


@app.command("up")
def up_cmd(
    name: Annotated[str | None, _text("--name", "-n", help="Lab name (default: 'lab').")] = None,
    target: Annotated[
        TargetChoice | None, typer.Option("--target", "-t", help="Where the lab runs: azure (default), ssh or local.")
    ] = None,
    host: Annotated[str | None, _text("--host", help="user@host[:port] for --target ssh.")] = None,
    host_key_fingerprint: Annotated[
        str | None, _text("--host-key-fingerprint", help="SHA256:... of the --host's key, to pin it unasked.")
    ] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="A GPU machine (N-series on Azure).")] = False,
    size: Annotated[
        list[str] | None,
        typer.Option("--size", help="VM size; repeat to give fall-backs in order.", callback=_none_blank),
    ] = None,
    region: Annotated[str | None, _text("--region", help="Azure region, or 'auto'.")] = None,
    image: Annotated[str | None, _text("--image", help="Use this container image as is.")] = None,
    subscription: Annotated[str | None, _text("--subscription", help="Azure subscription id.")] = None,
    allow_ip: Annotated[str | None, _text("--allow-ip", help="CIDR allowed to reach SSH (default: your IP).")] = None,
    ssh_key: Annotated[Path | None, typer.Option("--ssh-key", help="Your private key (default: new).")] = None,
    shutdown_at: Annotated[str | None, _text("--shutdown-at", help="Daily auto-shutdown, HH:MM (19:00).")] = None,
    no_shutdown: Annotated[bool, typer.Option("--no-shutdown", help="No auto-shutdown schedule.")] = False,
    spot: Annotated[bool, typer.Option("--spot", help="A Spot VM (cheaper, can be evicted).")] = False,
    idle_stop: Annotated[
        str | None,
        typer.Option("--idle-stop", help="Minutes idle before the lab stops itself, or 0/off (Azure default: 60)."),
    ] = None,
    idle_action: Annotated[
        str, typer.Option("--idle-action", help="stop (the default) or shutdown (power an SSH host off).")
    ] = "stop",
    budget: Annotated[
        str | None, typer.Option("--budget", help="US dollars since creation after which the VM stops itself.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and create nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a lab (or converge an existing one): machine, Docker, the Jupyter container.

    Example: labctl up --gpu --region auto
    """

    def go(ui: Reporter) -> Outcome:
        from labctl.spec import LabSpec, parse_host
        from labctl.workflows.up import up

        asked = LabSpec(
            name=name or "",
            target=_value(target) or "",
            host=parse_host(host) if host else None,
            gpu=gpu,
            sizes=list(size or []),
            region=region,
            image=image,
            subscription=subscription,
            allow_ip=allow_ip,
            ssh_key=ssh_key,
            shutdown_at=shutdown_at,
            no_shutdown=no_shutdown,
            spot=spot,
            yes=yes,
            host_key_fingerprint=host_key_fingerprint,
            idle_stop=idle_stop,  # type: ignore[arg-type]  # text until build_spec parses it
            idle_action=idle_action,
            budget=budget,  # type: ignore[arg-type]
        )
        return up(asked, ui, dry_run=dry_run)

    _run(go, as_json)


@app.command("down")
def down_cmd(
    name: NameOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Delete even with a run in progress, results not fetched, or someone else's lab."),
    ] = False,
    confirm_name: ConfirmNameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete everything the lab created, check nothing is left, and forget it."""

    def go(ui: Reporter) -> Outcome:
        from labctl.workflows.down import DownOptions, down

        return down(DownOptions(name=name, yes=yes, force=force, confirm_name=confirm_name), ui)

    _run(go, as_json)


@app.command("idle-stop")
def idle_stop_cmd(
    minutes: Annotated[str, typer.Argument(help="Minutes idle before the lab stops itself, or 'off'.")],
    name: NameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change how long a running lab may sit idle before it stops itself (rewrites the agent's config there)."""

    def go(ui: Reporter) -> Outcome:
        from labctl.workflows.idle import set_idle_stop

        return set_idle_stop(name, minutes, ui)

    _run(go, as_json)


# ----------------------------------------------------------------------------------------------- use


@app.command("open")
def open_cmd(
    name: NameOpt = None,
    port: Annotated[int, typer.Option("--port", help="Local port for the tunnel (next free if busy).")] = 8888,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the URL and exit (for a tunnel held elsewhere).")
    ] = False,
    browser: Annotated[bool, typer.Option("--browser", help="Open the URL in the browser.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Tunnel to the lab's Jupyter and print its URL with the token; Ctrl-C closes the tunnel."""

    def go(ui: Reporter) -> Outcome:
        from labctl.workflows.open import OpenOptions, open_lab

        return open_lab(OpenOptions(name=name, port=port, print_only=print_only, browser=browser, json_out=as_json), ui)

    _run(go, as_json)


@app.command("run-lab")
def run_lab_cmd(
    name: NameOpt = None,
    here: Annotated[
        bool, typer.Option("--here", help="Run in this Python environment (no cloud, no container).")
    ] = False,
    model: Annotated[
        ModelChoice, typer.Option("--model", help="tutorial (the notebook's CNN) or fast.")
    ] = ModelChoice.tutorial,
    epochs: Annotated[float | None, typer.Option("--epochs", help="Training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Batch size.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    optimizer: Annotated[OptimizerChoice | None, typer.Option("--optimizer", help="sgd or adamw.")] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="cifar10 (download), synthetic[:N], a path to train/<class>/*.jpg or .tar.gz here, or "
            "machine:PATH for data already on the lab's machine.",
            callback=_not_blank,
            autocompletion=lambda: ["cifar10", "synthetic"],
        ),
    ] = None,
    device: Annotated[DeviceChoice | None, typer.Option("--device", help="auto, cuda, mps or cpu.")] = None,
    gpus: Annotated[
        int | None,
        typer.Option(
            "--gpus",
            help="GPUs to train on, one process each under torchrun (default: every GPU of the machine; a CPU "
            "machine and --notebook run one process).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    notebook: Annotated[
        bool, typer.Option("--notebook", help="Execute the notebook headless instead and keep the copy.")
    ] = False,
    detach: Annotated[bool, typer.Option("--detach", help="Start the run and return.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Where results go.")] = None,
    extra: Annotated[
        list[str] | None, typer.Option("--set", help="Extra training option KEY=VALUE (repeatable).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train the bundled CIFAR-10 classifier on the lab, stream progress, fetch the results."""

    def go(ui: Reporter) -> Outcome:
        from labctl.workflows.runlab import run_lab
        from labctl.workflows.runlab_options import RunLabOptions

        opts = RunLabOptions(
            name=name,
            here=here,
            model=str(model.value),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=_value(optimizer),
            data=data,
            device=_value(device),
            gpus=gpus,
            seed=seed,
            notebook=notebook,
            detach=detach,
            out=out,
            extra=list(extra or []),
        )
        return run_lab(opts, ui)

    _run(go, as_json)


@app.command("status")
def status_cmd(name: NameOpt = None, as_json: JsonOpt = False) -> None:
    """What runs where, since when, and what it costs."""

    def go(ui: Reporter) -> Outcome:
        from labctl.workflows.status import status

        return status(name, ui)

    _run(go, as_json)


@app.command("list")
def list_cmd(
    subscription: Annotated[
        str | None, typer.Option("--subscription", help="Azure subscription id.", callback=_not_blank)
    ] = None,
    local_only: Annotated[bool, typer.Option("--local", help="Only labs recorded on this computer.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Every lab: those recorded here and those found in Azure by their tags."""

    def go(ui: Reporter) -> Outcome:
        from labctl.validate import check_subscription
        from labctl.workflows.inventory import list_labs

        if subscription is not None:
            check_subscription(subscription)
        return list_labs(subscription, local_only, ui)

    _run(go, as_json)


@app.command("stop")
def stop_cmd(
    name: NameOpt = None, force: ForceOwnerOpt = False, confirm_name: ConfirmNameOpt = None, as_json: JsonOpt = False
) -> None:
    """Deallocate the lab's VM: no compute charges until 'start'."""

    def go(ui: Reporter) -> Outcome:
        from labctl.workflows.ownership import Override
        from labctl.workflows.power import stop

        return stop(name, ui, Override(force, confirm_name))

    _run(go, as_json)


@app.command("start")
def start_cmd(
    name: NameOpt = None, force: ForceOwnerOpt = False, confirm_name: ConfirmNameOpt = None, as_json: JsonOpt = False
) -> None:
    """Start a stopped lab again, with the same IP and keys."""

    def go(ui: Reporter) -> Outcome:
        from labctl.workflows.ownership import Override
        from labctl.workflows.power import start

        return start(name, ui, Override(force, confirm_name))

    _run(go, as_json)


@app.command("logs")
def logs_cmd(
    run: RunArg = None,
    name: NameOpt = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until the run ends.")] = False,
) -> None:
    """Show a run's log from the start; --follow reattaches to a live run."""

    def go(ui: Reporter) -> Outcome:
        from labctl.workflows.runlab import logs

        return logs(name, run, follow, ui)

    _run(go)


@app.command("runs")
def runs_cmd(name: NameOpt = None, as_json: JsonOpt = False) -> None:
    """The lab's runs with their state and accuracy."""

    def go(ui: Reporter) -> Outcome:
        from labctl.workflows.runlab import list_runs

        return list_runs(name, ui)

    _run(go, as_json)


@app.command("fetch")
def fetch_cmd(
    run: RunArg = None,
    name: NameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Bring a run's results back and verify them."""

    def go(ui: Reporter) -> Outcome:
        from labctl.workflows.runlab import fetch

        return fetch(name, run, ui)

    _run(go, as_json)


@app.command("ssh")
def ssh_cmd(name: NameOpt = None) -> None:
    """Open a shell on the lab's machine (with the pinned host key)."""

    def go(ui: Reporter) -> Outcome:
        from labctl.workflows.shell import ssh_shell

        return ssh_shell(name, ui)

    _run(go)


@app.command("config")
def config_cmd(
    trust: Annotated[
        bool, typer.Option("--trust", help="Trust ./labctl.toml as it is now, so it may set image, allow_ip, ...")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The effective settings and where each one came from."""

    def go(ui: Reporter) -> Outcome:
        from labctl.config import show_config, trust_project

        return trust_project() if trust else show_config()

    _run(go, as_json)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
