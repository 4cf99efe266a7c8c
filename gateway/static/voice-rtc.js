// WebRTC client: POST /api/v1/voice/webrtc/offer with an SDP offer, microphone and reply
// audio as Opus tracks, the protocol-v1 JSON events on the data channel "events".
// The server stops its outgoing track on a barge-in; the page only has to show it.

const GATHER_TIMEOUT_MS = 3000; // the offer goes with whatever candidates are ready by then
const PING_EVERY_MS = 30000;

export class VoiceRtc {
  /**
   * @param {string} offerUrl URL of /api/v1/voice/webrtc/offer
   * @param {object} opts token, assistant_id, start (optional ``start`` message), iceServers
   * @param {object} handlers onevent(event), ontrack(MediaStream), onclose(code, reason)
   */
  constructor(offerUrl, opts, handlers) {
    this.offerUrl = offerUrl;
    this.opts = opts;
    this.handlers = handlers;
    this.pc = null;
    this.channel = null;
    this.session = null;
    this.closed = false;
    this.pingTimer = null;
  }

  async connect(micStream) {
    const pc = new RTCPeerConnection({ iceServers: this.opts.iceServers || [] });
    this.pc = pc;
    for (const track of micStream.getAudioTracks()) pc.addTrack(track, micStream);
    pc.ontrack = (e) => this.handlers.ontrack?.(e.streams[0] || new MediaStream([e.track]));
    pc.onconnectionstatechange = () => {
      if (["failed", "closed"].includes(pc.connectionState)) {
        this.closedWith(1006, `connection ${pc.connectionState}`);
      }
    };
    const channel = pc.createDataChannel("events");
    this.channel = channel;
    channel.onopen = () => {
      if (this.opts.start) this.send({ type: "start", ...this.opts.start });
      this.pingTimer = setInterval(() => this.send({ type: "ping" }), PING_EVERY_MS);
    };
    channel.onmessage = (m) => this.receive(m.data);
    channel.onclose = () => this.closedWith(1000, "data channel closed");
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const resp = await fetch(this.offerUrl, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        type: "offer",
        sdp: pc.localDescription.sdp,
        ...(this.opts.token ? { token: this.opts.token } : {}),
        ...(this.opts.assistant_id ? { assistant_id: this.opts.assistant_id } : {}),
      }),
    });
    if (!resp.ok) {
      const detail = await resp.text();
      this.close();
      throw new Error(`offer refused (${resp.status}): ${detail.slice(0, 200)}`);
    }
    const answer = await resp.json();
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  }

  receive(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch (_) {
      return;
    }
    if (event.type === "session_started") this.session = event;
    this.handlers.onevent?.(event);
  }

  send(event) {
    if (!this.channel || this.channel.readyState !== "open") return false;
    this.channel.send(JSON.stringify(event));
    return true;
  }

  closedWith(code, reason) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pingTimer);
    this.handlers.onclose?.(code, reason);
  }

  close() {
    this.pc?.close();
    this.closedWith(1000, "client closed");
  }
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, GATHER_TIMEOUT_MS);
  });
}
