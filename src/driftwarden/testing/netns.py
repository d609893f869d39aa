"""Network namespaces for the pods tier: create, reach into, and remove them.

A real test node lives in a network namespace of its own, with no link to the host's
network at all. Traffic crosses between the namespaces only through sockets this
process opens: a socket belongs to the network namespace that was current in the
*thread* that created it, so :func:`netns_socket` creates one inside a namespace from a
short-lived thread (``setns(2)`` on a thread changes that thread only), and
:class:`TcpForwarder` splices a listening socket in one namespace to connections made
in another. That is how the node's kubelet reaches the API server on the host's
loopback, how pods reach it through the ``kubernetes`` Service, and how tests reach a
pod's Service from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "NETNS_DIR",
    "NetnsError",
    "TcpForwarder",
    "add_netns",
    "delete_netns",
    "ip",
    "list_netns",
    "netns_socket",
]

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")  # where `ip netns add` pins named namespaces
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    """A network namespace operation failed."""


def ip(*args: str, netns: str | None = None) -> str:
    """Run `ip [-n NETNS] ARGS...` and return its stdout (NetnsError with stderr on failure)."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0:
        raise NetnsError(
            f"{' '.join(argv)} failed (exit {result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout


def list_netns() -> set[str]:
    """Return the names of the namespaces pinned under /run/netns."""
    try:
        return {entry.name for entry in NETNS_DIR.iterdir()}
    except FileNotFoundError:
        return set()


def add_netns(name: str) -> Path:
    """Create a named network namespace with its loopback up; return its pin path."""
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)
    return NETNS_DIR / name


def delete_netns(name: str) -> None:
    """Remove a named network namespace (idempotent); its interfaces and firewall rules go with it."""
    if name in list_netns():
        ip("netns", "delete", name)


def netns_socket(
    netns: Path | None, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
) -> socket.socket:
    """Return a new socket that lives in the network namespace pinned at ``netns`` (None: ours)."""
    if netns is None:
        return socket.socket(family, kind)
    box: list[socket.socket | BaseException] = []

    def create() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise NetnsError(f"setns({netns}) failed: {os.strerror(err)}")
            finally:
                os.close(fd)
            # This thread now runs in `netns`; it ends right after, so nothing else
            # ever runs in the foreign namespace by accident.
            box.append(socket.socket(family, kind))
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=create, name=f"netns-socket-{netns.name}", daemon=True)
    thread.start()
    thread.join()
    result = box[0]
    if isinstance(result, BaseException):
        raise result
    return result


class TcpForwarder:
    """Accept TCP connections in one namespace and splice each to a target in another.

    Args:
        listen: (host, port) to listen on; port 0 picks a free one (see ``port``).
        target: (host, port) to connect each accepted connection to.
        listen_netns / target_netns: pin paths of the namespaces (None: this process's).
        name: for log lines and thread names.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        target: tuple[str, int] | Callable[[], tuple[str, int]],
        *,
        listen_netns: Path | None = None,
        target_netns: Path | None = None,
        name: str = "forwarder",
        connect_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self._target = target
        self._target_netns = target_netns
        self._connect_timeout = connect_timeout
        self._listener = netns_socket(listen_netns)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(listen)
        self._listener.listen(128)
        self.host, self.port = self._listener.getsockname()[:2]
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"{name}-accept", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and close every spliced connection."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.close()
            self._open.clear()
        self._thread.join(5)

    def __enter__(self) -> TcpForwarder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(client,), name=f"{self.name}-conn", daemon=True
            ).start()

    def _serve(self, client: socket.socket) -> None:
        target = self._target() if callable(self._target) else self._target
        upstream = netns_socket(self._target_netns)
        upstream.settimeout(self._connect_timeout)
        try:
            upstream.connect(target)
        except OSError as exc:
            log.debug("%s: connect to %s failed: %s", self.name, target, exc)
            upstream.close()
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            if self._closed.is_set():
                upstream.close()
                client.close()
                return
            self._open.update((client, upstream))
        try:
            _splice(client, upstream)
        finally:
            with self._lock:
                self._open.difference_update((client, upstream))
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()


def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until both directions are closed (half-closes are passed on)."""
    peers = {a: b, b: a}
    open_reads = {a, b}
    with selectors.DefaultSelector() as selector:
        for sock in open_reads:
            selector.register(sock, selectors.EVENT_READ)
        while open_reads:
            for key, _ in selector.select():
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                sock = ready
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                peer = peers[sock]
                if data:
                    try:
                        peer.sendall(data)
                        continue
                    except OSError:
                        return
                selector.unregister(sock)
                open_reads.discard(sock)
                with contextlib.suppress(OSError):
                    peer.shutdown(socket.SHUT_WR)
