"""Where a client's WebSocket frames begin and end in a byte stream (RFC 6455 §5.2).

Sans I/O, for the server's hot path: a client streaming 20 ms of audio sends one small
masked binary frame every 20 ms, and the general-purpose parser (a generator per frame,
a Frame object, extension hooks) costs ~18 µs of CPU for each; finding the frame's
bounds and unmasking it here costs ~2 µs. Only the common case is decided here: a
complete, masked frame within the size limit. Anything else — too big, unmasked, or a
length field not yet complete — is for the full parser to judge.
"""

from __future__ import annotations

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

BINARY_FIN = 0x82  # FIN, no RSV bits, opcode 2: a whole binary message in one frame
TEXT_FIN = 0x81
INCOMPLETE = -1  # more bytes are needed to know (or to have) the frame
REFUSED = -2  # over the size limit or unmasked: the full parser fails the connection
# A read as it came, or the server's buffer of an incomplete frame (grown in place).
Buffer = bytes | bytearray


def frame_bounds(buf: Buffer, pos: int, max_size: int) -> tuple[int, int]:
    """(payload start, frame end) of the client frame starting at ``buf[pos]``.

    The end is INCOMPLETE when ``buf`` does not hold the whole frame yet (the first
    value is then the frame's end if its header is complete, else 0: the caller need
    not look again before that many bytes are there), REFUSED when the frame is
    unmasked or its payload is over ``max_size``. The 4-byte masking key sits just
    before the payload.
    """
    avail = len(buf) - pos
    if avail < 2:
        return 0, INCOMPLETE
    second = buf[pos + 1]
    length = second & 0x7F
    head = 2
    if length == 126:
        if avail < 4:
            return 0, INCOMPLETE
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        head = 4
    elif length == 127:
        if avail < 10:
            return 0, INCOMPLETE
        length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
        head = 10
    if not second & 0x80 or length > max_size:
        return 0, REFUSED
    start = pos + head + 4
    end = start + length
    if end > len(buf):
        return end, INCOMPLETE
    return start, end


def unmask(buf: Buffer, start: int, end: int) -> bytes:
    """The payload of a masked frame found by :func:`frame_bounds`."""
    # A bytes slice, not a memoryview: for audio-sized frames the copy is cheaper.
    return apply_mask(buf[start:end], buf[start - 4 : start])


def server_frame(first: int, payload: bytes) -> bytes:
    """A server-to-client frame (unmasked, no extension) of one whole message: ``first``
    is BINARY_FIN or TEXT_FIN. Byte for byte what websockets' serializer writes."""
    n = len(payload)
    if n < 126:
        head = bytes((first, n))
    elif n < 65536:
        head = bytes((first, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 127)) + n.to_bytes(8, "big")
    return head + payload
