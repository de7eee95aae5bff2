"""Opening an SSH channel to a Unix socket on the server (OpenSSH's ``direct-streamlocal@openssh.com``).

Paramiko can open ``direct-tcpip`` channels but not this kind, whose request names a socket path instead of
host and port. labctl needs it for Docker: a channel straight to ``/var/run/docker.sock`` costs no process
on the machine (unlike ``docker system dial-stdio``) and does not count against sshd's per-connection session
limit. The request is sent through the transport's own channel bookkeeping so that the resulting channel is
an ordinary paramiko ``Channel``. Any failure here makes the caller fall back to ``dial-stdio``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN

KIND = "direct-streamlocal@openssh.com"


def open_unix_channel(transport: paramiko.Transport, socket_path: str, timeout: float = 15.0) -> paramiko.Channel:
    """A channel connected to ``socket_path`` on the server; raises ``paramiko.SSHException`` if refused."""
    t: Any = transport  # the channel bookkeeping used below is not part of paramiko's typed API
    if not t.is_active():
        raise paramiko.SSHException("SSH session not active")
    opened = threading.Event()
    with t.lock:
        window = t._sanitize_window_size(None)
        packet = t._sanitize_packet_size(None)
        chanid = t._next_channel()
        channel: Any = paramiko.Channel(chanid)
        t._channels.put(chanid, channel)
        t.channel_events[chanid] = opened
        t.channels_seen[chanid] = True
        channel._set_transport(transport)
        channel._set_window(window, packet)
    request = paramiko.Message()
    request.add_byte(cMSG_CHANNEL_OPEN)
    request.add_string(KIND)
    request.add_int(chanid)
    request.add_int(window)
    request.add_int(packet)
    request.add_string(socket_path)
    request.add_string("")  # reserved by the protocol
    request.add_int(0)  # reserved by the protocol
    t._send_user_message(request)
    deadline = time.monotonic() + timeout
    while not opened.wait(0.1):
        if not t.is_active():
            raise t.get_exception() or paramiko.SSHException("SSH session ended")
        if time.monotonic() > deadline:
            raise paramiko.SSHException(f"Timeout opening a channel to {socket_path}")
    ready = t._channels.get(chanid)
    if ready is None:
        raise t.get_exception() or paramiko.ChannelException(2, f"{socket_path} refused the channel")
    return ready
