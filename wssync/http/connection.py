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
A body whose handler reads it as it arrives (a WSGI application's
``wsgi.input``) goes to a bounded :class:`~wssync.http.body.BodyStream` instead of
being collected first; what the handler leaves unread is discarded before the
next request, or the connection closes after the response.
It runs on the reactor thread and never touches the selector.
"""

from __future__ import annotations

import logging
import time
from enum import IntEnum
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Tuple,
    cast,
)

from ..edge.forwarded import TrustedPeers, resolve, trusted_peers
from ..errors import HttpError, RequestBodyError
from ..io.reactor import Timer
from .body import BodyStream
from .parser import RequestParser
from .request import Request
from .response import FileBody, Response
from .upgrade import UpgradeHandler, upgrade_handler
from .writer import (
    CONTINUE,
    BodyFramer,
    error_answer,
    error_response,
    frame_file,
    frame_response,
)

if TYPE_CHECKING:
    from ..config import Config
    from ..contract import HttpApplication
    from ..io.transport import Transport

log = logging.getLogger("wssync.http")
access_log = logging.getLogger("wssync.access")



# While the server stops: how long a connection accepted just before may take to
# send its first request.
FIRST_REQUEST_GRACE = 1.0


class _Deadline(IntEnum):
    """What the connection's one deadline timer is waiting for."""

    NONE = 0  # a request is being handled: no deadline
    IDLE = 1  # between requests (keepalive_timeout)
    HEAD = 2  # a request head is arriving (header_timeout)
    BODY = 3  # a request body is arriving (body_timeout)


