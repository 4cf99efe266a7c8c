"""Run the app on uvicorn with WebSocket limits set (uvicorn's defaults allow 16 MiB)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State
from websockets.server import ServerProtocol

from gateway.app import create_app
from gateway.config import Config
from gateway.logs import configure_logging
from gateway.protocol import wsframes
from gateway.transports.websocket import BINARY_SINK, FRAME_WRITER, TEXT_SINK

log = structlog.get_logger("gateway.server")


# Messages a WebSocket may have waiting for the app before reading from it pauses.
WS_QUEUE_HIGH = 16
# A frame dripped in small reads costs a system call and an event-loop turn per read
# (~30 us each: 1 s of CPU for a megabyte in 32-byte segments), whatever the framing
# does. After RX_FREE_READS reads of one frame, reading pauses RX_WAIT_S after each
# small read (a frame then completes at most that much later than its last byte), so
# the kernel gathers the drip into few reads. A megabyte in 32-byte segments took 2.2 s
# of server CPU, 1.1 s with linear framing alone, ~0.15 s so. Clients that send a
# frame in a few reads (all of them, in practice) never wait.
RX_FREE_READS = 8
RX_SMALL_READ = 4096
RX_WAIT_S = 0.05
# The parser's "size of the fragmented message so far" (None: not inside one); renamed
# from cur_size in websockets 16.
_FRAGMENTED = "current_size" if hasattr(ServerProtocol(), "current_size") else "cur_size"


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, made cheaper per audio frame.

    - Stock, it pauses the socket after every message and resumes it when the app takes
      the message: two epoll_ctl calls per frame. Here reading pauses once
      WS_QUEUE_HIGH messages wait (each at most ``ws_max_size``) and resumes when the
      app has taken them all, so memory stays bounded and a flooding client still gets
      backpressure.
    - An app may take binary messages through a direct callback (``BINARY_SINK``), and
      text messages through a callback that may decline them (``TEXT_SINK``: Twilio
      ``media`` and Realtime ``input_audio_buffer.append``, 50 per second per call).
    - After a clean handshake the protocol cuts the client's stream into frames itself
      (``gateway.protocol.wsframes``): a whole binary or text message in one frame —
      every audio chunk, every JSON event — is unmasked and delivered without the
      general parser (text still checked for UTF-8, 1007 as stock); every other frame
      (control, fragments, anything malformed or too big) is handed to the stock parser
      whole, so it always sits at a frame boundary and judges those as before.
    """

    binary_sink: Callable[[bytes], None] | None = None
    text_sink: Callable[[bytes], bool] | None = None
    _framing = False  # frames are cut here (set once the handshake ended cleanly)
    # The start of a frame whose end has not arrived. A bytearray grown in place: a
    # frame dripped in small reads costs linear, not quadratic, CPU (bytes concatenated
    # per read cost 1.5 s for a 1 MB frame sent in 32-byte segments).
    _rx: bytearray | None = None
    _rx_need = 0  # bytes _rx must hold before its frame can be complete
    _rx_reads = 0  # reads the incomplete frame in _rx has taken so far
    _rx_held = False  # reading paused by the drip throttle (not by backpressure)
    _request_tail = b""  # the handshake's last bytes, to find where the request ends
    _request_ended = False
    _clean_handshake = True  # no byte arrived after the request before the 101
    _protocol_error_logged = False
    _bad_text = False

    def data_received(self, data: bytes) -> None:
        if self._framing:
            self._frames_received(data)
        elif (self.conn.state is State.OPEN and self._clean_handshake
                and not self.conn.reader.buffer):
            self._framing = True
            self._frames_received(data)
        else:
            if self.conn.state is State.CONNECTING:
                self._watch_handshake(data)
            super().data_received(data)

    def _watch_handshake(self, data: bytes) -> None:
        # A client must wait for the 101 before sending frames (RFC 6455 §4.1). One that
        # does not leaves bytes in the stock parser, which then keeps this connection.
        if self._request_ended:
            self._clean_handshake = False
            return
        buf = self._request_tail + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self._request_tail = buf[-3:]
            return
        self._request_ended = True
        if end + 4 != len(buf):
            self._clean_handshake = False

    def _frames_received(self, data: bytes) -> None:
        rx = self._rx
        if rx is not None:
            rx += data
            if len(rx) < self._rx_need:
                self._throttle(len(data))
                return  # a big frame still arriving: nothing to look at yet
            buf: bytes | bytearray = rx
        else:
            buf = data  # the common case: no copy
        pos, size, limit = 0, len(buf), self.config.ws_max_size
        conn = self.conn
        while pos < size:
            start, end = wsframes.frame_bounds(buf, pos, limit)
            if end == wsframes.INCOMPLETE:
                self._rx_need = start - pos
                break
            if end == wsframes.REFUSED:
                self._stop_framing(bytes(buf[pos:]))  # the stock parser closes with 1002/1009
                return
            first = buf[pos]
            if first == wsframes.BINARY_FIN and getattr(conn, _FRAGMENTED) is None:
                payload = wsframes.unmask(buf, start, end)
                if self.binary_sink is not None and self.queue.empty() and not self.close_sent:
                    self._to_sink(payload)
                else:
                    self.curr_msg_data_type = "bytes"
                    self.frames = [payload]
                    self.send_receive_event_to_app()
            elif first == wsframes.TEXT_FIN and getattr(conn, _FRAGMENTED) is None:
                payload = wsframes.unmask(buf, start, end)
                if (self.text_sink is None or not self.queue.empty() or self.close_sent
                        or not self._to_text_sink(payload)):
                    # Declined (or no sink): the app's queue, as the stock parser would,
                    # UTF-8 checked there (1007), without its generator per frame.
                    self.curr_msg_data_type = "text"
                    self.frames = [payload]
                    self.send_receive_event_to_app()
                    if conn.state is not State.OPEN:  # bad UTF-8: closing, stock from here
                        self._stop_framing(bytes(buf[end:]))
                        return
            else:
                super().data_received(bytes(buf[pos:end]))
                if conn.parser_exc is not None:  # failed and closed: drop the rest
                    self._stop_framing(b"")
                    return
                if conn.state is not State.OPEN:  # closing: the stock path from here
                    self._stop_framing(bytes(buf[end:]))
                    return
            pos = end
        self._keep_rest(buf, pos)
        if self._rx is None:
            self._rx_reads = 0
        else:
            self._throttle(len(data))

    def _throttle(self, read: int) -> None:
        self._rx_reads += 1
        if (self._rx_reads > RX_FREE_READS and read < RX_SMALL_READ and not self._rx_held
                and not self.read_paused):
            self._rx_held = True
            self.transport.pause_reading()
            self.loop.call_later(RX_WAIT_S, self._release)

    def _release(self) -> None:
        self._rx_held = False
        # Backpressure (the app's queue is full) keeps reading paused; it resumes then.
        if not self.read_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    def _keep_rest(self, buf: bytes | bytearray, pos: int) -> None:
        """Keep ``buf[pos:]`` (an incomplete frame) for the next read, without copying
        what is already kept: ``del`` at the front of a bytearray is cheap in CPython."""
        if pos >= len(buf):
            self._rx = None  # let a big frame's buffer go
        elif buf is self._rx:
            if pos:
                del self._rx[:pos]
        else:
            self._rx = bytearray(memoryview(buf)[pos:])

    def _stop_framing(self, rest: bytes) -> None:
        self._framing = False
        self._rx = None
        if rest:
            super().data_received(rest)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # absent when the handshake was refused
        if scope is not None:
            extensions: Any = scope["extensions"]
            extensions[BINARY_SINK] = self._set_sink
            extensions[TEXT_SINK] = self._set_text_sink
            extensions[FRAME_WRITER] = (self._can_write, self._write)

    def _can_write(self) -> bool:
        """Whether messages may go straight out: open, and the client keeps reading."""
        return (self.handshake_complete and not self.close_sent and not self.disconnected
                and self.writable.is_set() and self.conn.state is State.OPEN
                and not self.transport.is_closing())

    def _write(self, messages: list[bytes | str]) -> None:
        # What uvicorn's send does per message (the sans-I/O serializer, one write),
        # for a batch: the frames are built here and written together.
        frames = [wsframes.server_frame(wsframes.BINARY_FIN, m) if isinstance(m, bytes)
                  else wsframes.server_frame(wsframes.TEXT_FIN, m.encode()) for m in messages]
        if frames:
            self.transport.write(b"".join(frames))

    def _set_sink(self, sink: Callable[[bytes], None] | None) -> None:
        self.binary_sink = sink

    def _set_text_sink(self, sink: Callable[[bytes], bool] | None) -> None:
        self.text_sink = sink

    def _to_text_sink(self, data: bytes) -> bool:
        try:
            return self.text_sink(data)  # type: ignore[misc]
        except Exception:  # as _to_sink; the message then goes the ordinary way
            log.exception("text_sink_failed")
            self.text_sink = None
            return False

    def _to_sink(self, data: bytes) -> None:
        try:
            self.binary_sink(data)  # type: ignore[misc]
        except Exception:  # the sink's bug must not take the connection's reader
            log.exception("binary_sink_failed")
            self.binary_sink = None

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self._valid_text():
            return
        if (self.binary_sink is not None and self.curr_msg_data_type == "bytes"
                and not self.close_sent and self.queue.empty()):
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            self.frames = []
            self._to_sink(data)
            return
        if self.read_paused or self.queue.qsize() >= WS_QUEUE_HIGH - 1:
            super().send_receive_event_to_app()  # pauses reading, as stock
            return
        self.read_paused = True  # so the stock method queues without pausing
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = False


    def _valid_text(self) -> bool:
        # Stock logs an invalid text message at ERROR with a plain-text traceback: one
        # per frame a hostile client sends. Here it is one structured line and a 1007.
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        try:
            data.decode()
        except UnicodeDecodeError:
            self.frames = []
            if not self.close_sent:
                self.conn.send_close(1007)  # as stock
                self._bad_text = True
                self.handle_parser_exception()
            return False
        self.frames = [data]
        return True

    def handle_parser_exception(self) -> None:
        """A client broke the protocol (bad frame, bad UTF-8, too big): closed with the
        code the parser chose, logged once for the connection, without a traceback."""
        if not self._protocol_error_logged:
            self._protocol_error_logged = True
            sent = self.conn.close_sent
            exc = self.conn.parser_exc
            log.warning("ws_protocol_error", code=sent.code if sent else None,
                        reason="invalid UTF-8 in a text message" if self._bad_text
                        else sent.reason if sent else "",
                        error=type(exc).__name__ if exc else "UnicodeDecodeError",
                        client=self.client[0] if self.client else None)
        super().handle_parser_exception()


