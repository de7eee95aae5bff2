"""The lab's image and containers on any Docker engine, and ``LabContainer``: argument lists and files in one."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import posixpath
import re
import tarfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from labctl.errors import LabctlError, NotFound
from labctl.files import lab_dir, template
from labctl.ui import Reporter

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

BASE_IMAGE_ENV = "LABCTL_BASE_IMAGE"
# The pinned pytorch/pytorch runtime tag; templates/Dockerfile.deps's ARG default says the same (a test checks).
DEFAULT_BASE_IMAGE = "pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime"
IMAGE_REPO = "labctl-lab"
DEPS_REPO = "labctl-lab-deps"
PACKAGES_REPO = "labctl-lab-packages"  # the lab image plus the user's packages (up --requirements)
WORKSPACE = "/workspace"
JUPYTER_PORT = 8888  # inside the container; published on the machine's 127.0.0.1:record.jupyter_port
JUPYTER_PORT_ENV = "LABCTL_JUPYTER_PORT"  # where Jupyter listens on the host's network (several machines)
NOTEBOOK = "first_pytorch_classifier.ipynb"
LAB_LABEL = "labctl.lab"
CONFIG_LABEL = "labctl.config"
NODE_LABEL = "labctl.node"  # on node i > 0 of a lab on several machines
PACKAGES_LABEL = "labctl.packages-of"  # on a packages layer: the lab that made it, whose down removes it
# Caches and checkpoints: never in the lab image, never pulled or pushed.
EXCLUDED_DIRS = (".cache", "__pycache__", ".ipynb_checkpoints", ".Trash-0", ".pytest_cache")


def jupyter_command(port: int | None = None) -> list[str]:
    # On the host's network (``port``): its 127.0.0.1 only, and no other port (labctl picks the next one).
    if port is None:
        where = ["--ip=0.0.0.0", f"--port={JUPYTER_PORT}"]
    else:
        where = ["--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0"]
    return ["jupyter", "lab", *where, "--no-browser", "--allow-root", f"--ServerApp.root_dir={WORKSPACE}"]


def ask_jupyter(within: float = 0) -> list[str]:
    """Every 0.2 s for ``within`` seconds in one process: one process per ask took CPU from Jupyter's own start."""
    return [
        "python",
        "-c",
        "import os,sys,time,urllib.request as u\n"
        f"r=u.Request('http://127.0.0.1:'+os.environ.get('{JUPYTER_PORT_ENV}','{JUPYTER_PORT}')+'/api/status',"
        "headers={'Authorization':'token '+os.environ['JUPYTER_TOKEN']})\n"
        f"d=time.monotonic()+{within:.1f}\n"
        "while True:\n try:\n  if u.urlopen(r,timeout=5).status==200: sys.exit(0)\n except Exception: pass\n"
        " if time.monotonic()>d: sys.exit(1)\n time.sleep(0.2)\n",
    ]


_SECOND = 1_000_000_000  # Docker counts a health check's times in nanoseconds
HEALTHCHECK: dict[str, Any] = {
    "test": ["CMD", *ask_jupyter()],
    "interval": 15 * _SECOND,
    "timeout": 10 * _SECOND,
    "retries": 3,
    "start_period": 120 * _SECOND,
}


def container_name(lab: str, node: int = 0) -> str:
    # Node i > 0 holds a '.', which no lab name does: two nodes on one engine, or a node and a lab, never clash.
    return f"labctl-{lab}" if node == 0 else f"labctl-{lab}.node{node}"


def volume_name(lab: str, node: int = 0) -> str:
    return f"{container_name(lab, node)}-workspace"


def effective_base_image() -> str:
    """Its value reaches cloud-init and the engine: it is checked with every setting before any command
    (``Settings.check``), and `up` reads it first, as a project file not trusted may not set it."""
    from labctl.spec import Settings

    return Settings().get("base_image") or DEFAULT_BASE_IMAGE


