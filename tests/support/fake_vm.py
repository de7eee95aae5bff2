"""Make the fake ARM's VMs real: each VM it creates boots a real sshd with the keys from its cloud-init."""

from __future__ import annotations

from pathlib import Path

from tests.fakearm import FakeArm, VmBoot
from tests.support.netns import PrivateHost, private_host
from tests.support.sshd import KeyPair, SSHServer, make_server


def serve_vms(
    fake: FakeArm,
    workdir: Path,
    port: int,
    private: list[PrivateHost] | None = None,
    machine_dirs: tuple[str, ...] = (),
) -> list[SSHServer]:
    """From now on, a VM created on ``fake`` is an sshd on 127.0.0.1:``port``; returns the servers started.

    The sshd presents the host key labctl generated and passed in cloud-init, and accepts the key from the VM
    request, so what a test checks is what a real first connection to a new VM would meet. A VM without a public
    IP (a worker node) boots in a network namespace of its own at the private address Azure gave it, added to
    ``private`` (which the test cleans up with ``netns.private_hosts``); without that list it cannot boot.
    Deleting the VM stops its sshd and removes its namespace, as the machine and its address go. What the VM
    writes under ``machine_dirs`` stays its own (``SSHServer.machine_file``).
    """
    servers: list[SSHServer] = []
    booted: dict[str, tuple[SSHServer, PrivateHost | None]] = {}

    def boot(vm: VmBoot) -> str | None:
        assert vm.host_private_key and vm.host_public_key, "cloud-init carried no host key"
        work = workdir / f"vm-{vm.name}-{len(servers)}"
        work.mkdir(parents=True)
        (work / "host").write_text(vm.host_private_key)
        (work / "host").chmod(0o600)
        host_key = KeyPair(work / "host", vm.host_public_key)
        server, _ = make_server(
            work, port=port, host_key=host_key, authorized_keys=vm.authorized_keys, machine_dirs=machine_dirs
        )
        place = None
        if not vm.public:
            assert private is not None and vm.private_address, f"{vm.name} has no public IP and nowhere to boot"
            place = private_host(vm.private_address)
            private.append(place)
            server.host, server.netns = vm.private_address, place.netns
        servers.append(server.start())
        booted[vm.name] = (server, place)
        return "127.0.0.1" if vm.public else None

    def deleted(name: str) -> None:
        server, place = booted.pop(name, (None, None))
        if server is not None:
            server.stop()
        if place is not None:
            place.close()

    fake.on_vm_created = boot
    fake.on_vm_deleted = deleted
    return servers