# Set and compared for every request: a global is cheaper than an enum attribute
# on Python 3.9-3.11 (about 70 ns each).
_NO_PHASE, _IDLE_PHASE, _HEAD_PHASE, _BODY_PHASE = _Deadline


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
        self.app_state: Any = None  # the application layer's own per-connection data
        # Who the client is, as the last request said (through a trusted proxy's
        # headers) or as the transport knows it; None for a Unix socket's peer.
        self.client_addr: Any = None
        self._trusted: Optional[TrustedPeers] = None  # the peer is a trusted proxy
        self._current: Optional[Request] = None  # being handled or answered
        self._processing = False  # re-entrancy guard for _process
        self._continue_sent = False
        self._eof = False
        self._stopping = False
        self._fresh = True  # no request has arrived on this connection yet
        self._stream: Optional[Iterator[bytes]] = None
        self._stream_body: object = None  # what the handler returned, closed at the end
        self._framer: Optional[BodyFramer] = None  # how the stream's chunks are framed
        self._keep_alive = False  # the response being sent leaves the connection open
        self._stream_waiting = False  # a chunk was asked for and has not come
        self._file: Optional[FileBody] = None  # a file body the transport is sending
        self._paused = False  # the transport asked us to stop writing
        self._deadline = 0.0
        self._phase = _Deadline.NONE  # what the deadline is for
        self._timer: Optional[Timer] = None
        # A request body its handler reads as it arrives, until it has ended
        # (or, failed, until the answer is out); None nearly always.
        self._upload: Optional[BodyStream] = None
        self._upload_error: Optional[RequestBodyError] = None
        self._upload_timer: Optional[Timer] = None
        self._draining = False  # the response is out: the body's rest is discarded

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
        self._arm_deadline(_Deadline.IDLE)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        assert parser is not None and self.transport is not None
        parser.feed(data)
        if self._current is None:
            self._process()
        elif self._upload is not None:
            self._pump()
        elif parser.buffered > self.config.max_header_size:
            # Pipelined requests pile up while one is handled: stop reading.
            self.transport.pause_reading()

    def eof_received(self) -> None:
        self._eof = True
        assert self.transport is not None
        if self._current is None:
            # Requests complete before the half-close are still answered;
            # _waiting() closes once nothing is left.
            self._process()
        elif self._upload is not None and self._upload_error is None:
            self._upload_failed(400, "request body cut off")

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._cancel_timer()
        self._close_stream()
        self._close_file()
        self._current = None
        if self._upload is not None:
            self._cancel_upload_timer()
            self._upload.fail(RequestBodyError(400, "the client went away"))
            self._upload = None

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._stream is not None and not self._stream_waiting:
            self._pull()

    def shutdown(self) -> None:
        """Server is stopping: finish the request in flight, then close.

        A request still arriving counts as in flight (its timeouts apply), and
        so does the first request of a connection accepted a moment ago: a client
        opens a connection to send one, and closing it unanswered would fail a
        request that reached the server before the stop (during a rolling
        restart, one the next worker would have served).  An idle keep-alive
        connection closes now.
        """
        self._stopping = True
        transport, parser = self.transport, self.parser
        if self._current is not None or transport is None or parser is None:
            return
        if parser.buffered:
            return  # _waiting() closes after the answer
        if self._fresh:
            deadline = time.monotonic() + FIRST_REQUEST_GRACE
            if self._phase != _IDLE_PHASE or deadline < self._deadline:
                self._phase = _IDLE_PHASE
                self._deadline = deadline
                self._cancel_timer()
                self._timer = transport.reactor.call_at(deadline, self._on_deadline)
            return
        transport.close()

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
                # The deadline timer stays armed: it ignores a connection with a
                # request in flight, which saves a heap push per request.
                self._phase = _NO_PHASE
                self._current = request
                self._fresh = False
                request.local_addr = transport.sockname
                if transport.secure:
                    request.scheme = "https"
                if self._trusted is not None:
                    request.remote_addr, scheme = resolve(
                        request.headers.by_name(), request.remote_addr, self._trusted)
                    if scheme is not None:
                        request.scheme = scheme
                self.client_addr = request.remote_addr
                self._continue_sent = False
                if "upgrade" in request.headers.by_name():
                    handler = upgrade_handler(request, self.upgrades)
                    if handler is not None:
                        self._upgrade(handler, request)
                        continue
                self.app.handle_request(self, request)
        finally:
            self._processing = False

    def _waiting(self, parser: RequestParser) -> Optional[Request]:
        """No complete request yet: send 100-continue if asked, arm the right timeout.

        A request whose handler reads its body as it arrives is returned, to be
        handled now.
        """
        assert self.transport is not None
        if self._eof:
            self.transport.close()
            return None
        if self._stopping and not parser.buffered:
            self.transport.close()
            return None
        self.transport.resume_reading()
        if parser.pending is not None:
            if parser.fresh_body:
                parser.fresh_body = False
                request = parser.pending
                assert request is not None
                if "upgrade" not in request.headers.by_name() \
                        or upgrade_handler(request, self.upgrades) is None:
                    stream = self.app.stream_body(self, request)
                    if stream is not None:
                        self._start_upload(stream)
                        return request
            if parser.expect_continue and not self._continue_sent:
                self._continue_sent = True
                self.transport.write(CONTINUE)
            self._arm_deadline(_BODY_PHASE)
        elif parser.buffered:
            self._arm_deadline(_HEAD_PHASE)
        else:
            self._arm_deadline(_IDLE_PHASE)
        return None

    # -- request bodies read as they arrive ---------------------------------------------

    def _start_upload(self, stream: BodyStream) -> None:
        assert self.transport is not None
        self._upload = stream
        self._upload_error = None
        self._draining = False
        # The body's deadline counts from its head, as for a collected body; the
        # connection's own timer is idle while the handler runs.
        if self.config.body_timeout:
            self._upload_timer = self.transport.reactor.call_later(
                self.config.body_timeout, self._upload_expired)
        self._pump()  # the bytes that came with the head

    def upload_wanted(self, stream: BodyStream) -> None:
        """The handler waits for ``stream``'s bytes, or has made room in it
        (reactor thread; called through the application's hand-off)."""
        transport = self.transport
        parser = self.parser
        if (stream is not self._upload or self._upload_error is not None or self._draining
                or transport is None or transport.is_closing() or parser is None):
            return
        # 100 Continue only once the handler reads: one that answers without
        # reading spares the client from sending the body at all.
        if parser.expect_continue and not self._continue_sent:
            self._continue_sent = True
            transport.write(CONTINUE)
        self._pump()

    def _pump(self) -> None:
        """Move body bytes from the parser to the handler's stream while it has
        room (or discard them once the response is out)."""
        stream = self._upload
        parser = self.parser
        transport = self.transport
        assert stream is not None and parser is not None and transport is not None
        if self._upload_error is not None:
            return
        while True:
            if self._draining:
                room = 1 << 20
            else:
                room = stream.room()
                if room <= 0:
                    if stream.stop_filling():
                        # The handler's upload_wanted resumes us once it has read.
                        transport.pause_reading()
                        return
                    continue
            try:
                data = parser.read_body(room)
            except HttpError as exc:
                self._upload_failed(exc.status, exc.message)
                return
            if data and not self._draining:
                stream.feed(data)
            if parser.pending is None:
                self._upload_ended()
                return
            if not data:
                transport.resume_reading()
                return

    def _upload_ended(self) -> None:
        stream = self._upload
        assert stream is not None
        self._upload = None
        self._cancel_upload_timer()
        if self._draining:
            self._draining = False
            self._finish_response()  # the response was out already
        else:
            stream.end()

    def _upload_failed(self, status: int, message: str) -> None:
        """The body cannot be completed: the handler's reads raise, and its
        answer, if it has not started, becomes this error."""
        stream = self._upload
        transport = self.transport
        assert stream is not None and transport is not None
        error = self._upload_error = RequestBodyError(status, message)
        self._cancel_upload_timer()
        stream.fail(error)
        log.info("%s: %d %s", transport.peername, status, message)
        if self._draining:
            self._draining = False
            self._upload = None
            self._current = None
            transport.close()
        else:
            transport.pause_reading()  # nothing more is parsed; the answer will linger

    def _upload_expired(self) -> None:
        self._upload_timer = None
        if self._upload is not None and self._upload_error is None:
            self._upload_failed(408, "request body not received in time")

    def _cancel_upload_timer(self) -> None:
        if self._upload_timer is not None:
            self._upload_timer.cancel()
            self._upload_timer = None

    def _settle_upload(self, response: Response, close: bool) -> Tuple[Response, bool]:
        """A response starts while its request's body has not ended: the answer
        to a failed body, or whether the connection can stay open."""
        parser = self.parser
        assert parser is not None
        error = self._upload_error
        if error is not None:
            # The request failed under the handler: its answer is never sent.
            body = response.body
            self._close_body(body)
            return error_answer(HttpError(error.status, error.message)), True
        remaining = parser.body_remaining
        # Without our 100 Continue the client may or may not send the body: the
        # next bytes could be either, so the connection cannot be reused.  A
        # rest larger than max_unread_body (or of unknown size: chunked) is not
        # worth reading to keep it.
        if (parser.expect_continue and not self._continue_sent) or remaining < 0 \
                or remaining > self.config.max_unread_body:
            close = True
        self._continue_sent = True  # no 100 Continue after a final answer
        return response, close

    def _finish_upload(self) -> None:
        """The response is out and the request's body has not ended."""
        stream = self._upload
        assert stream is not None
        stream.discard()
        if self._upload_error is None and self._keep_alive and not self._stopping:
            self._draining = True
            self._pump()
            return
        self._upload = None
        self._cancel_upload_timer()
        self._current = None
        self._linger()

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
        transport.set_protocol(_Lingering(self.config.body_timeout))

    def _upgrade(self, handler: UpgradeHandler, request: Request) -> None:
        """Let the handler registered for the request's Upgrade token answer it:
        a refusal is sent and closes; a switch writes its ``101`` and hands the
        connection, with the bytes that followed the request, to its protocol."""
        transport = self.transport
        parser = self.parser
        assert transport is not None and parser is not None
        answer = handler(self, request)
        if isinstance(answer, Response):
            self.send_response(answer, close=True)
            return
        transport.write(answer.head)
        self._log_access(request, 101, 0)
        self._cancel_timer()
        self._current = None
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
            response, close = self._settle_upload(response, close)
            body = response.body
        if type(body) is FileBody:
            self._send_file(request, response.status, response.headers, body, close)
            return
        try:
            data, large, framer, self._keep_alive, size = frame_response(
                request, response.status, response.headers, body, close or self._stopping)
        except ValueError:
            log.exception("invalid response header")
            self._current = None
            self._send_error(500, "invalid response header")
            return
        transport.write(data)
        if large:
            transport.write(large)  # kept by reference, not copied
        self._log_access(request, response.status, size)
        if framer is None:
            if type(body) is not bytes:
                self._close_body(body)  # a HEAD, 204 or 304 answer: nothing is sent
            self._finish_response()
            return
        self._framer = framer
        self._stream_body = body
        self._stream = iter(cast(Iterable[bytes], body))  # framed as a stream: not bytes
        self._pull()

    def _send_file(self, request: Request, status: int, headers: List[Tuple[str, str]],
                   body: FileBody, close: bool) -> None:
        transport = self.transport
        assert transport is not None
        try:
            data, status, region, self._keep_alive, size = frame_file(
                request, status, headers, body, close or self._stopping)
        except ValueError:
            self.app.close_body(self, body.close)
            log.exception("invalid response header")
            self._current = None
            self._send_error(500, "invalid response header")
            return
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

    def _pull(self) -> None:
        """Ask for the next chunk while the peer keeps up."""
        if self._stream is None or self._paused or self._stream_waiting:
            return
        self._stream_waiting = True
        self.app.next_chunk(self, self._stream, self._on_chunk)

    def _on_chunk(self, chunk: Optional[bytes], exc: Optional[BaseException]) -> None:
        self._stream_waiting = False
        transport = self.transport
        if self._stream is None or transport is None or transport.closed:
            return
        if exc is not None:
            # Headers are gone already: the only honest signal is to cut the connection.
            log.error("error while streaming a response body", exc_info=exc)
            self._close_stream()
            transport.abort()
            return
        framer = self._framer
        assert framer is not None
        if chunk is None:
            self._close_stream()
            transport.write(framer.end())
            self._finish_response()
            return
        for part in framer.data(chunk):
            transport.write(part)
        self._pull()

    def _close_stream(self) -> None:
        body, self._stream_body = self._stream_body, None
        self._stream = None
        self._framer = None
        if body is not None:
            self._close_body(body)

    def _finish_response(self) -> None:
        if self._upload is not None:
            self._finish_upload()
            return
        request = self._current
        transport = self.transport
        self._current = None
        assert transport is not None
        if request is None or not self._keep_alive or self._stopping:
            transport.close()
            return
        if not self._processing:  # else the running _process loop goes on by itself
            self._process()

    def _send_error(self, status: int, message: str) -> None:
        """Answer a request we could not parse, then close the connection."""
        transport = self.transport
        assert transport is not None
        transport.write(error_response(status, message))
        if status == 413:
            self._linger()  # the client may still be sending the refused body
        else:
            transport.close()
        log.info("%s: %d %s", transport.peername, status, message)

    def _log_access(self, request: Request, status: int, size: int) -> None:
        if access_log.isEnabledFor(logging.INFO):
            peer = request.remote_addr
            host = peer[0] if isinstance(peer, tuple) else "-"
            access_log.info('%s "%s %s %s" %d %s', host, request.method, request.target,
                            request.version, status, size if size >= 0 else "-")

    # -- timeouts --------------------------------------------------------------------

    def _arm_deadline(self, phase: _Deadline) -> None:
        """Start the deadline of ``phase``, unless it is already running.

        A phase's deadline counts from its start: bytes trickling in do not
        extend it (that is what makes a slowloris client time out).  One lazily
        re-armed timer per connection keeps this cheap on every request.
        """
        if phase == self._phase or self.transport is None:
            return
        self._phase = phase
        config = self.config
        timeout = (config.keepalive_timeout if phase == _IDLE_PHASE
                   else config.header_timeout if phase == _HEAD_PHASE else config.body_timeout)
        if not timeout:
            self._cancel_timer()
            return
        self._deadline = time.monotonic() + timeout
        if self._timer is not None and self._timer.when > self._deadline:
            self._cancel_timer()  # a later timer would fire too late; a sooner one re-arms
        if self._timer is None:
            self._timer = self.transport.reactor.call_at(self._deadline, self._on_deadline)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_deadline(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or transport.closed or self._current is not None:
            return
        now = time.monotonic()
        if now < self._deadline:
            self._timer = transport.reactor.call_at(self._deadline, self._on_deadline)
            return
        if self._phase != _Deadline.IDLE:
            self._send_error(408, "request not received in time")
        else:
            transport.close()


class _Lingering:
    """The last protocol of a connection that closes with part of a request
    body unread: the answer goes out followed by FIN, and what the client still
    sends is dropped until it closes too, or ``timeout`` seconds pass."""

    name = "http"

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._timer: Optional[Timer] = None
        self.transport: Optional[Transport] = None

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport
        if not self._timeout:
            transport.close()
            return
        transport.close_write()
        transport.resume_reading()
        self._timer = transport.reactor.call_later(self._timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> None:
        assert self.transport is not None
        self.transport.close()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def shutdown(self) -> None:
        assert self.transport is not None
        self.transport.close()