def lab_fingerprint(root: Path | None = None) -> str:
    root = root or lab_dir()
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = PurePosixPath(path.relative_to(root).as_posix())
        if not set(EXCLUDED_DIRS).intersection(rel.parts[:-1]):  # what tar_of packs
            digest.update(str(rel).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def tar_of(
    entries: Mapping[str, Path | bytes], out: IO[bytes] | None = None, skipped: list[str] | None = None
) -> bytes:
    """Owned by root, as ``docker cp`` makes them. Caches, devices and links out of their folder are left out (named in
    ``skipped``); a second name, hard or symbolic, of a file in the folder (a dataset may link its images) is a copy."""
    left_out = [] if skipped is None else skipped

    def keep(source: Path, name: str, info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        local = source / PurePosixPath(info.name).relative_to(name)
        inside = info.issym() and local.resolve().is_relative_to(source.resolve()) and local.resolve().is_file()
        if info.islnk() or inside:
            found = local.stat()  # the file the name leads to
            info.type, info.linkname, info.size, info.mode = tarfile.REGTYPE, "", found.st_size, found.st_mode & 0o777
        if (info.isdir() and local.name in EXCLUDED_DIRS) or not (info.isfile() or info.isdir()):
            left_out.append(str(local))
            return None
        info.uid, info.gid, info.uname, info.gname = 0, 0, "root", "root"
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer if out is None else out, mode="w") as tar:
        for name, source in entries.items():
            if isinstance(source, bytes):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(source), 0o644, int(time.time())
                info.uname = info.gname = "root"
                tar.addfile(info, io.BytesIO(source))
                continue
            try:
                tar.add(str(source), name, filter=functools.partial(keep, source, name))
            except OSError as exc:
                if exc.filename is not None:
                    raise
                raise LabctlError(
                    f"{source} changed while it was being packed.", hint="Run the command again once it is saved."
                ) from None
    return buffer.getvalue()


def deps_tag(base: str | None = None) -> str:
    """The VM's boot-time build and labctl both find the image by this hash, with no cache to share."""
    identity = template("Dockerfile.deps").read_bytes() + b"|base=" + (base or effective_base_image()).encode()
    return f"{DEPS_REPO}:{hashlib.sha256(identity).hexdigest()[:16]}"


def build_context() -> tuple[bytes, str]:
    dockerfile = template("Dockerfile")
    identity = f"{lab_fingerprint()}|{hashlib.sha256(dockerfile.read_bytes()).hexdigest()}|deps={deps_tag()}"
    tag = f"{IMAGE_REPO}:{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
    return tar_of({"Dockerfile": dockerfile, "lab": lab_dir()}), tag


def _found(collection: Any, name: str) -> Any | None:
    import docker.errors

    try:
        return collection.get(name)
    except docker.errors.NotFound:
        return None


def has_image(client: docker.DockerClient, ref: str) -> bool:
    return _found(client.images, ref) is not None


def ensure_image(client: docker.DockerClient, ui: Reporter, image: str | None = None) -> str:
    import docker.errors

    if image:
        if not has_image(client, image):
            with ui.step(f"Pulling {image}"):
                try:
                    client.images.pull(image)
                except docker.errors.APIError as exc:
                    raise LabctlError(
                        f"The image {image} could not be pulled ({exc.explanation or exc}).",
                        hint="Check its name and tag, and that the machine can reach its registry.",
                    ) from None
        return image
    context, tag = build_context()
    if has_image(client, tag):
        ui.info(f"Lab image {tag} is already built.")
        return tag
    base = effective_base_image()
    deps = deps_tag(base)
    if has_image(client, deps):
        ui.info(f"Dependency image {deps} is ready.")
    else:
        with ui.step(f"Building the dependency image {deps} FROM {base} (first time only; a few minutes)"):
            _build(
                client, ui, tar_of({"Dockerfile": template("Dockerfile.deps").read_bytes()}), deps, {"BASE_IMAGE": base}
            )
    with ui.step(f"Building the lab image {tag} FROM {deps}"):
        _build(client, ui, context, tag, {"DEPS_IMAGE": deps})
    return tag


# pip in a container of the lab image, reading the requirements from a file it removes before the container is
# committed: a file copied into a build stays in its layer (and an index password in it with it), and a build
# secret needs BuildKit, which the engine's API the SDK speaks does not offer.
REQUIREMENTS_FILE = "/tmp/labctl-requirements.txt"
PIP_INSTALL = (
    "sh",
    "-c",
    'python -m pip install --no-cache-dir --disable-pip-version-check -r "$0"; done=$?; rm -f "$0"; exit $done',
    REQUIREMENTS_FILE,
)
PIP_HINT = (
    "Correct it in the requirements file (or, for an index the machine cannot reach, its network) and run "
    "'labctl up --requirements FILE' again. The lab keeps its image and container as they were."
)


def with_packages(client: docker.DockerClient, ui: Reporter, lab: str, image: str, requirements: str) -> str:
    """The user's packages as a layer of their own over ``image``, found again by a hash of both."""
    identity = f"{client.images.get(image).id}|{PIP_INSTALL}|{requirements}"
    tag = f"{PACKAGES_REPO}:{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
    if has_image(client, tag):
        ui.info(f"Your packages are installed already ({tag}).")
        return tag
    with ui.step(f"Installing your packages into {tag} FROM {image}"):
        installer = client.containers.create(image, list(PIP_INSTALL))
        try:
            installer.put_archive(
                posixpath.dirname(REQUIREMENTS_FILE),
                tar_of({posixpath.basename(REQUIREMENTS_FILE): requirements.encode()}),
            )
            installer.start()
            if status := installer.wait()["StatusCode"]:
                lines = installer.logs().decode(errors="replace").splitlines()
                raise _failed(f"Installing your packages failed: pip ended with status {status}.", lines, PIP_HINT)
            command = client.images.get(image).attrs.get("Config", {}).get("Cmd") or []
            made = [f"CMD {json.dumps(command)}", f"LABEL {PACKAGES_LABEL}={json.dumps(lab)}"]  # the lab image's CMD
            installer.commit(*tag.split(":"), changes=made)
        finally:
            installer.remove(force=True)
    return tag


def _failed(what: str, lines: list[str], hint: str) -> LabctlError:
    """pip's ERROR lines and the last lines said, with an index's password masked."""
    said = [line for line in lines[:-20] if line.startswith("ERROR:")] + lines[-20:]
    text = re.sub(r"://[^/@\s]+@", "://****@", "\n".join([what, *said]))
    return LabctlError(text, hint=hint)


def _build(client: docker.DockerClient, ui: Reporter, context: bytes, tag: str, buildargs: dict[str, str]) -> None:
    step: list[str] = []  # the lines of the step under way: what its failure says
    stream = client.api.build(
        fileobj=io.BytesIO(context), custom_context=True, tag=tag, buildargs=buildargs, forcerm=True, decode=True
    )
    for chunk in stream:
        if "error" in chunk:
            raise _failed(
                f"Building the image {tag} failed: {str(chunk['error']).strip()}",
                step,
                hint="If pip could not reach PyPI, check the machine's network; then run 'labctl up' again.",
            )
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(chunk.get("stream", ""))).rstrip()  # the colour of a step's stderr
        if text.startswith("Step "):
            step = []
            ui.info(f"  {text[:160]}")
        step.extend(text.splitlines())


