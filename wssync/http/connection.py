"""``HttpConnection``: the protocol object every accepted connection starts with.

It feeds bytes to the Sans-I/O request parser, hands complete requests to the
application layer one at a time (pipelined requests are answered in order),
writes responses as :mod:`wssync.http.writer` frames them (pulling streamed
bodies as fast as the peer reads, handing file bodies to the transport as
file regions and closing their files when sent or lost), enforces the HTTP timeouts, and
hands a request that asks to switch protocols to the upgrade handler registered
for its ``Upgrade`` token (:mod:`wssync.http.upgrade`), which may install another
protocol object on the same transport, passing along the bytes that followed
the request head.
Where each request stands (keep-alive, ``100 Continue``, draining or
lingering) is decided by its :class:`~wssync.http.state.ServerState`; a body
its handler reads as it arrives goes through an :class:`~wssync.http.upload.Upload`.
This module is the I/O glue: it feeds the parser, asks the state, writes, and
arms the deadline of what it waits for (idle, a head, a body).
It runs on the reactor thread and never touches the selector.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..edge.forwarded import TrustedPeers, resolve, trusted_peers
from ..errors import HttpError
from ..io.reactor import Timer
from .body import BodyStream
from .parser import RequestParser
from .request import Request
from .response import FileBody, Response
from .state import (
    BODY_DEADLINE,
    CLOSE,
    DRAINING,
    IDLE,
    IDLE_DEADLINE,
    LINGER,
    LOST,
    UPGRADE,
    ServerState,
)
from .stream import ResponseStream
from .upgrade import UpgradeHandler, upgrade_handler
from .upload import Lingering, Upload, refused_log
from .writer import CONTINUE, error_response, frame_file, frame_response

if TYPE_CHECKING:
    from ..config import Config
    from ..contract import HttpApplication
    from ..io.lanes import Lane
    from ..io.transport import Transport

log = logging.getLogger("wssync.http")
access_log = logging.getLogger("wssync.access")
_INFO = logging.INFO
_monotonic = time.monotonic


class HttpConnection:
    """HTTP/1.1 server side of one connection."""

    name = "http"

    def __init__(self, config: Config, app: HttpApplication,
                 upgrades: Optional[Dict[str, UpgradeHandler]] = None) -> None:
        self.config = config
        self.app = app
        # Upgrade token -> handler (the protocol registry's own dict).
        self.upgrades: Dict[str, UpgradeHandler] = upgrades if upgrades is not None else {}
        self.transport: Optional[Transport] = None
        self.parser: Optional[RequestParser] = None
        # The lane this connection's handlers run in, one after another (thread-pool
        # mode); the application layer makes it on the first request that needs one.
        self.lane: Optional[Lane] = None
        # Who the client is, as the last request said (through a trusted proxy's
        # headers) or as the transport knows it; None for a Unix socket's peer.
        self.client_addr: Any = None
        self._trusted: Optional[TrustedPeers] = None  # the peer is a trusted proxy
        self._state = ServerState()
        self._current: Optional[Request] = None  # being handled or answered
        self._processing = False  # re-entrancy guard for _process
        self._eof = False
        self._stopping = False
        self._stream: Optional[ResponseStream] = None  # a streamed body going out
        self._file: Optional[FileBody] = None  # a file body the transport is sending
        self._paused = False  # the transport asked us to stop writing
        self._deadline = 0.0
        self._phase = 0  # which deadline the timer runs for (IDLE_DEADLINE, ...); 0: none
        # Each deadline's timeout, by the deadline's number (read per request).
        self._timeouts = (0.0, config.keepalive_timeout, config.header_timeout,
                          config.body_timeout)
        self._timer: Optional[Timer] = None
        # We (or the upload) paused reading: the next wait for a request resumes it.
        self._held = False
        # A request body its handler reads as it arrives, until it has ended
        # (or, failed, until the answer is out); None nearly always.
        self._upload: Optional[Upload] = None

    # -- transport callbacks -----------------------------------------------------

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        peer = transport.peername
        if not isinstance(peer, tuple):
            peer = None  # a Unix domain socket's peer has no address
        self.client_addr = peer
        trusted = trusted_peers(self.config.forwarded_allow_ips)
        if trusted.trusts(peer):
            self._trusted = trusted
        self.parser = RequestParser(self.config, peer)
        self._arm_deadline(IDLE_DEADLINE)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        assert parser is not None and self.transport is not None
        parser.feed(data)
        if self._current is None:
            self._process()
        elif self._upload is not None:
            self._upload.pump()
        elif parser.buffered > self.config.max_header_size:
            # Pipelined requests pile up while one is handled: stop reading.
            self._held = True
            self.transport.pause_reading()

    def eof_received(self) -> None:
        self._eof = True
        assert self.transport is not None
        if self._current is None:
            # Requests complete before the half-close are still answered;
            # _waiting() closes once nothing is left.
            self._process()
        elif self._upload is not None and self._upload.error is None:
            self._upload.fail(400, "request body cut off")

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._cancel_timer()
        if self._stream is not None:
            self._stream.close()
        self._close_file()
        self._current = None
        self._state.fire(LOST)
        if self._upload is not None:
            self._upload.lost()
            self._upload = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._stream is not None:
            self._stream.pull()

    def shutdown(self) -> None:
        """Server is stopping: finish the request in flight, then close.

        Every answer from now on says ``Connection: close``.  An idle
        connection is not closed now: its client may have sent its next
        request as the stop came (in the socket, or on its way), and closing
        would throw that away.  It is kept until that request, which is
        served, or until its keep-alive deadline, at most half of
        ``shutdown_grace`` from now (the rest is for that last answer).  A
        connection busy, or closing already, closes after its answer.
        """
        self._stopping = True
        transport = self.transport
        if self._state.state != IDLE or transport is None or transport.is_closing():
            return
        deadline = _monotonic() + self.config.shutdown_grace / 2
        if self._phase == IDLE_DEADLINE and self._timer is not None \
                and self._deadline <= deadline:
            return  # its own keep-alive deadline comes first
        self._phase = IDLE_DEADLINE
        self._deadline = deadline
        self._cancel_timer()
        self._timer = transport.reactor.call_at(deadline, self._on_deadline)

    # -- request processing ----------------------------------------------------------

    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            transport = self.transport
            parser = self.parser
            assert transport is not None and parser is not None
            while self._current is None and not transport.is_closing() \
                    and transport.protocol is self:
                try:
                    request = parser.next_request()
                except HttpError as exc:
                    self._cancel_timer()
                    self._send_error(exc.status, exc.message)
                    return
                if request is None:
                    request = self._waiting(parser)
                    if request is None:
                        return
                else:
                    self._state.request(False, False)
                # The deadline timer stays armed: it ignores a connection with a
                # request in flight, which saves a heap push per request.
                self._phase = 0
                self._current = request
                request.local_addr = transport.sockname
                if transport.secure:
                    request.scheme = "https"
                if parser.forwarded and self._trusted is not None:
                    request.remote_addr, scheme = resolve(
                        request.headers.by_name(), request.remote_addr, self._trusted)
                    if scheme is not None:
                        request.scheme = scheme
                self.client_addr = request.remote_addr
                if self.app.hand_over is not None and self.app.hand_over(self, request):
                    return  # another process serves the connection from here on
                if parser.upgrade:
                    handler = upgrade_handler(request, self.upgrades)
                    if handler is not None:
                        self._upgrade(handler, request)
                        continue
                self.app.handle_request(self, request)
        finally:
            self._processing = False

    def _waiting(self, parser: RequestParser) -> Optional[Request]:
        """No complete request yet: send 100-continue if due, arm the right deadline.

        A request whose handler reads its body as it arrives is returned, to be
        handled now.
        """
        transport = self.transport
        assert transport is not None
        if self._eof or (self._stopping and not parser.buffered and parser.pending is None):
            self._close()
            return None
        if self._held:
            self._held = False
            transport.resume_reading()
        pending = parser.pending
        if pending is not None and parser.fresh_body:
            parser.fresh_body = False
            if self.app.hand_over is not None and self.app.hand_over(self, pending):
                return None
            if not parser.upgrade or upgrade_handler(pending, self.upgrades) is None:
                stream = self.app.stream_body(self, pending)
                if stream is not None:
                    self._state.request(parser.expect_continue, True)
                    upload = self._upload = Upload(self, stream)
                    upload.start()
                    return pending
        if pending is None:
            self._arm_deadline(self._state.waiting(parser.buffered))
            return None
        if self._state.body_awaited(parser.expect_continue):
            transport.write(CONTINUE)
        self._arm_deadline(BODY_DEADLINE)
        return None

    def upload_wanted(self, stream: BodyStream) -> None:
        """The handler waits for ``stream``'s bytes, or has made room in it
        (reactor thread; called through the application's hand-off)."""
        upload = self._upload
        transport = self.transport
        if (upload is None or upload.stream is not stream or upload.error is not None
                or upload.draining or transport is None or transport.is_closing()):
            return
        if self._state.reading():
            transport.write(CONTINUE)
        upload.pump()

    def _linger(self) -> None:
        """Close once the answer is out, reading and dropping what the client
        still sends meanwhile: closing with unread input makes the kernel send a
        reset, which can destroy the answer before the client has read it."""
        transport = self.transport
        assert transport is not None
        self._cancel_timer()
        if self._eof:
            transport.close()  # the client sends nothing more
            return
        transport.set_protocol(Lingering(self.config.body_timeout))

    def _upgrade(self, handler: UpgradeHandler, request: Request) -> None:
        """Let the handler registered for the request's Upgrade token answer it:
        a refusal is sent and closes; a switch writes its ``101`` and hands the
        connection, with the bytes that followed the request, to its protocol."""
        transport, parser = self.transport, self.parser
        assert transport is not None and parser is not None
        try:
            answer = handler(self, request)
        except Exception:  # a registered protocol's code: answer, or the request hangs
            log.exception("error in upgrade handler for %s %s", request.method, request.target)
            answer = Response("500 Internal Server Error\n", 500)
        if isinstance(answer, Response):
            transport.metrics.handshake_refused(answer.status)
            self.send_response(answer, close=True)
            return
        transport.metrics.http[request.method][101] += 1
        transport.write(answer.head)
        self._log_access(request, 101, 0)
        self._cancel_timer()
        self._current = None
        self._state.fire(UPGRADE)
        # Undo a pause for pipelined requests before the new protocol starts:
        # from here on, only the new protocol decides when reading stops.
        transport.resume_reading()
        # The client may have sent its first bytes in the same packet as the
        # request: they belong to the new protocol.
        transport.set_protocol(answer.protocol, parser.take_buffer())

    # -- responses -------------------------------------------------------------------

    def send_response(self, response: Response, close: bool = False) -> None:
        """Write ``response`` to the request being handled (reactor thread)."""
        request = self._current
        transport = self.transport
        body = response.body
        if request is None or transport is None or transport.closed:
            # The client left while the handler ran: the body is never sent,
            # but its file (or iterable) is closed all the same.
            self._close_body(body)
            return
        if self._upload is not None:
            response, close = self._upload.settle(response, close)
            body = response.body
        if type(body) is FileBody:
            self._send_file(request, response.status, response.headers, body, close)
            return
        try:
            data, large, framer, keep_alive, size = frame_response(
                request, response.status, response.headers, body, close or self._stopping)
        except ValueError:
            log.exception("invalid response header")
            self._current = None
            self._send_error(500, "invalid response header")
            return
        if framer is not None or self._upload is not None:
            self._state.respond(keep_alive)
        transport.metrics.http[request.method][response.status] += 1
        transport.write(data)
        if large:
            transport.write(large)  # kept by reference, not copied
        if access_log.isEnabledFor(_INFO):
            self._log_access(request, response.status, size)
        if framer is not None:
            stream = self._stream = ResponseStream(self, body, framer)
            stream.pull()
            return
        if type(body) is not bytes:
            self._close_body(body)  # a HEAD, 204 or 304 answer: nothing is sent
        if self._upload is not None or self._current is None:
            self._finish_response()  # the request's body has not ended, or the client left
            return
        # A whole answer to a request read whole: the state moves on in one step.
        self._current = None
        if self._state.answered(keep_alive, self._stopping) != IDLE:
            transport.close()
        elif not self._processing:  # else the running _process loop goes on by itself
            self._process()

    def _send_file(self, request: Request, status: int, headers: List[Tuple[str, str]],
                   body: FileBody, close: bool) -> None:
        transport = self.transport
        assert transport is not None
        try:
            data, status, region, keep_alive, size = frame_file(
                request, status, headers, body, close or self._stopping)
        except ValueError:
            self.app.close_body(self, body.close)
            log.exception("invalid response header")
            self._current = None
            self._send_error(500, "invalid response header")
            return
        self._state.respond(keep_alive)
        transport.metrics.http[request.method][status] += 1
        transport.write(data)
        self._log_access(request, status, size)
        if region is None:
            # HEAD, 304, 416, or an empty file: no file bytes go out.
            self.app.close_body(self, body.close)
            self._finish_response()
            return
        self._file = body
        transport.write_file(body.fd, region[0], region[1], self._file_sent)

    def _file_sent(self) -> None:
        self._close_file()
        self._finish_response()

    def _close_file(self) -> None:
        body, self._file = self._file, None
        if body is not None:
            self._close_body(body)

    def _close_body(self, body: object) -> None:
        """Close a response body (a file, an application's iterable) as PEP 3333
        asks, sent or not, on its handler's side (a WSGI ``close()`` may block,
        or expect the thread that ran the application)."""
        close = getattr(body, "close", None)
        if close is not None:
            self.app.close_body(self, close)

    def _finish_response(self) -> None:
        """The answer is out: the state says whether the connection goes on."""
        request = self._current
        transport = self.transport
        assert transport is not None
        if request is None:
            transport.close()
            return
        upload = self._upload
        if upload is not None:  # the request's body has not ended
            upload.answered(self._state.sent(self._stopping) == DRAINING)
            return
        self._current = None
        if self._state.sent(self._stopping) != IDLE:
            transport.close()
            return
        if not self._processing:  # else the running _process loop goes on by itself
            self._process()

    def _reuse(self) -> None:
        """The rest of an unread body has been dropped: on to the next request."""
        self._current = None
        if self._stopping:
            self._close()
        elif not self._processing:
            self._process()

    def _close(self) -> None:
        assert self.transport is not None
        self._state.fire(CLOSE)
        self.transport.close()

    def _send_error(self, status: int, message: str) -> None:
        """Answer a request we could not parse, then close the connection."""
        transport = self.transport
        assert transport is not None
        transport.metrics.http.other[status] += 1  # (no request to say its method)
        transport.write(error_response(status, message))
        if status == 413:
            self._state.fire(LINGER)
            self._linger()  # the client may still be sending the refused body
        else:
            self._close()
        refused_log.event(transport.reactor, transport.peername, "%s: %d %s", transport.peername,
                          status, message)

    def _log_access(self, request: Request, status: int, size: int) -> None:
        if access_log.isEnabledFor(_INFO):  # also checked before the call, per request
            host = peer[0] if isinstance(peer := request.remote_addr, tuple) else "-"
            access_log.info('%s "%s %s %s" %d %s', host, request.method, request.target,
                            request.version, status, size if size >= 0 else "-")

    # -- timeouts --------------------------------------------------------------------

    def _arm_deadline(self, phase: int) -> None:
        """Start the deadline of ``phase``, unless it is already running.

        A phase's deadline counts from its start: bytes trickling in do not
        extend it (that is what makes a slowloris client time out).  One lazily
        re-armed timer per connection keeps this cheap on every request.
        """
        transport = self.transport
        if phase == self._phase or transport is None:
            return
        self._phase = phase
        timeout = self._timeouts[phase]
        if not timeout:
            self._cancel_timer()
            return
        deadline = self._deadline = _monotonic() + timeout
        timer = self._timer
        if timer is not None:
            if timer.when <= deadline:
                return  # it fires first, sees the later deadline and re-arms for it
            timer.cancel()  # it would fire too late
        self._timer = transport.reactor.call_at(deadline, self._on_deadline)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_deadline(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or self._current is not None:
            return  # closing already: a 408 or another close would add nothing
        if _monotonic() < self._deadline:
            self._timer = transport.reactor.call_at(self._deadline, self._on_deadline)
            return
        if self._phase != IDLE_DEADLINE:
            self._send_error(408, "request not received in time")
        else:
            self._close()
