"""Checking that a TCP port can be listened on before starting a server there."""

from __future__ import annotations

import errno
import socket

from assistant.core.errors import UserError


def ensure_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {port} on {host} is already in use: stop what runs there or "
                    "choose another with --port / ASSISTANT_PORT"
                ) from None
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
