"""Passing a client's connection to the worker process that must serve it.

Some sessions live in one worker (a Socket.IO session polled over many HTTP
requests), while the kernel gives each new connection to any worker.  Each
worker therefore has a :class:`HandoverPort`: a Unix ``SOCK_SEQPACKET`` socket named by
the worker's :func:`process_token`, in a directory the supervisor made for its
workers (mode 0700: only this user can bind or reach a name there, so a
connection is never passed to another user's process, even one that took the
name of a worker gone).  A worker that reads a request for a session another
worker owns sends that worker the connection's descriptor (``SCM_RIGHTS``) with
the bytes it read from the request's head on and who the peer is; the owner
serves the connection as if it had accepted it.  Only a process of the same
user may pass a connection in: the kernel vouches for the sender
(``SO_PEERCRED``), both ways.

This module moves descriptors and bytes; it knows nothing of HTTP or sessions,
and it sends or receives on the reactor thread without ever waiting.
"""

from __future__ import annotations

import array
import json
import logging
import os
import secrets
import socket
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..io.ratelog import RateLimitedLog
from ..io.reactor import Reactor
from ..io.transport import EVENT_READ

log = logging.getLogger("wssync.server")

# Largest request part passed along (a head is at most max_header_size, 64 KiB
# by default); a larger one is served where it arrived.
MAX_PASSED = 96 * 1024
_HEADER = struct.Struct("!H")  # the length of the JSON that says who the peer is
_CREDS = struct.Struct("iII")  # struct ucred: pid, uid, gid
_ANCILLARY = socket.CMSG_SPACE(array.array("i", [0]).itemsize)
_BACKLOG = 256  # connections on their way in at once


def _peer_uid(link: socket.socket) -> Optional[int]:
    """The user of the process at the other end of ``link`` (the kernel's word)."""
    try:
        return int(_CREDS.unpack(link.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                 _CREDS.size))[1])
    except OSError:
        return None

_token: Tuple[int, str] = (0, "")
_REFUSED = RateLimitedLog(log, logging.WARNING, "records refused on the hand-over port")

# (socket, peername, proxy_peername, secure, bytes) of a connection passed in.
Adopt = Callable[[socket.socket, Any, Any, bool, bytes], None]


def process_token() -> str:
    """This process's name among the workers: 8 random letters and digits, new in
    each process (a forked child gets its own), so a session id can carry it."""
    global _token
    pid = os.getpid()
    if _token[0] != pid:
        _token = (pid, secrets.token_hex(4))
    return _token[1]


def _address(directory: str, token: str) -> str:
    return os.path.join(directory, token)


def _private(directory: str) -> None:
    """Refuse a directory another user could reach (names in it are trusted)."""
    info = os.stat(directory)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{directory} must belong to this user alone (mode 0700)")


class HandoverPort:
    """One worker's port: ``adopt`` serves what comes in; :meth:`send` passes out.

    ``directory`` is the supervisor's, private to this user: the workers of one
    server share it.
    """

    def __init__(self, reactor: Reactor, directory: str, adopt: Adopt) -> None:
        _private(directory)
        self.reactor = reactor
        self.directory = directory
        self._adopt = adopt
        self.passed_in = self.passed_out = 0
        # Connections that came in and whose record has not arrived yet.
        self._incoming: Dict[socket.socket, None] = {}
        self._path = _address(directory, process_token())
        sock = self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.bind(self._path)
            # A record per connection, and a listen backlog (a datagram queue
            # holds 10: a burst while this reactor is busy would be refused).
            sock.listen(_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        reactor.selector.register(sock, EVENT_READ, self._on_acceptable)

    def send(self, token: str, sock: socket.socket, peername: Any, proxy_peername: Any,
             data: bytes, secure: bool = False) -> bool:
        """Pass ``sock`` and ``data`` to the worker named ``token``; whether it
        took them (False: not running, or its backlog is full: serve it here).
        ``secure``: the client's connection is TLS (``sock`` carries its clear text)."""
        if len(data) > MAX_PASSED or not token.isalnum():
            return False
        who = json.dumps([peername, proxy_peername, secure]).encode()
        rights = array.array("i", [sock.fileno()])
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as link:
            link.setblocking(False)  # (a Unix connect never waits: done, or EAGAIN)
            try:
                link.connect(_address(self.directory, token))
                if _peer_uid(link) != os.getuid():
                    return False  # (the directory is ours alone: cannot happen)
                link.sendmsg([_HEADER.pack(len(who)), who, data],
                             [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
            except OSError as exc:
                log.debug("passing a connection to worker %s failed: %s", token, exc)
                return False
        self.passed_out += 1
        return True

    def _on_acceptable(self, _mask: int) -> None:
        for _ in range(64):  # a bounded batch per readable event
            try:
                link, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accepting a passed connection failed: %s", exc)
                return
            if len(self._incoming) >= _BACKLOG:
                link.close()
                continue
            link.setblocking(False)
            self._incoming[link] = None
            self._read(link)
            if link in self._incoming:  # its record is still on its way
                self.reactor.selector.register(link, EVENT_READ,
                                               lambda _mask, link=link: self._read(link))

    def _read(self, link: socket.socket) -> None:
        try:
            data, ancillary, _flags, _addr = link.recvmsg(MAX_PASSED + 4096, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("receiving a passed connection failed: %s", exc)
            data, ancillary = b"", []
        self._forget(link)
        self._received(data, ancillary, _peer_uid(link))
        link.close()

    def _forget(self, link: socket.socket) -> None:
        self._incoming.pop(link, None)
        try:
            self.reactor.selector.unregister(link)
        except (KeyError, ValueError):
            pass

    def _received(self, data: bytes, ancillary: List[Tuple[int, int, bytes]],
                  uid: Optional[int]) -> None:
        fds: List[int] = []
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                rights = array.array("i")
                rights.frombytes(payload[:len(payload) - len(payload) % rights.itemsize])
                fds.extend(rights)
        if uid != os.getuid() or len(fds) != 1 or len(data) < _HEADER.size:
            for fd in fds:
                os.close(fd)
            _REFUSED.event(self.reactor, uid, "dropped a record on the hand-over port that "
                           "is not one connection from this user (uid %s)", uid)
            return
        (size,) = _HEADER.unpack_from(data)
        try:
            peername, proxy_peername, secure = json.loads(data[_HEADER.size:_HEADER.size + size])
            sock = socket.socket(fileno=fds[0])
        except (ValueError, TypeError, OSError):  # (not three values; not a socket)
            os.close(fds[0])
            return
        self.passed_in += 1
        self._adopt(sock, _address_of(peername), _address_of(proxy_peername), secure is True,
                    data[_HEADER.size + size:])

    def close(self) -> None:
        try:
            self.reactor.selector.unregister(self._sock)
        except (KeyError, ValueError):
            pass
        self._sock.close()
        for link in list(self._incoming):
            self._forget(link)
            link.close()
        try:
            os.unlink(self._path)
        except OSError:
            pass


def _address_of(value: Any) -> Any:
    """A socket address as JSON gave it back (a list) as Python has it (a tuple)."""
    return tuple(value) if isinstance(value, list) else value