# A request head longer than this takes the stock path (h11 judges its size).
UPGRADE_HEAD_MAX = 8192


def websocket_upgrade(data: bytes) -> bytes | None:
    """``data`` as the WebSocket protocol should get it if it is exactly one whole,
    plainly formed WebSocket upgrade request head, else None: ``GET``, ending at its
    blank line with nothing after it, every header line a ``name: value``,
    ``Connection`` listing ``upgrade`` and ``Upgrade: websocket`` (as uvicorn decides an
    upgrade). Header names come back lowercased, as h11 gives them (ASGI wants them so).
    Anything else — split over reads, pipelined, folded, oversized — is None, and h11
    judges it as before."""
    if (len(data) > UPGRADE_HEAD_MAX or not data.startswith(b"GET ")
            or data.find(b"\r\n\r\n") != len(data) - 4):
        return None
    lines = data[:-4].split(b"\r\n")
    connection: list[bytes] = []
    upgrade = None
    for i in range(1, len(lines)):
        name, colon, value = lines[i].partition(b":")
        if not colon or not name or name != name.strip() or b"\n" in value:
            return None
        name, value = name.lower(), value.strip()
        lines[i] = name + b": " + value
        if name == b"connection":
            connection = [token.strip().lower() for token in value.split(b",")]
        elif name == b"upgrade":
            upgrade = value.lower()
    if upgrade != b"websocket" or b"upgrade" not in connection:
        return None
    return b"\r\n".join(lines) + b"\r\n\r\n"


