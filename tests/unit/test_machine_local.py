"""The local machine and the pieces shared with SSH: line splitting, command quoting, port picking."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labctl.errors import LabctlError
from labctl.machine.base import CommandFailed, LineSplitter, LocalMachine, bind_loopback


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200), st.data())
def test_lines_survive_any_chunking(text: str, data: st.DataObject) -> None:
    raw = text.encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    lines: list[str] = []
    splitter = LineSplitter(lines.append)
    start = 0
    for cut in [*cuts, len(raw)]:
        splitter.feed(raw[start:cut])
        start = cut
    kept = splitter.close()
    assert kept == text
    expected = text.split("\n")
    if expected and expected[-1] == "":
        expected.pop()
    assert lines == [line.rstrip("\r") for line in expected]


def test_argument_lists_are_quoted_and_strings_are_shell_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/x")
    assert LocalMachine().run(["echo", "a  b", "$HOME"]).output == "a  b $HOME\n"
    assert LocalMachine().run("echo $HOME").output == "/home/x\n"


def test_local_run_streams_and_returns_codes() -> None:
    m = LocalMachine()
    seen: list[str] = []
    result = m.run("echo one; echo two >&2; exit 0", on_line=seen.append)
    assert seen == ["one", "two"] and result.ok
    assert m.run(["sh", "-c", "exit 4"], check=False).exit_code == 4
    with pytest.raises(CommandFailed, match="exit code 5"):
        m.run("echo why; exit 5")
    assert m.run("cat", stdin="fed in").output == "fed in"
    with pytest.raises(LabctlError, match="did not finish"):
        m.run("sleep 5", timeout=0.5)


def test_local_forward_is_the_port_itself() -> None:
    with LocalMachine().forward(8888, 9999) as port:
        assert port == 8888


def test_bind_loopback_takes_the_next_free_port() -> None:
    first = bind_loopback(0)
    try:
        taken = first.getsockname()[1]
        second = bind_loopback(taken)
        try:
            assert second.getsockname()[0] == "127.0.0.1"
            assert second.getsockname()[1] > taken
            # Without SO_REUSEADDR: macOS would otherwise let it share a port held on every address.
            assert second.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        finally:
            second.close()
    finally:
        first.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", taken))  # released again


def test_local_forward_to_another_address_relays_to_this_computers_loopback() -> None:
    import http.server
    import threading
    import urllib.request

    server = http.server.HTTPServer(("127.0.0.2", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with (
            LocalMachine().forward(server.server_port, 0, host="127.0.0.2") as port,
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response,
        ):
            assert response.status == 200
    finally:
        server.shutdown()
        server.server_close()
