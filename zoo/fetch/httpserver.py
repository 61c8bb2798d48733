"""A threaded HTTP server that no client can park or exhaust: the base of ``zoo mirror serve``.

The stdlib's ``ThreadingHTTPServer`` gives every connection a thread for as long as the client keeps it open, and
bounds each request line and header line but not their total nor the time they take to arrive. Here a request's
head (request line and headers) must arrive within ``Limits.head_timeout`` (idle keep-alive time included) and
``MAX_HEAD`` bytes (414 or 431 otherwise); a send or receive that makes no progress for ``Limits.io_timeout`` ends
the connection; and at most ``Limits.max_connections`` are served at once, the next ones answered 503 with
``Retry-After`` straight from the accept loop. A request body (``read_body``) must declare its length, at most
``MAX_BODY`` bytes, and arrive within the same time as a head.
"""

from __future__ import annotations

import io
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_HEAD = 32 << 10  # bytes in a request line and its headers together
MAX_BODY = 1 << 20  # bytes in a request body


@dataclass(frozen=True)
class Limits:
    io_timeout: float = 60.0  # seconds a send or receive may make no progress
    head_timeout: float = 20.0  # seconds for a request's head to arrive, counted from the end of the previous answer
    max_connections: int = 64  # connections served at once; more are answered 503


class HeadTooLarge(OSError):
    """A request line and headers longer than ``MAX_HEAD``."""


class BodyRefused(Exception):
    """A request body that will not be read: no length (411), too long (413) or a malformed length (400)."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class HeadReader(io.RawIOBase):
    """A connection's incoming bytes, within a budget of bytes and time per request head (the handler's ``rfile``)."""

    def __init__(self, sock: socket.socket, limits: Limits) -> None:
        self.sock, self.limits = sock, limits
        self.restart()

    def restart(self) -> None:
        """A new request head begins."""
        self.deadline, self.left = time.monotonic() + self.limits.head_timeout, MAX_HEAD

    def expect_body(self, length: int) -> None:
        """A body of ``length`` bytes follows the head: it gets a byte budget and a deadline of its own."""
        self.deadline, self.left = time.monotonic() + self.limits.head_timeout, length

    def settle(self) -> None:
        """The head is in: each send (or read) may wait ``io_timeout`` again."""
        self.sock.settimeout(self.limits.io_timeout)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.left <= 0:
            raise HeadTooLarge(f"request head over {MAX_HEAD} bytes")
        seconds = self.deadline - time.monotonic()
        if seconds <= 0:
            raise TimeoutError("request head not received in time")
        self.sock.settimeout(min(seconds, self.limits.io_timeout))
        with memoryview(buffer) as view:
            n = self.sock.recv_into(view[:self.left])
        self.left -= n
        return n


class BoundedHandler(BaseHTTPRequestHandler):
    """Reads each request's head through a ``HeadReader``; ``do_*`` methods call ``self.reader.settle()`` first."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # errors before the version is read get a status line (no HTTP/0.9 answers)
    server: BoundedHTTPServer

    def setup(self) -> None:
        self.timeout = self.server.limits.io_timeout
        super().setup()
        self.rfile.close()
        self.reader = HeadReader(self.connection, self.server.limits)
        self.rfile = io.BufferedReader(self.reader)

    def read_body(self, limit: int = MAX_BODY) -> bytes:
        """The request's body, read within ``limit`` bytes and the head's time budget; ``BodyRefused`` before reading
        anything when its length is missing, malformed or over ``limit`` (the caller then closes the connection)."""
        if self.headers.get("Transfer-Encoding"):
            raise BodyRefused(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        declared = self.headers.get("Content-Length")
        if declared is None:
            raise BodyRefused(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        if not declared.isascii() or not declared.strip().isdigit() or len(declared) > 20:
            raise BodyRefused(HTTPStatus.BAD_REQUEST, "malformed Content-Length")
        length = int(declared)
        if length > limit:
            raise BodyRefused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {limit} bytes")
        self.reader.expect_body(length)
        try:
            body = self.rfile.read(length)
        finally:
            self.reader.settle()
        if len(body) < length:
            raise ConnectionResetError("the client closed the connection before its body was in")
        return body

    def handle_one_request(self) -> None:
        """One request (the stdlib answers a timeout by closing the connection; an oversized head gets 414 or 431)."""
        self.reader.restart()
        self.raw_requestline = b""
        try:
            super().handle_one_request()
        except HeadTooLarge:
            line_read = bool(self.raw_requestline)
            self.reader.settle()
            self.requestline, self.request_version = "", "HTTP/1.1"
            self.command = self.command if line_read else ""
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE if line_read else HTTPStatus.REQUEST_URI_TOO_LONG)
            self.close_connection = True


class BoundedHTTPServer(ThreadingHTTPServer):
    """A daemon thread per connection, at most ``limits.max_connections`` of them."""

    daemon_threads = True
    block_on_close = False  # connections end by their own timeouts; closing the server does not wait for them
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BoundedHandler], limits: Limits) -> None:
        self.limits = limits
        self.connections = 0
        self._count = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._count:
            busy = self.connections >= self.limits.max_connections
            self.connections += not busy
        if busy:
            return self.refuse(request)
        threading.Thread(target=self.process_request_thread, args=(request, client_address), daemon=True).start()
        return None

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._count:
                self.connections -= 1

    def refuse(self, request: socket.socket) -> None:
        """503 on a connection over the bound, written without blocking the accept loop, then closed."""
        body = json.dumps({"error": "server busy, retry"}).encode()
        head = (f"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nX-Error-Code: Busy\r\nContent-Type: application/json"
                f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            request.setblocking(False)
            try:
                request.recv(MAX_HEAD)  # what the client sent already: unread bytes would turn close() into a reset
            except BlockingIOError:
                pass
            request.send(head + body)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # a client that hung up or stalled
            return
        super().handle_error(request, client_address)