def _sharing(gpu: bool, several_nodes: bool = False) -> dict[str, Any]:
    # NCCL needs the host's IPC (Docker's 64 MB /dev/shm is too small), the data loader /dev/shm; ranks on several
    # nodes meet at the machines' private addresses, so on the host's network.
    options: dict[str, Any] = {"ipc_mode": "host"} if gpu else {"shm_size": "2g"}
    return {**options, "network_mode": "host"} if several_nodes else options


@dataclass(frozen=True)
class ContainerSpec:
    """What a node's container is made from: one made otherwise is replaced."""

    lab: str
    image: str
    gpu: bool
    node: int = 0
    token: str = ""  # node 0's Jupyter token
    port: int = 0  # node 0's Jupyter, on the machine's 127.0.0.1
    several_nodes: bool = False

    def config_hash(self, image_id: str) -> str:
        if self.node:
            made = f"worker|{image_id}|{self.gpu}|{sorted(_sharing(self.gpu, True).items())}"
        else:
            jupyter = jupyter_command(self.port if self.several_nodes else None)
            made = f"{image_id}|{self.token}|{self.port}|{self.gpu}|{jupyter}"
            made += f"|{sorted(_sharing(self.gpu).items())}" if self.gpu else ""
            made += "|host-network" if self.several_nodes else ""
        return hashlib.sha256(made.encode()).hexdigest()[:16]


def find_container(client: docker.DockerClient, lab: str, node: int = 0) -> Container | None:
    return _found(client.containers, container_name(lab, node))


def lab_address(container: Container) -> str:
    """Where the machine reaches a server in the container; only the machine can reach it."""
    if container.attrs.get("HostConfig", {}).get("NetworkMode") == "host":
        return "127.0.0.1"
    networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
    found = [str(n["IPAddress"]) for n in networks.values() if n.get("IPAddress")]
    if not found:
        raise LabctlError(
            f"The lab container {container.name} has no address on the machine (is it running?).",
            hint="Run 'labctl up' to repair the lab, then 'labctl open' again.",
        )
    return found[0]


def jupyter_answers(container: Container, within: float = 0) -> bool:
    try:
        return LabContainer(container).exec(ask_jupyter(within), check=False).exit_code == 0
    except LabctlError:
        return False


