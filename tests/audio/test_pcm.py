"""PCM helpers: G.711 against the reference algorithm, resampling, framing, levels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.audio import pcm

# --- reference G.711: a line-by-line port of Sun Microsystems' public-domain g711.c ------
# (checked, when written, to agree on all inputs with CPython 3.11's audioop, which
# implements the same algorithm).

_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _search(val: int, table: tuple[int, ...]) -> int:
    for i, end in enumerate(table):
        if val <= end:
            return i
    return len(table)


def ref_linear2ulaw(pcm_val: int) -> int:
    pcm_val >>= 2
    if pcm_val < 0:
        pcm_val = -pcm_val
        mask = 0x7F
    else:
        mask = 0xFF
    pcm_val = min(pcm_val, 8159) + (0x84 >> 2)
    seg = _search(pcm_val, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm_val >> (seg + 1)) & 0xF)) ^ mask


def ref_ulaw2linear(u_val: int) -> int:
    u_val = ~u_val & 0xFF
    t = ((u_val & 0x0F) << 3) + 0x84
    t <<= (u_val & 0x70) >> 4
    return (0x84 - t) if u_val & 0x80 else (t - 0x84)


def ref_linear2alaw(pcm_val: int) -> int:
    pcm_val >>= 3
    if pcm_val >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm_val = -pcm_val - 1
    seg = _search(pcm_val, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (pcm_val >> 1) & 0x0F if seg < 2 else (pcm_val >> seg) & 0x0F
    return aval ^ mask


def ref_alaw2linear(a_val: int) -> int:
    a_val ^= 0x55
    t = (a_val & 0x0F) << 4
    seg = (a_val & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a_val & 0x80 else -t


ALL_S16 = np.arange(-32768, 32768, dtype=np.int32)
ALL_S16_BYTES = ALL_S16.astype("<i2").tobytes()
ALL_CODES = bytes(range(256))


def s16(samples: list[int]) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def samples_of(data: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(data, dtype="<i2")]


def sine(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def peak_hz(data: bytes, rate: int) -> float:
    x = np.frombuffer(data, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * rate / len(x)


# --- mu-law ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "code"),
    [
        (0, 0xFF),
        (-1, 0x7E),
        (32767, 0x80),
        (-32768, 0x00),
        (32124, 0x80),
        (-32124, 0x00),
        (100, 0xF2),
        (-100, 0x72),
        (1000, 0xCE),
        (-1000, 0x4E),
    ],
)
def test_mulaw_encode_known_values(sample: int, code: int) -> None:
    assert ref_linear2ulaw(sample) == code  # the reference port agrees with g711.c
    assert pcm.mulaw_encode(s16([sample])) == bytes([code])


@pytest.mark.parametrize(
    ("code", "sample"),
    [
        (0xFF, 0),
        (0x7F, 0),
        (0x80, 32124),
        (0x00, -32124),
        (0xFE, 8),
        (0x7E, -8),
        (0xF0, 120),
        (0x70, -120),
    ],
)
def test_mulaw_decode_known_values(code: int, sample: int) -> None:
    assert ref_ulaw2linear(code) == sample
    assert samples_of(pcm.mulaw_decode(bytes([code]))) == [sample]


def test_mulaw_encode_matches_reference_for_every_sample() -> None:
    expected = bytes(ref_linear2ulaw(int(v)) for v in ALL_S16)
    assert pcm.mulaw_encode(ALL_S16_BYTES) == expected


def test_mulaw_decode_matches_reference_for_every_code() -> None:
    assert samples_of(pcm.mulaw_decode(ALL_CODES)) == [ref_ulaw2linear(c) for c in range(256)]


def test_mulaw_roundtrip_error_bound() -> None:
    back = np.frombuffer(pcm.mulaw_decode(pcm.mulaw_encode(ALL_S16_BYTES)), dtype="<i2")
    err = np.abs(back.astype(np.int32) - ALL_S16)
    # half a quantisation step: <= 1/28 of the magnitude (+ 8 near zero); clipped at 32124
    assert np.all(err <= np.abs(ALL_S16) / 28 + 8)
    assert err.max() == 32768 - 32124  # the largest error: -32768 clipped to -32124


def test_mulaw_codes_are_stable() -> None:
    # decode -> encode gives the same code back (except 0x7F, "negative zero" -> 0xFF)
    again = pcm.mulaw_encode(pcm.mulaw_decode(ALL_CODES))
    assert [c for c in range(256) if again[c] != c] == [0x7F]
    assert again[0x7F] == 0xFF


# --- A-law -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "code"),
    [
        (0, 0xD5),
        (-1, 0x55),
        (32767, 0xAA),
        (-32768, 0x2A),
        (8, 0xD5),
        (16, 0xD4),
        (-16, 0x55),
        (-17, 0x54),
        (1000, 0xFA),
        (-1000, 0x7A),
    ],
)
def test_alaw_encode_known_values(sample: int, code: int) -> None:
    assert ref_linear2alaw(sample) == code
    assert pcm.alaw_encode(s16([sample])) == bytes([code])


@pytest.mark.parametrize(
    ("code", "sample"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xC5, 264)],
)
def test_alaw_decode_known_values(code: int, sample: int) -> None:
    assert ref_alaw2linear(code) == sample
    assert samples_of(pcm.alaw_decode(bytes([code]))) == [sample]


def test_alaw_encode_matches_reference_for_every_sample() -> None:
    expected = bytes(ref_linear2alaw(int(v)) for v in ALL_S16)
    assert pcm.alaw_encode(ALL_S16_BYTES) == expected


def test_alaw_decode_matches_reference_for_every_code() -> None:
    assert samples_of(pcm.alaw_decode(ALL_CODES)) == [ref_alaw2linear(c) for c in range(256)]


def test_alaw_roundtrip_error_bound() -> None:
    back = np.frombuffer(pcm.alaw_decode(pcm.alaw_encode(ALL_S16_BYTES)), dtype="<i2")
    err = np.abs(back.astype(np.int32) - ALL_S16)
    assert np.all(err <= np.abs(ALL_S16) / 32 + 8)
    assert err.max() <= 512


def test_alaw_codes_are_stable() -> None:
    assert pcm.alaw_encode(pcm.alaw_decode(ALL_CODES)) == ALL_CODES


@pytest.mark.parametrize("codec", ["mulaw", "alaw"])
def test_g711_sine_snr(codec: str) -> None:
    enc, dec = (
        (pcm.mulaw_encode, pcm.mulaw_decode)
        if codec == "mulaw"
        else (pcm.alaw_encode, pcm.alaw_decode)
    )
    x = sine(440, 8000, amp=0.5)
    y = dec(enc(x))
    a = np.frombuffer(x, dtype="<i2").astype(np.float64)
    b = np.frombuffer(y, dtype="<i2").astype(np.float64)
    snr = 10 * np.log10(np.sum(a**2) / np.sum((a - b) ** 2))
    assert snr > 35  # G.711 gives about 38 dB


def test_g711_empty_and_lengths() -> None:
    for f in (pcm.mulaw_encode, pcm.alaw_encode, pcm.mulaw_decode, pcm.alaw_decode):
        assert f(b"") == b""
    assert len(pcm.mulaw_encode(b"\x00" * 200)) == 100
    assert len(pcm.alaw_decode(b"\x00" * 100)) == 200


# --- sizes and conversions -----------------------------------------------------------


def test_sizes() -> None:
    assert pcm.bytes_per_ms(16000) == 32.0
    assert pcm.bytes_per_ms(8000) == 16.0
    assert pcm.frame_bytes(16000, 20) == 640
    assert pcm.frame_bytes(8000, 30) == 480
    assert pcm.frame_bytes(24000, 10) == 480
    assert pcm.duration_ms(32000, 16000) == 1000.0
    assert pcm.duration_ms(960, 24000) == 20.0


def test_float_conversion() -> None:
    data = s16([0, 16384, -16384, 32767, -32768])
    f = pcm.to_float(data)
    assert f.dtype == np.float32
    assert list(f) == [0.0, 0.5, -0.5, 32767 / 32768, -1.0]
    assert samples_of(pcm.from_float(np.array([0.0, 0.5, -0.5, 1.0, -1.0]))) == [
        0,
        16383,
        -16383,
        32767,
        -32767,
    ]
    # out-of-range floats are clipped, not wrapped
    assert samples_of(pcm.from_float(np.array([2.0, -3.0]))) == [32767, -32767]
    x = np.frombuffer(sine(300, 16000, 0.1), dtype="<i2").astype(np.int32)
    back = np.frombuffer(pcm.from_float(pcm.to_float(x.astype("<i2").tobytes())), dtype="<i2")
    assert np.max(np.abs(back - x)) <= 1


# --- resampling ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"), [(16000, 24000), (24000, 8000), (8000, 16000), (48000, 16000), (16000, 48000)]
)
def test_resample_length(src: int, dst: int) -> None:
    data = sine(440, src, 1.0)
    out = pcm.resample(data, src, dst)
    assert len(out) % 2 == 0
    assert abs(len(out) // 2 - dst) <= 1
    half = pcm.resample(sine(440, src, 0.5), src, dst)
    assert abs(len(half) // 2 - dst // 2) <= 1


def test_resample_same_rate_and_empty() -> None:
    data = sine(440, 16000, 0.1)
    assert pcm.resample(data, 16000, 16000) == data
    assert pcm.resample(b"", 16000, 24000) == b""


@pytest.mark.parametrize(("src", "dst"), [(16000, 24000), (24000, 8000), (8000, 48000)])
def test_resampled_sine_keeps_its_frequency(src: int, dst: int) -> None:
    data = sine(1000, src, 1.0)
    assert peak_hz(data, src) == pytest.approx(1000, abs=2)
    out = pcm.resample(data, src, dst)
    assert peak_hz(out, dst) == pytest.approx(1000, abs=2)
    # and keeps its level (the filter's passband is flat at 1 kHz)
    assert pcm.rms_dbfs(out) == pytest.approx(pcm.rms_dbfs(data), abs=0.2)


def test_resample_removes_content_above_the_new_nyquist() -> None:
    data = sine(6000, 24000, 1.0)  # above 4 kHz: must not alias into the 8 kHz output
    out = pcm.resample(data, 24000, 8000)
    assert pcm.rms_dbfs(out) < pcm.rms_dbfs(data) - 40


@pytest.mark.parametrize(("src", "dst"), [(16000, 24000), (24000, 8000), (48000, 16000)])
@pytest.mark.parametrize("chunk_ms", [10, 20, 37])
def test_streaming_resampler_matches_one_shot(src: int, dst: int, chunk_ms: int) -> None:
    data = sine(1000, src, 1.0)
    one_shot = np.frombuffer(pcm.resample(data, src, dst), dtype="<i2").astype(np.int32)
    r = pcm.Resampler(src, dst)
    step = src * chunk_ms // 1000 * 2
    parts = [r.process(data[i : i + step]) for i in range(0, len(data), step)]
    parts.append(r.process(b"", last=True))
    streamed = np.frombuffer(b"".join(parts), dtype="<i2").astype(np.int32)
    assert abs(len(streamed) - len(one_shot)) <= 2
    n = min(len(streamed), len(one_shot))
    assert np.max(np.abs(streamed[:n] - one_shot[:n])) <= 16  # 0.05 % of the amplitude
    assert peak_hz(b"".join(parts), dst) == pytest.approx(1000, abs=2)


def test_streaming_resampler_same_rate_passes_through() -> None:
    r = pcm.Resampler(16000, 16000)
    assert r.process(b"\x01\x02\x03\x04") == b"\x01\x02\x03\x04"
    assert r.process(b"", last=True) == b""


# --- Reframer --------------------------------------------------------------------------


def test_reframer() -> None:
    r = pcm.Reframer(4)
    assert r.push(b"abc") == []
    assert r.push(b"defghij") == [b"abcd", b"efgh"]
    assert r.push(b"k") == []
    assert r.push(b"lmnopqrs") == [b"ijkl", b"mnop"]
    assert r.flush() == b"qrs"
    assert r.flush() == b""
    assert r.push(b"") == []
    assert r.push(b"wxyz") == [b"wxyz"]


def test_reframer_keeps_every_byte_in_order() -> None:
    data = bytes(range(256)) * 20
    r = pcm.Reframer(640)
    out: list[bytes] = []
    pos = 0
    for size in (1, 7, 639, 640, 641, 1000, 3):
        out += r.push(data[pos : pos + size])
        pos += size
    rest = r.flush()
    assert len(out) == pos // 640
    assert all(len(f) == 640 for f in out)
    assert b"".join(out) + rest == data[:pos]


# --- levels ----------------------------------------------------------------------------


def test_rms_dbfs() -> None:
    assert pcm.rms_dbfs(b"") == -math.inf
    assert pcm.rms_dbfs(b"\x01") == -math.inf
    assert pcm.rms_dbfs(b"\x00" * 640) == -math.inf
    full_square = s16([32767, -32768] * 160)
    assert pcm.rms_dbfs(full_square) == pytest.approx(0.0, abs=0.01)
    assert pcm.rms_dbfs(sine(1000, 16000, 1.0, amp=1.0)) == pytest.approx(-3.01, abs=0.02)
    assert pcm.rms_dbfs(sine(1000, 16000, 1.0, amp=0.5)) == pytest.approx(-9.03, abs=0.02)
    assert pcm.rms_dbfs(s16([1] * 100)) == pytest.approx(20 * math.log10(1 / 32768))
