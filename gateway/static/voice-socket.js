// Protocol v1 client (docs/protocol.md) over a WebSocket: JSON events one way and the
// other, microphone audio up and reply audio down as binary messages.

const PING_EVERY_MS = 30000; // the server closes a session silent for 5 min (4408)
const PONG_WITHIN_MS = 10000; // a connection that does not answer a ping is dead
const MAX_QUEUED_FRAMES = 250; // 5 s of microphone kept until the session has started
const MAX_BUFFERED_BYTES = 1 << 20; // the socket is not draining: drop audio, not memory

export class VoiceSocket {
  /**
   * @param {string} url ws(s) URL of /api/v1/voice/ws, with ?token= when there is one
   * @param {object} start the optional ``start`` message (sample rates, language, …)
   * @param {object} handlers onevent(event), onaudio(ArrayBuffer), onclose(code, reason)
   */
  constructor(url, start, handlers) {
    this.url = url;
    this.start = start;
    this.handlers = handlers;
    this.ws = null;
    this.session = null; // the last session_started event
    this.queue = [];
    this.pingTimer = null;
    this.pongDeadline = null;
    this.closed = false;
    this.stats = { framesSent: 0, framesDropped: 0, pings: 0, pongs: 0 };
  }

  connect() {
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      if (this.start) ws.send(JSON.stringify({ type: "start", ...this.start }));
      this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
    };
    ws.onmessage = (msg) => this.receive(msg.data);
    ws.onclose = (e) => this.closedWith(e.code, e.reason);
    ws.onerror = () => {}; // onclose follows with the code
  }

  receive(data) {
    if (typeof data !== "string") {
      this.handlers.onaudio?.(data);
      return;
    }
    let event;
    try {
      event = JSON.parse(data);
    } catch (_) {
      return;
    }
    if (event.type === "session_started") {
      this.session = event;
      this.flush();
    } else if (event.type === "pong") {
      this.stats.pongs++;
      clearTimeout(this.pongDeadline);
      this.pongDeadline = null;
    }
    this.handlers.onevent?.(event);
  }

  ping() {
    if (!this.send({ type: "ping" })) return;
    this.stats.pings++;
    if (this.pongDeadline === null) {
      this.pongDeadline = setTimeout(() => this.ws?.close(4000, "no pong"), PONG_WITHIN_MS);
    }
  }

  /** A JSON event; false when the socket is not open. */
  send(event) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(event));
    return true;
  }

  /** A 20 ms microphone frame; held (bounded) until session_started, then sent. */
  sendAudio(frame) {
    if (this.closed) return;
    if (!this.session || this.ws.readyState !== WebSocket.OPEN) {
      this.queue.push(frame);
      if (this.queue.length > MAX_QUEUED_FRAMES) {
        this.queue.shift();
        this.stats.framesDropped++;
      }
      return;
    }
    if (this.ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.stats.framesDropped++;
      return;
    }
    this.ws.send(frame);
    this.stats.framesSent++;
  }

  flush() {
    const frames = this.queue;
    this.queue = [];
    for (const f of frames) this.sendAudio(f);
  }

  closedWith(code, reason) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pingTimer);
    clearTimeout(this.pongDeadline);
    this.queue = [];
    this.handlers.onclose?.(code, reason);
  }

  close(code = 1000, reason = "client closed") {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(code, reason);
    this.closedWith(code, reason);
  }
}
