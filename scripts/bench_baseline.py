#!/usr/bin/env python3
"""A bare ``websockets`` server for ``scripts/bench --baseline``: the floor to compare with.

It does what the gateway must do for every 20 ms of client audio and nothing else:
accept the WebSocket (asyncio ``websockets.serve``, no ASGI, no FastAPI), read the
optional ``start`` text message, cut the binary audio into 20 ms frames and run the
VAD on each frame (webrtcvad by default, or the same energy gate as the gateway's
``null`` VAD). It never replies. With ``--wire twilio`` or ``realtime`` the audio comes
in JSON text messages instead: each is parsed, its base64 decoded (pybase64, as the
gateway does), μ-law decoded (Twilio, VAD at 8 kHz as webrtcvad takes it) or resampled
24 -> 16 kHz as a stream (Realtime, which webrtcvad cannot take), then framed and judged
the same way.
``GET /api/health`` answers 200 so the bench can wait for it like it waits for the gateway.

    python scripts/bench_baseline.py --port 8765 [--vad webrtcvad|null] [--aggressiveness 2]
        [--min-dbfs -50] [--wire v1|twilio|realtime]

The WebSocket settings mirror ``gateway/server.py`` (1 MiB messages, ping every 20 s;
compression is whatever the client offers, as with uvicorn's default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import pybase64  # the gateway's base64 too: the floor is no slower than it needs be
import websockets
from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from gateway.audio import pcm

RATE = 16000
FRAME_MS = 20
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2
VAD_RATE = {"v1": 16000, "twilio": 8000, "realtime": 16000}
_THRESHOLD_SQ = (32768.0 * 10.0 ** (-45.0 / 20.0)) ** 2  # gateway.providers.null's gate


class EnergyGate:
    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        pass

    def is_speech(self, frame: bytes, rate: int) -> bool:
        x = np.frombuffer(frame, dtype="<i2").astype(np.float32)
        return bool(x.size) and float(np.dot(x, x)) > _THRESHOLD_SQ * x.size


class WebRTCGated:
    """webrtcvad, then an energy floor on frames it calls speech (as the gateway's
    webrtcvad provider does when ``vad.min_speech_dbfs`` is set)."""

    def __init__(self, aggressiveness: int, min_dbfs: float, frame_bytes: int) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(aggressiveness).is_speech
        self._min_energy = (frame_bytes // 2) * (32768.0 * 10 ** (min_dbfs / 20)) ** 2

    def is_speech(self, frame: bytes, rate: int) -> bool:
        if not self._vad(frame, rate):
            return False
        x = np.frombuffer(frame, dtype=np.int16).astype(np.int64)
        return float(np.dot(x, x)) >= self._min_energy


def make_vad(kind: str, aggressiveness: int, min_dbfs: float | None, frame_bytes: int) -> Any:
    if kind == "webrtcvad":
        if min_dbfs is not None:
            return WebRTCGated(aggressiveness, min_dbfs, frame_bytes)
        import webrtcvad

        return webrtcvad.Vad(aggressiveness)
    return EnergyGate()


def health(connection: ServerConnection, request: Any) -> Any:
    if request.path.startswith("/api/health"):
        return connection.respond(HTTPStatus.OK, '{"status": "ok"}\n')
    return None


def text_audio(wire: str) -> Any:
    """For the JSON wires: a text message -> PCM at the VAD rate (None: not audio)."""
    resampler = pcm.Resampler(24000, 16000, pcm.CLIENT_AUDIO)

    def twilio(message: str) -> bytes | None:
        msg = json.loads(message)
        if msg.get("event") != "media":
            return None
        return pcm.mulaw_decode(pybase64.b64decode(msg["media"]["payload"], validate=True))

    def realtime(message: str) -> bytes | None:
        msg = json.loads(message)
        if msg.get("type") != "input_audio_buffer.append":
            return None
        return resampler.process(pybase64.b64decode(msg["audio"], validate=True))

    return {"twilio": twilio, "realtime": realtime}.get(wire)


def handler_factory(kind: str, aggressiveness: int, min_dbfs: float | None,
                    wire: str = "v1") -> Any:
    rate = VAD_RATE[wire]
    frame_bytes = rate * FRAME_MS // 1000 * 2

    async def handler(ws: ServerConnection) -> None:
        vad = make_vad(kind, aggressiveness, min_dbfs, frame_bytes)
        is_speech = vad.is_speech
        decode = text_audio(wire)
        buf = bytearray()
        speech_frames = 0
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in ws:
                if isinstance(message, str):
                    if decode is None:
                        with contextlib.suppress(ValueError):
                            json.loads(message)
                        continue
                    audio = decode(message)
                    if audio is None:
                        continue
                    buf += audio
                else:
                    buf += message
                n = len(buf) // frame_bytes
                if not n:
                    continue
                cut = n * frame_bytes
                data = bytes(buf[:cut])
                del buf[:cut]
                for i in range(n):
                    if is_speech(data[i * frame_bytes : (i + 1) * frame_bytes], rate):
                        speech_frames += 1

    return handler


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        handler_factory(args.vad, args.aggressiveness, args.min_dbfs, args.wire), args.host,
        args.port,
        process_request=health, max_size=1 << 20, max_queue=64,
        ping_interval=20.0, ping_timeout=20.0, server_header=None,
    ):
        print(f"baseline listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
        await stop


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--vad", choices=("webrtcvad", "null"), default="webrtcvad")
    p.add_argument("--aggressiveness", type=int, default=2)
    p.add_argument("--min-dbfs", type=float,
                   help="energy floor after webrtcvad (the gateway's vad.min_speech_dbfs)")
    p.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop")
    p.add_argument("--wire", choices=tuple(VAD_RATE), default="v1",
                   help="how audio arrives: binary PCM, Twilio media or Realtime appends")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("the baseline server binds to loopback only")
    runner: Any = asyncio.run
    if not args.no_uvloop:  # uvicorn runs on uvloop when it is installed: match it
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    runner(main(args))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
