// Microphone capture on the audio thread: resamples the context's rate (44.1/48 kHz,
// whatever the device gives) to the session's input rate with a windowed-sinc low-pass,
// and posts 20 ms frames of 16-bit PCM to the page, with each frame's level.
// The AudioContext is not opened at the session rate because some browsers refuse to
// connect a microphone to a context of another rate.

const PHASES = 128; // kernel table resolution per input sample

class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.outRate = opts.targetRate || 16000;
    this.frameLen = Math.round((this.outRate * (opts.frameMs || 20)) / 1000);
    this.step = sampleRate / this.outRate; // input samples per output sample
    const stretch = Math.max(this.step, 1);
    this.half = Math.ceil(8 * stretch); // kernel half-width in input samples
    this.kernel = makeKernel(this.half, (0.5 / stretch) * 0.92);
    this.buf = new Float32Array(16384);
    this.len = this.half; // zero history before the first sample
    this.pos = this.half; // where the next output sample sits, in buf coordinates
    this.frame = new Int16Array(this.frameLen);
    this.fill = 0;
    this.energy = 0;
    this.enabled = true;
    this.port.onmessage = (e) => {
      if (e.data && "enabled" in e.data) this.enabled = !!e.data.enabled;
    };
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    this.append(channel);
    const half = this.half;
    while (Math.floor(this.pos) + half < this.len) {
      this.emit(this.sample(this.pos));
      this.pos += this.step;
    }
    const drop = Math.floor(this.pos) - half;
    if (drop > 8192) {
      this.buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.pos -= drop;
    }
    return true;
  }

  append(samples) {
    if (this.len + samples.length > this.buf.length) {
      const bigger = new Float32Array(this.buf.length * 2);
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(samples, this.len);
    this.len += samples.length;
  }

  sample(t) {
    const base = Math.floor(t);
    const half = this.half;
    const k = this.kernel;
    let acc = 0;
    for (let i = base - half + 1; i <= base + half; i++) {
      const d = t - i; // in (-half, half)
      acc += this.buf[i] * k[Math.round((d + half) * PHASES)];
    }
    return acc;
  }

  emit(value) {
    const s = Math.max(-1, Math.min(1, value));
    this.frame[this.fill++] = s < 0 ? s * 32768 : s * 32767;
    this.energy += s * s;
    if (this.fill < this.frameLen) return;
    const rms = Math.sqrt(this.energy / this.frameLen);
    const level = rms > 0 ? 20 * Math.log10(rms) : -100;
    if (this.enabled) {
      const pcm = this.frame.slice().buffer;
      this.port.postMessage({ pcm, level }, [pcm]);
    } else {
      this.port.postMessage({ level });
    }
    this.fill = 0;
    this.energy = 0;
  }
}

function makeKernel(half, cutoff) {
  // Hann-windowed sinc; cutoff in cycles per input sample. Normalised to unity DC gain.
  const table = new Float32Array(2 * half * PHASES + 1);
  let sum = 0;
  for (let j = 0; j < table.length; j++) {
    const d = j / PHASES - half;
    const x = 2 * cutoff * d;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    const window = 0.5 + 0.5 * Math.cos((Math.PI * d) / half);
    table[j] = 2 * cutoff * sinc * window;
    sum += table[j];
  }
  const gain = PHASES / sum;
  for (let j = 0; j < table.length; j++) table[j] *= gain;
  return table;
}

registerProcessor("pcm-capture", PcmCapture);