class HttpProtocol(H11Protocol):
    """uvicorn's h11 protocol, except that a connection whose first read is a whole
    WebSocket upgrade request (``websocket_upgrade``) goes straight to the WebSocket
    protocol.

    Stock, h11 parses the request, uvicorn writes it out again and the WebSocket
    protocol (websockets' parser) parses it a second time: ~0.1 ms of a voice
    connect's ~1.1 ms of CPU. websockets checks the request in full either way (a bad
    handshake gets its 400); every other request takes the stock path.
    """

    _first_read = True

    def data_received(self, data: bytes) -> None:
        if self._first_read:
            self._first_read = False
            request = websocket_upgrade(data) if self.ws_protocol_class is not None else None
            if request is not None:
                self._upgrade(request)
                return
        super().data_received(data)

    def _upgrade(self, request: bytes) -> None:
        # What H11Protocol.handle_websocket_upgrade does, without h11's parse.
        self._unset_keepalive_if_required()
        self.connections.discard(self)
        protocol = self.ws_protocol_class(  # type: ignore[misc, call-arg]
            config=self.config, server_state=self.server_state, app_state=self.app_state)
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        protocol.data_received(request)


def uvicorn_config(cfg: Config, app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=cfg.server.host,
        port=cfg.server.port,
        # The sans-I/O implementation (cheaper than the legacy one), with reads paused
        # only when the app falls behind. No per-message deflate: audio does not
        # compress, and it doubled the memory per socket.
        http=HttpProtocol,
        ws=WebSocketProtocol,
        ws_per_message_deflate=False,
        ws_max_size=cfg.server.max_message_bytes,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(cfg.server.session_close_timeout_s),
        lifespan="on",
    )


