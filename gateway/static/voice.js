// The voice page: talk to the gateway over protocol v1 (WebSocket) or WebRTC.
// Page URL parameters: ?token= (a session token from POST /api/get-access-token; without
// one the session is anonymous, which the gateway allows on loopback), ?assistant_id=,
// ?transport=ws|webrtc, ?language=.

import { Mic, Player, gatewayWsUrl } from "./audio.js";
import { VoiceRtc } from "./voice-rtc.js";
import { VoiceSocket } from "./voice-socket.js";

const INPUT_RATE = 16000; // what the page asks for; session_started has the final say
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const ui = {
  transport: $("transport"), start: $("start"), status: $("status"), level: $("level"),
  log: $("log"), latency: $("latency").tBodies[0], session: $("session"),
  say: $("say"), text: $("text"), send: $("send"), interrupt: $("interrupt"),
  rtcAudio: $("rtc-audio"),
};

// Read by the browser tests (tests/web): what the page heard, showed and played.
const hook = {
  state: "idle", events: {}, transcripts: [], interim: [], replies: [], latency: [],
  audio: null, rtc: null, socket: null, errors: [], closed: null,
};
window.__voice = hook;

let ctx = null;
let mic = null;
let player = null;
let conn = null;
let levelTimer = null;
let remote = null; // WebRTC: meters the reply track (what the listener hears)
let replying = null; // response_id whose audio is expected now
const turns = new Map(); // turn_id → {el, stoppedAt}
const replies = new Map(); // response_id → {el, text, turnId, base, firstToken, ...}
let typedAt = null; // a typed turn's clock starts when it is sent

if (params.get("transport")) ui.transport.value = params.get("transport");
ui.start.addEventListener("click", () => (conn ? stop() : start()));
ui.say.addEventListener("submit", (e) => {
  e.preventDefault();
  sendText(ui.text.value.trim());
});
ui.interrupt.addEventListener("click", () => conn?.send({ type: "interrupt" }));

async function start() {
  setState("connecting");
  ui.start.textContent = "Stop";
  ui.transport.disabled = true;
  ctx = new AudioContext({ latencyHint: "interactive" });
  await ctx.resume(); // inside the click: allowed to play
  mic = new Mic(ctx);
  player = new Player(ctx);
  player.onfirstplay = (id, at) => mark(id, "heard", at);
  hook.audio = player.stats;
  try {
    const stream = await mic.open();
    if (ui.transport.value === "webrtc") await startRtc(stream);
    else startSocket();
    levelTimer = setInterval(showLevel, 100);
  } catch (err) {
    fail(`could not start: ${err.message || err}`);
    stop();
  }
}

function startSocket() {
  const url = gatewayWsUrl("api/v1/voice/ws", {
    token: params.get("token"), assistant_id: params.get("assistant_id"),
  });
  const startMsg = { sample_rate: INPUT_RATE, encoding: "pcm_s16le" };
  if (params.get("language")) startMsg.language = params.get("language");
  conn = new VoiceSocket(url, startMsg, { onevent, onaudio, onclose });
  hook.socket = conn.stats;
  conn.connect();
  mic.onframe = (frame) => conn?.sendAudio(frame);
  mic.capture(INPUT_RATE);
}

async function startRtc(stream) {
  const offerUrl = new URL("api/v1/voice/webrtc/offer", location.href).toString();
  const opts = { token: params.get("token"), assistant_id: params.get("assistant_id") };
  if (params.get("language")) opts.start = { language: params.get("language") };
  conn = new VoiceRtc(offerUrl, opts, { onevent, onclose, ontrack: meterReplyTrack });
  await conn.connect(stream);
  mic.capture(INPUT_RATE); // only for the level meter: the audio goes in the Opus track
}

async function meterReplyTrack(stream) {
  ui.rtcAudio.srcObject = stream; // Chrome feeds Web Audio a remote track only while played
  remote = new Mic(ctx);
  await remote.attach(stream);
  const stats = { frames: 0, loud: 0 };
  hook.rtc = stats;
  remote.onlevel = (db) => {
    stats.frames++;
    if (db < -45) return;
    stats.loud++;
    if (replying && !ui.rtcAudio.muted) mark(replying, "heard");
  };
  remote.capture(INPUT_RATE);
}

function stop() {
  const closing = conn;
  conn = null; // first, so that its onclose does not call stop() again
  closing?.close();
  player?.stop();
  mic?.close();
  remote?.release();
  remote = null;
  clearInterval(levelTimer);
  ctx?.close();
  ctx = mic = player = null;
  ui.rtcAudio.srcObject = null;
  ui.start.textContent = "Start";
  ui.transport.disabled = false;
  enableInput(false);
  if (hook.state !== "error") setState("idle");
}

function sendText(text) {
  if (!text || !conn) return;
  if (conn.send({ type: "text", text })) {
    typedAt = performance.now();
    bubble("user", text);
    ui.text.value = "";
  }
}

// -- server events ---------------------------------------------------------------------

