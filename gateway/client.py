"""Command-line client: stream a WAV to a running gateway, print events, save the reply.

    python -m gateway.client speech.wav --url ws://127.0.0.1:8080/api/v1/voice/ws -o reply.wav

The WAV is sent as real-time 20 ms frames (resampled to 16 kHz mono), followed by
silence so the server's VAD can end the turn; the client waits for the reply to
finish, then prints the latency it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import websockets

from gateway.audio import pcm

FRAME_MS = 20
RATE = 16000


def load_wav(path: str | Path, rate: int = RATE) -> bytes:
    data, sr = sf.read(str(path), dtype="int16", always_2d=True)
    mono = data.mean(axis=1).astype("<i2").tobytes() if data.shape[1] > 1 else data.tobytes()
    return pcm.resample(mono, sr, rate)


def save_wav(path: str | Path, data: bytes, rate: int) -> None:
    sf.write(str(path), np.frombuffer(data, dtype="<i2"), rate, subtype="PCM_16")


async def stream_frames(ws: Any, audio: bytes, *, realtime: bool = True) -> float:
    """Send audio as 20 ms frames at real-time pace; returns when the last frame went."""
    size = pcm.frame_bytes(RATE, FRAME_MS)
    start = time.monotonic()
    for i, off in enumerate(range(0, len(audio), size)):
        if realtime:
            delay = start + i * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await ws.send(audio[off : off + size])
    return time.monotonic()


async def run(args: argparse.Namespace) -> int:
    speech = load_wav(args.wav)
    silence = bytes(pcm.frame_bytes(RATE, 1000) * 2)  # 2 s: enough for the VAD hangover
    url = args.url + (f"?token={args.token}" if args.token else "")
    headers = {"x-api-key": args.api_key} if args.api_key else None
    reply = bytearray()
    out_rate = 24000
    async with websockets.connect(url, additional_headers=headers, max_size=2**20) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": RATE}))
        speech_end: float | None = None
        first_audio: float | None = None

        async def sender() -> None:
            nonlocal speech_end
            speech_end = await stream_frames(ws, speech)
            await stream_frames(ws, silence)

        send_task = asyncio.create_task(sender())
        try:
            async with asyncio.timeout(args.timeout):
                async for message in ws:
                    if isinstance(message, bytes):
                        first_audio = first_audio or time.monotonic()
                        reply += message
                        continue
                    event = json.loads(message)
                    print(json.dumps(event), flush=True)
                    if event["type"] == "session_started":
                        out_rate = event["output"]["sample_rate"]
                    if event["type"] in ("stream_end", "error") and event.get("code") != "x":
                        if event["type"] == "stream_end":
                            break
        except TimeoutError:
            print("timed out waiting for the reply", file=sys.stderr)
        send_task.cancel()
    if reply and args.output:
        save_wav(args.output, bytes(reply), out_rate)
        print(f"# reply audio: {len(reply) / 2 / out_rate:.2f} s -> {args.output}",
              file=sys.stderr)
    if speech_end and first_audio:
        print(f"# last speech frame sent -> first reply audio: "
              f"{(first_audio - speech_end) * 1000:.0f} ms (includes the VAD hangover)",
              file=sys.stderr)
    return 0 if reply else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.client", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("wav")
    p.add_argument("--url", default="ws://127.0.0.1:8080/api/v1/voice/ws")
    p.add_argument("--token", help="session token from POST /api/get-access-token")
    p.add_argument("--api-key", help="API key (sent as x-api-key)")
    p.add_argument("-o", "--output", default="reply.wav")
    p.add_argument("--timeout", type=float, default=60.0)
    return asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