class DrainingServer(uvicorn.Server):
    """On shutdown, lets live voice sessions finish their reply and closes them with 1001.

    Plain uvicorn closes every WebSocket at once with 1012, cutting replies mid-word. A
    reply still going after ``server.drain_timeout_s`` is cut like a barge-in: the client
    gets ``interrupted`` and ``stream_end``, and the turn is stored as heard.
    """

    def __init__(self, config: uvicorn.Config, app: Any, *, freeze_gc: bool = False,
                 drain_timeout_s: float = 25.0) -> None:
        super().__init__(config)
        self.gateway_app = app
        self.freeze_gc = freeze_gc
        self.drain_timeout_s = drain_timeout_s

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.freeze_gc:
            # What start-up loaded (models, routes, ORM mappings: ~200k objects) lives
            # as long as the process. Out of the collector's sight, each full collection
            # scans only the sessions' objects: at 300 sessions, pauses of 100-200 ms
            # while they connected became ~10 ms. (Only for a server that owns its
            # process: in a test process it would pin every earlier test's objects.)
            gc.collect()
            gc.freeze()

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.should_exit and sig in (signal.SIGTERM, signal.SIGINT):
            # A second signal: the drain's deadline is now. Not uvicorn's force_exit
            # (for SIGTERM): that would skip the lifespan's shutdown, and with it the
            # flush of the turns just cut.
            registry = getattr(self.gateway_app.state, "sessions", None)
            if registry is not None:
                with contextlib.suppress(RuntimeError):  # (no loop: nothing drains)
                    # From a signal handler: wake the drain on the loop's own terms.
                    asyncio.get_running_loop().call_soon_threadsafe(registry.stop_now)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        registry = getattr(self.gateway_app.state, "sessions", None)
        if registry is not None:
            # Still listening: readiness answers 503 and new WebSocket upgrades get a
            # 503 with Retry-After (``gateway.cluster.sessions.DrainGate``), so a load
            # balancer moves new calls elsewhere without a refused connection. Live
            # sessions go on until they end or the deadline (then 1012); the lifespan
            # then flushes the voice log.
            await registry.drain(self.drain_timeout_s)
        await super().shutdown(sockets)


def make_server(cfg: Config, app: Any, *, freeze_gc: bool = False) -> DrainingServer:
    return DrainingServer(uvicorn_config(cfg, app), app, freeze_gc=freeze_gc,
                          drain_timeout_s=cfg.server.drain_timeout_s)


def serve(cfg: Config) -> None:
    configure_logging(cfg)
    if cfg.server.workers <= 1:
        make_server(cfg, create_app(cfg), freeze_gc=True).run()
        return
    serve_prefork(cfg)


def serve_prefork(cfg: Config) -> None:
    """Several worker processes on one listening socket (one event loop per core).

    The parent binds, prepares the database once, forks, and forwards SIGTERM/SIGINT;
    each child loads its own models and runs the usual server (drain on shutdown
    included). Sessions are independent, so the kernel's accept spreading is enough.
    In-memory rate limits are then per worker: use Redis to share them.
    """
    asyncio.run(_prepare(cfg))
    sock = listening_socket(cfg.server.host, cfg.server.port)
    children: list[int] = []
    for _ in range(cfg.server.workers):
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            make_server(cfg, create_app(cfg), freeze_gc=True).run(sockets=[sock])
            os._exit(0)
        children.append(pid)
    log.info("workers_started", pids=children, port=cfg.server.port)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, 0)
    sock.close()


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket made with ``proto=IPPROTO_TCP``, inheritable by the workers.

    asyncio sets TCP_NODELAY on accepted connections only when the listening socket
    says IPPROTO_TCP; ``socket.create_server`` leaves ``proto`` 0, and Nagle's algorithm
    then held each reply's first audio ~20 ms behind the events written just before it.
    """
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def _prepare(cfg: Config) -> None:
    """Migrations, the default assistant and the token secret: once, before forking."""
    from gateway.access.auth import load_token_secret
    from gateway.store.assistants import ensure_default_assistant
    from gateway.store.db import Database

    db = Database.from_config(cfg)
    try:
        async with db.startup_lock():
            await db.migrate()
            await ensure_default_assistant(db, cfg)
    finally:
        await db.close()
    load_token_secret(cfg)