const handlers = {
  session_started(e) {
    if (e.input?.sample_rate && e.input.encoding === "pcm_s16le") mic.capture(e.input.sample_rate);
    ui.session.textContent = `session ${e.session_id} · in ${fmt(e.input)} · out ${fmt(e.output)}`;
    enableInput(true);
    setState("listening");
  },
  speech_started(e) {
    userTurn(e.turn_id);
    setState("hearing");
  },
  speech_stopped(e) {
    userTurn(e.turn_id).stoppedAt = performance.now();
    setState("thinking");
  },
  transcription(e) {
    const turn = userTurn(e.turn_id);
    turn.el.textContent = e.text;
    turn.el.classList.toggle("interim", !e.final);
    (e.final ? hook.transcripts : hook.interim).push(e.text);
    if (e.final && !e.text) turn.el.remove();
  },
  stream_start(e) {
    const turn = turns.get(e.turn_id);
    const base = turn?.stoppedAt ?? typedAt ?? performance.now();
    typedAt = null;
    replies.set(e.response_id, { el: bubble("bot", ""), text: "", turnId: e.turn_id, base });
    setState("thinking");
  },
  token(e) {
    const r = replies.get(e.response_id);
    if (!r) return;
    mark(e.response_id, "firstToken");
    r.text += e.text;
    r.el.firstChild.textContent = r.text;
    scrollDown();
  },
  agent_response(e) {
    const r = replies.get(e.response_id);
    if (!r) return;
    r.text = e.text;
    r.el.firstChild.textContent = e.text;
    if (e.sources?.length) {
      r.el.querySelector(".sources").textContent =
        "sources: " + e.sources.map((s) => s.title || s.source).join(" · ");
    }
  },
  tts_start(e) {
    replying = e.response_id;
    player.begin(e.response_id, e.sample_rate);
    if (conn instanceof VoiceRtc) mark(e.response_id, "firstAudio");
    ui.rtcAudio.muted = false;
    setState("speaking");
  },
  metrics(e) {
    const r = replies.get(e.response_id);
    if (r) r.server = e;
    showLatency(e.response_id);
  },
  interrupted(e) {
    player.stop(); // at once: queued buffers dropped, playing sources stopped
    ui.rtcAudio.muted = true; // WebRTC: the browser's jitter buffer still holds some
    replies.get(e.response_id)?.el.classList.add("interrupted");
  },
  stream_end(e) {
    if (replying === e.response_id) replying = null;
    const r = replies.get(e.response_id);
    if (r) hook.replies.push(r.text);
    if (hook.state !== "hearing") setState("listening");
  },
  error(e) {
    bubble("error", `${e.code}: ${e.message}`);
    hook.errors.push(e);
  },
};

function onevent(event) {
  hook.events[event.type] = (hook.events[event.type] || 0) + 1;
  handlers[event.type]?.(event);
}

function onaudio(data) {
  if (player?.push(data)) mark(player.responseId, "firstAudio");
}

function onclose(code, reason) {
  hook.closed = { code, reason };
  if (code !== 1000 || reason !== "client closed") {
    const why = code === 4401 ? `not authorised: ${reason}` : `connection closed (${code}) ${reason}`;
    fail(why);
  }
  if (conn) stop();
}

// -- view --------------------------------------------------------------------------------

function userTurn(turnId) {
  let turn = turns.get(turnId);
  if (!turn) {
    turn = { el: bubble("user", "…"), stoppedAt: null };
    turn.el.classList.add("interim");
    turns.set(turnId, turn);
  }
  return turn;
}

function bubble(kind, text) {
  const el = document.createElement("div");
  el.className = `msg ${kind}`;
  el.append(document.createTextNode(text));
  if (kind === "bot") {
    const sources = document.createElement("span");
    sources.className = "sources";
    el.append(sources);
  }
  ui.log.append(el);
  scrollDown();
  return el;
}

function scrollDown() {
  ui.log.scrollTop = ui.log.scrollHeight;
}

/** First time ``what`` happened for a reply (ms since the page loaded). */
function mark(responseId, what, at = performance.now()) {
  const r = replies.get(responseId);
  if (!r || r[what] != null) return;
  r[what] = at;
  showLatency(responseId);
}

function showLatency(responseId) {
  const r = replies.get(responseId);
  if (!r) return;
  const ms = (t) => (t == null ? "–" : `${Math.round(t - r.base)} ms`);
  const srv = (v) => (v == null ? "" : ` <small>(${Math.round(v)})</small>`);
  const s = r.server || {};
  if (!r.row) {
    r.row = ui.latency.insertRow(0);
    hook.latency.push(r.figures = {});
  }
  r.row.innerHTML = `<td>${r.turnId ?? "–"}</td>` +
    `<td>${ms(r.firstToken)}${srv(s.first_token_ms)}</td>` +
    `<td>${ms(r.firstAudio)}${srv(s.first_audio_ms)}</td><td>${ms(r.heard)}</td>`;
  Object.assign(r.figures, {
    turn: r.turnId, first_token_ms: delta(r.firstToken, r.base),
    first_audio_ms: delta(r.firstAudio, r.base), heard_ms: delta(r.heard, r.base), server: s,
  });
}

const delta = (t, base) => (t == null ? null : Math.round(t - base));
const fmt = (f) => (f ? `${f.encoding} ${f.sample_rate} Hz` : "?");

function showLevel() {
  const db = mic?.level ?? -100;
  ui.level.style.width = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
}

function setState(state) {
  hook.state = state;
  ui.status.textContent = state;
  ui.status.className = `status ${state}`;
}

function enableInput(on) {
  for (const el of [ui.text, ui.send, ui.interrupt]) el.disabled = !on;
}

function fail(message) {
  hook.errors.push({ message });
  bubble("error", message);
  setState("error");
}