def is_current(container: Container, client: docker.DockerClient, spec: ContainerSpec) -> bool:
    return (
        container.status == "running"
        and container.labels.get(CONFIG_LABEL) == spec.config_hash(client.images.get(spec.image).id)
        and (spec.node > 0 or jupyter_answers(container))
    )


class PortBusy(LabctlError):
    def __init__(self, port: int) -> None:
        super().__init__(f"Port {port} is already taken on the machine's loopback.")


def wait_ready(container: Container, timeout: float = 180.0, *, port: int | None = None) -> None:
    """``port``: Jupyter listens on the host's network there, and a taken port is PortBusy."""
    deadline = time.monotonic() + timeout
    container.reload()
    # Restarted twice: Jupyter keeps exiting and Docker keeps restarting it, so waiting longer will not help.
    while container.status in ("created", "running", "restarting") and int(container.attrs.get("RestartCount", 0)) < 2:
        # At most 30 s an ask: a restart of Jupyter ends the ask with it, and a quiet connection that long may be cut.
        if container.status == "running" and jupyter_answers(container, min(deadline - time.monotonic(), 30)):
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
        container.reload()
    logs = container.logs(tail=30).decode(errors="replace")
    if port is not None and (f"port {port} is not available" in logs or f"port {port} is already in use" in logs):
        container.remove(force=True)
        raise PortBusy(port)
    raise LabctlError(
        f"Jupyter in the container {container.name} did not come up (state: {container.status}). Its last log "
        f"lines:\n{logs}",
        hint="Run 'labctl up' again to replace the container; if it fails the same way, the image may lack "
        "JupyterLab (with --image, use an image that has it).",
    )


def start_container(client: docker.DockerClient, spec: ContainerSpec) -> Container:
    """A new container, the workspace volume kept: node 0 runs Jupyter, the other nodes' stay up for the runs."""
    import docker.errors
    from docker.types import DeviceRequest

    lab, node, port, several = spec.lab, spec.node, spec.port, spec.several_nodes
    if node:
        options: dict[str, Any] = {"command": ["sleep", "infinity"], "labels": {NODE_LABEL: str(node)}}
    else:
        options = {
            "command": jupyter_command(port if several else None),
            "environment": {"JUPYTER_TOKEN": spec.token, **({JUPYTER_PORT_ENV: str(port)} if several else {})},
            "ports": None if several else {f"{JUPYTER_PORT}/tcp": ("127.0.0.1", port)},
            "healthcheck": HEALTHCHECK,
            "labels": {},
        }
    options["labels"].update({LAB_LABEL: lab, CONFIG_LABEL: spec.config_hash(client.images.get(spec.image).id)})
    remove_lab(client, lab, keep_volume=True, node=node)
    try:
        return client.containers.run(
            spec.image,
            name=container_name(lab, node),
            detach=True,
            volumes={volume_name(lab, node): {"bind": WORKSPACE, "mode": "rw"}},
            working_dir=WORKSPACE,
            restart_policy={"Name": "unless-stopped"},
            device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])] if spec.gpu else None,
            **_sharing(spec.gpu, several or node > 0),
            **options,
        )
    except docker.errors.APIError as exc:
        remove_lab(client, lab, keep_volume=True, node=node)
        text = str(exc.explanation or exc)
    if not node and ("port is already allocated" in text or "address already in use" in text):
        raise PortBusy(port)
    if "executable file not found" in text:
        raise LabctlError(
            f"The image {spec.image} has no 'jupyter' command, so the lab container cannot start.",
            hint="With --image, name an image that has JupyterLab installed, or leave --image out and "
            "labctl builds its own.",
        )
    hint = "Run 'labctl up' again; if it fails the same way, check Docker on the machine ('docker info')."
    if spec.gpu:
        hint = "The NVIDIA container runtime must be configured for Docker; run 'labctl up --gpu' again."
    raise LabctlError(f"The lab container could not be started: {text}", hint=hint)


def remove_lab(client: docker.DockerClient, lab: str, *, keep_volume: bool = False, node: int = 0) -> list[str]:
    found = {"container": find_container(client, lab, node)}
    if not keep_volume:
        found["volume"] = _found(client.volumes, volume_name(lab, node))
    removed = []
    for kind, item in found.items():
        if item is not None:
            item.remove(force=True)
            removed.append(f"{kind} {item.name}")
    return removed


