"""Byte relays between local sockets and SSH channels: the port forward and the Docker bridge share them."""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("labctl.machine")

CHUNK = 64 * 1024


class Pipe(Protocol):
    """What a relay needs from either side: sockets and paramiko channels both have it."""

    def fileno(self) -> int: ...

    def recv(self, size: int) -> bytes: ...

    def sendall(self, data: bytes) -> Any: ...

    def close(self) -> None: ...


def pump(a: Pipe, b: Pipe, stop: threading.Event) -> None:
    """Copy bytes both ways until either side closes (or ``stop`` is set), then close both."""
    try:
        while not stop.is_set():
            ready, _, _ = select.select([a, b], [], [], 0.5)
            for src in ready:
                dst = b if src is a else a
                data = src.recv(CHUNK)
                if not data:
                    return
                dst.sendall(data)
    except (OSError, EOFError) as exc:
        log.info("relay closed: %s", exc)
    except Exception as exc:  # a paramiko error on a dying transport ends this connection only
        log.info("relay failed: %s", exc)
    finally:
        for side in (a, b):
            with contextlib.suppress(Exception):
                side.close()


def bind_loopback(port: int, *, tries: int = 100) -> socket.socket:
    """A listening socket on 127.0.0.1: ``port`` if free, else the next free one (0 means any)."""
    last: OSError | None = None
    candidates = [0] if port == 0 else range(port, min(port + tries, 65536))
    for candidate in candidates:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", candidate))
            sock.listen(16)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise
            last = exc
    raise OSError(errno.EADDRINUSE, f"no free local port in {port}..{port + tries - 1}") from last


class Relay:
    """Accepts connections on a listening socket and joins each to a channel that ``open_peer`` makes."""

    def __init__(self, listener: socket.socket, open_peer: Callable[[socket.socket], Pipe], name: str) -> None:
        self.listener = listener
        self.open_peer = open_peer
        self.name = name
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name=f"{name}-accept", daemon=True)

    def start(self) -> Relay:
        self._accepter.start()
        return self

    def _accept(self) -> None:
        self.listener.settimeout(0.5)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), name=f"{self.name}-conn", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            peer = self.open_peer(conn)
        except Exception as exc:
            log.info("%s: could not open the remote side: %s", self.name, exc)
            conn.close()
            return
        pump(conn, peer, self._stop)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        self._accepter.join(timeout=2)
        for thread in self._threads:
            thread.join(timeout=2)
