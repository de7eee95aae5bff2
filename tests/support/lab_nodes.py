"""Several lab containers as the nodes of one run: each its own network namespace, all on one private network.

The network is a user-defined Docker bridge marked ``internal``: the nodes reach each other by their addresses
on it, nothing is published on the host, and nothing on it is routed beyond this machine, like workers in the
lab's VNet that have no public address.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

LABEL = "labctl.test"


@dataclass
class Node:
    container: Any
    address: str

    def run(self, argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run an argv in the node (no shell); its exit code and output (stdout and stderr interleaved)."""
        result = self.container.exec_run(list(argv), environment=env or {}, workdir="/workspace")
        code = int(result.exit_code if result.exit_code is not None else -1)
        return code, bytes(result.output or b"").decode(errors="replace")

    def read(self, path: str) -> str:
        code, text = self.run(["cat", path])
        if code != 0:
            raise FileNotFoundError(f"{path} in {self.container.name}: {text.strip()}")
        return text

    def files(self, root: str) -> list[str]:
        code, text = self.run(["find", root, "-type", "f"])
        return sorted(text.split()) if code == 0 else []


@contextmanager
def lab_nodes(client: Any, image: str, count: int) -> Iterator[list[Node]]:
    """``count`` idle lab containers on a fresh internal bridge network; everything removed afterwards."""
    tag = secrets.token_hex(4)
    network = client.networks.create(f"labctl-t{tag}", driver="bridge", internal=True, labels={LABEL: "nodes"})
    boxes: list[Any] = []
    try:
        for i in range(count):
            boxes.append(
                client.containers.run(
                    image,
                    ["sleep", "900"],
                    name=f"labctl-t{tag}-n{i}",
                    detach=True,
                    network=network.name,
                    labels={LABEL: "nodes"},
                )
            )
        nodes = []
        for box in boxes:
            box.reload()
            address = box.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
            nodes.append(Node(box, address))
        yield nodes
    finally:
        for box in boxes:
            box.remove(force=True)
        network.remove()


def run_together(
    nodes: Sequence[Node], argvs: Sequence[Sequence[str]], env: dict[str, str] | None = None
) -> list[tuple[int, str]]:
    """Start one argv on each node at once (as run-lab would, one per machine) and wait for all of them."""
    results: list[tuple[int, str]] = [(-1, "")] * len(nodes)

    def one(i: int) -> None:
        try:
            results[i] = nodes[i].run(argvs[i], env)
        except Exception as exc:  # the main thread reports it with the node's number
            results[i] = (-1, f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