def remove_packages(client: docker.DockerClient, lab: str, image: str | None) -> list[str]:
    """The packages layers the lab made, and the one it ran; one that another lab's container still runs stays."""
    import docker.errors

    made = client.images.list(PACKAGES_REPO, filters={"label": f"{PACKAGES_LABEL}={lab}"})
    tags = {tag for found in made for tag in found.tags if tag.startswith(f"{PACKAGES_REPO}:")}
    tags |= {image} if image and image.startswith(f"{PACKAGES_REPO}:") else set()
    removed = []
    for tag in sorted(tags):
        try:
            client.images.remove(tag)
            removed.append(f"image {tag}")
        except docker.errors.APIError as exc:
            if exc.status_code not in (404, 409):  # gone already, or in use
                raise
    return removed


@dataclass
class ExecResult:
    exit_code: int
    output: bytes  # stdout
    errors: bytes = b""

    @property
    def text(self) -> str:
        return (self.output + self.errors).decode(errors="replace")


class LabContainer:
    def __init__(self, container: Container) -> None:
        self.container = container
        self.name = str(container.name)

    def exec(
        self,
        argv: list[str],
        *,
        check: bool = True,
        env: dict[str, str] | None = None,
        workdir: str = WORKSPACE,
        detach: bool = False,
    ) -> ExecResult:
        """``detach``: it outlives this call and the connection, and nothing of it is waited for."""
        import docker.errors

        try:
            result = self.container.exec_run(argv, environment=env, workdir=workdir, detach=detach, demux=not detach)
        except docker.errors.APIError as exc:
            raise LabctlError(
                f"Could not run a command in the lab container {self.name}: {exc.explanation or exc}",
                hint="'labctl up' repairs a stopped or broken lab container.",
            ) from None
        if detach:
            return ExecResult(0, b"")
        out, err = result.output or (None, None)
        done = ExecResult(-1 if result.exit_code is None else int(result.exit_code), out or b"", err or b"")
        if check and done.exit_code != 0:
            raise LabctlError(
                f"'{argv[0]}' failed in the lab container {self.name} (exit code {done.exit_code}): "
                f"{done.text.strip()[-400:]}",
                hint="Check the lab with 'labctl status'; 'labctl up' repairs a broken container.",
            )
        return done

    def exists(self, path: str) -> bool:
        return self.exec(["test", "-e", path], check=False, workdir="/").exit_code == 0

    def put(self, dest_dir: str, entries: Mapping[str, Path | bytes]) -> None:
        for name, source in entries.items():
            if isinstance(source, Path) and not source.exists():
                raise NotFound(f"{source} does not exist (it was to be copied to {dest_dir}/{name}).")
        self.exec(["mkdir", "-p", dest_dir], workdir="/")
        self.container.put_archive(dest_dir, tar_of(entries))

    def archive(self, path: str) -> Iterable[bytes]:
        import docker.errors

        try:
            return self.container.get_archive(path)[0]
        except docker.errors.NotFound:
            raise NotFound(f"{path} does not exist in the lab container {self.name}.") from None


class UnsafeArchive(LabctlError):
    pass


class _Chunks(io.RawIOBase):
    """The chunks ``get_archive`` yields, for tarfile's stream mode, which takes a read of any length."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = (chunk for chunk in chunks if chunk)  # an empty read is the end

    def read(self, size: int = -1) -> bytes:
        return next(self._chunks, b"")


def archive_entries(
    chunks: Iterable[bytes], top: str, *, links: bool
) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Each entry of a tar of ``top``, as it streams; one outside ``top`` raises UnsafeArchive, so does, with ``links``
    (a run's results), a link out of ``top`` or a device. The workspace's are passed over: labctl never makes them."""
    with tarfile.open(fileobj=_Chunks(chunks), mode="r|") as tar:
        for member in tar:
            problem = _escapes(member, top, links)
            if problem:
                raise UnsafeArchive(
                    f"The lab container sent the entry '{member.name}', which {problem}.",
                    hint="Check what runs in the lab container ('labctl ssh', 'labctl status').",
                )
            if links or member.isfile() or member.isdir():
                yield tar, member


def _escapes(member: tarfile.TarInfo, top: str, links: bool) -> str | None:
    path = PurePosixPath(member.name)
    if path.is_absolute():
        return "is an absolute path"
    if ".." in path.parts:
        return "climbs out with '..'"
    if path.parts[:1] != (top,):
        return f"lies outside {top}/"
    if not links or member.isfile() or member.isdir():
        return None
    if not (member.issym() or member.islnk()):
        return "is a device, FIFO or other special file"
    if member.linkname.startswith("/"):
        return f"is a link to the absolute path {member.linkname}"
    target = posixpath.join(str(path.parent), member.linkname) if member.issym() else member.linkname
    if posixpath.normpath(target).split("/")[0] != top:
        return f"is a link to {member.linkname}, outside {top}/"
    return None
