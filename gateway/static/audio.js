// Browser audio for the voice page and the kiosk: microphone capture through an
// AudioWorklet, and reply playback through Web Audio that can be cut off at once.

const MIC_WORKLET = new URL("./mic-worklet.js", import.meta.url);
const START_LEAD_S = 0.06; // first buffer of a reply (or after an underrun) starts this late
const KEEP_CHUNKS_S = 2; // how long played chunks stay in the timeline (for lip sync)

/**
 * Microphone → 20 ms frames of 16-bit PCM at ``rate``, via the capture worklet. Also
 * meters any other stream (``attach``), e.g. the reply audio of a WebRTC session.
 */
export class Mic {
  constructor(ctx) {
    this.ctx = ctx;
    this.stream = null;
    this.source = null;
    this.node = null;
    this.rate = 0;
    this.level = -100; // dBFS of the last frame
    this.onframe = null; // (ArrayBuffer) => void
    this.onlevel = null; // (dBFS of a 20 ms frame) => void
  }

  async open(constraints = {}) {
    if (this.stream) return this.stream;
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        channelCount: 1,
        echoCancellation: true, // so the reply coming out of the speaker is no barge-in
        noiseSuppression: true,
        autoGainControl: true,
        ...constraints,
      },
    });
    await this.attach(this.stream);
    return this.stream;
  }

  async attach(stream) {
    await this.ctx.audioWorklet.addModule(MIC_WORKLET);
    this.source = this.ctx.createMediaStreamSource(stream);
  }

  /** (Re)start capture at ``rate``; a new rate replaces the worklet node. */
  capture(rate) {
    if (!this.source) throw new Error("microphone not open");
    if (this.node && this.rate === rate) return;
    this.release();
    this.rate = rate;
    this.node = new AudioWorkletNode(this.ctx, "pcm-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      processorOptions: { targetRate: rate, frameMs: 20 },
    });
    this.node.port.onmessage = (e) => {
      this.level = e.data.level;
      this.onlevel?.(e.data.level);
      if (e.data.pcm && this.onframe) this.onframe(e.data.pcm);
    };
    this.source.connect(this.node);
  }

  release() {
    if (!this.node) return;
    this.source.disconnect(this.node);
    this.node.port.onmessage = null;
    this.node = null;
  }

  close() {
    this.release();
    if (this.source) this.source.disconnect();
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = this.source = null;
  }
}

/**
 * Reply playback. Each binary message is scheduled right after the previous one; the
 * scheduled chunks form a timeline that says which part of which reply is being heard
 * now (for lip sync). ``stop()`` silences everything at once (barge-in).
 */
export class Player {
  constructor(ctx) {
    this.ctx = ctx;
    this.out = ctx.createGain();
    this.out.connect(ctx.destination);
    this.sources = new Set();
    this.chunks = []; // {start, end, pos, rms, responseId} in context seconds / reply ms
    this.next = 0;
    this.rate = 24000;
    this.responseId = null;
    this.pos = 0; // ms of the current reply scheduled so far
    this.dropping = true; // no tts_start yet, or interrupted: binary audio is discarded
    // chunks/bytes scheduled, played (ended), loud (not near-silent), active (scheduled
    // and not yet ended), dropped (after a barge-in), stops (barge-ins).
    this.stats = { chunks: 0, bytes: 0, played: 0, loud: 0, active: 0, dropped: 0,
                   underruns: 0, stops: 0 };
    this.onfirstplay = null; // (responseId, performance.now() at which it will be heard)
  }

  /** A reply's audio follows (``tts_start``). */
  begin(responseId, rate) {
    this.responseId = responseId;
    this.rate = rate || this.rate;
    this.pos = 0;
    this.dropping = false;
  }

  /** One binary message of s16le PCM; returns false when it was dropped. */
  push(data) {
    if (this.dropping || data.byteLength < 2) {
      this.stats.dropped++;
      return false;
    }
    const pcm = new Int16Array(data, 0, data.byteLength >> 1);
    const buffer = this.ctx.createBuffer(1, pcm.length, this.rate);
    const samples = buffer.getChannelData(0);
    let energy = 0;
    for (let i = 0; i < pcm.length; i++) {
      const v = pcm[i] / 32768;
      samples[i] = v;
      energy += v * v;
    }
    const now = this.ctx.currentTime;
    let start = this.next;
    if (start < now + 0.005) {
      if (this.pos > 0) this.stats.underruns++;
      start = now + START_LEAD_S;
    }
    const src = this.ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(this.out);
    src.onended = () => {
      this.sources.delete(src);
      this.stats.played++;
      this.stats.active = this.sources.size;
    };
    src.start(start);
    this.sources.add(src);
    this.stats.active = this.sources.size;
    const rms = Math.sqrt(energy / Math.max(1, pcm.length));
    if (rms > 0.01) this.stats.loud++;
    this.chunks.push({ start, end: start + buffer.duration, pos: this.pos, rms,
                       responseId: this.responseId });
    if (this.pos === 0 && this.onfirstplay) {
      this.onfirstplay(this.responseId, performance.now() + (start - now) * 1000);
    }
    this.pos += buffer.duration * 1000;
    this.next = start + buffer.duration;
    this.stats.chunks++;
    this.stats.bytes += data.byteLength;
    this.prune(now);
    return true;
  }

  /** Barge-in: stop every scheduled source now and drop audio until the next reply. */
  stop() {
    for (const src of this.sources) {
      src.onended = null;
      try {
        src.stop();
      } catch (_) {
        /* never started */
      }
      src.disconnect();
    }
    this.sources.clear();
    this.stats.active = 0;
    this.chunks = [];
    this.next = 0;
    this.dropping = true;
    this.stats.stops++;
  }

  /** Context time of the sample the listener hears now (the device's latency included). */
  heardTime() {
    const ts = this.ctx.getOutputTimestamp ? this.ctx.getOutputTimestamp() : null;
    if (ts && ts.contextTime > 0) return ts.contextTime;
    return this.ctx.currentTime - (this.ctx.outputLatency || this.ctx.baseLatency || 0);
  }

  /** What is being heard now: {responseId, ms (offset in that reply), rms} or null. */
  position() {
    const t = this.heardTime();
    for (const c of this.chunks) {
      if (t >= c.start && t < c.end) {
        return { responseId: c.responseId, ms: c.pos + (t - c.start) * 1000, rms: c.rms };
      }
    }
    return null;
  }

  /** Still audio to come for the listener (scheduled beyond what is heard now)? */
  get playing() {
    return this.chunks.length > 0 && this.chunks[this.chunks.length - 1].end > this.heardTime();
  }

  prune(now) {
    while (this.chunks.length && this.chunks[0].end < now - KEEP_CHUNKS_S) this.chunks.shift();
  }
}

/** ws(s):// URL of a gateway path on this page's origin, with query parameters. */
export function gatewayWsUrl(path, params = {}) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [k, v] of Object.entries(params)) if (v) url.searchParams.set(k, v);
  return url.toString();
}
