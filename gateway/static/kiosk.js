// The kiosk avatar display: an always-listening face that answers aloud, shows
// captions and moves its mouth with the reply audio.
//
// Page URL parameters:
//   ?token=      a session token minted server-side (POST /api/get-access-token with
//                avatarId/voiceId). A token opens one session only, so for reconnecting:
//   ?token_url=  a URL of the integrator's backend answering GET with a fresh {"token"};
//                without one the kiosk reconnects anonymously (allowed on loopback).
//   ?assistant_id=, ?language=
// Run the kiosk browser with --autoplay-policy=no-user-gesture-required, or it will ask
// for a tap before it can listen and speak.

import { Mic, Player, gatewayWsUrl } from "./audio.js";
import { LipSync, SHAPES, ease, mouthShape, poseFromLevel } from "./lipsync.js";
import { VoiceSocket } from "./voice-socket.js";

const INPUT_RATE = 16000;
const MOUTH = { cx: 200, cy: 290 };
const LOOKAHEAD_MS = 40; // the mouth eases toward a shape: aim slightly ahead of the sound
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000, 30000];
const CAPTION_LINGER_MS = 5000;
const CAPTION_WORDS = 16;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const el = {
  mouth: $("mouth"), inside: $("mouth-inside"), clip: $("mouth-clip-path"),
  teeth: $("teeth"), tongue: $("tongue"), ring: $("ring"),
  lids: [...document.querySelectorAll(".lid")], pupils: [...document.querySelectorAll(".pupil")],
  you: $("you"), caption: $("caption"), status: $("status"), tap: $("tap"),
};

// Read by the browser tests (tests/web).
const hook = {
  state: "starting", connects: 0, sessions: 0, closes: [], tokensFetched: 0,
  visemeEvents: 0, wordEvents: 0, shapes: {}, mouthChanges: 0, transcripts: [],
  replies: [], audio: null, errors: [],
  sync: [], // last frames while audio plays: [ms into the reply, loudness heard, mouth open]
};
window.__kiosk = hook;

const lipsync = new LipSync();
const pose = { ...SHAPES.sil };
let ctx = null;
let mic = null;
let player = null;
let conn = null;
let attempt = 0;
let retryTimer = null;
let connecting = false; // a token fetch is under way
let initialToken = params.get("token");
let replyText = "";
let replyId = null;
let lastAudioAt = 0;

// -- start-up ----------------------------------------------------------------------------

async function boot() {
  ctx = new AudioContext({ latencyHint: "interactive" });
  if (ctx.state !== "running") await Promise.race([ctx.resume(), sleep(300)]);
  if (ctx.state !== "running") await tapToStart();
  player = new Player(ctx);
  hook.audio = player.stats;
  mic = new Mic(ctx);
  try {
    await mic.open();
    mic.onframe = (frame) => conn?.sendAudio(frame);
    mic.capture(INPUT_RATE);
  } catch (err) {
    hook.errors.push(`microphone: ${err.message || err}`);
    status(`no microphone (${err.name || err}) — captions and voice only`);
  }
  window.addEventListener("online", () => conn || reconnectNow());
  requestAnimationFrame(frame);
  connect();
}

function tapToStart() {
  el.tap.hidden = false;
  status("tap to start");
  return new Promise((resolve) => {
    el.tap.onclick = async () => {
      await ctx.resume();
      el.tap.hidden = true;
      resolve();
    };
  });
}

// -- the session and reconnection -----------------------------------------------------------

async function connect() {
  if (connecting || conn) return;
  connecting = true;
  retryTimer = null;
  setState("connecting");
  let token;
  try {
    token = await nextToken();
  } catch (err) {
    hook.errors.push(`token: ${err.message || err}`);
    retry(`could not get a session token (${err.message || err})`);
    return;
  } finally {
    connecting = false;
  }
  hook.connects++;
  const url = gatewayWsUrl("api/v1/voice/ws", { token, assistant_id: params.get("assistant_id") });
  const start = { sample_rate: INPUT_RATE, encoding: "pcm_s16le" };
  if (params.get("language")) start.language = params.get("language");
  conn = new VoiceSocket(url, start, { onevent, onaudio, onclose });
  conn.connect();
}

/** The page's token once; then a fresh one from token_url, or none (anonymous). */
async function nextToken() {
  if (initialToken) {
    const token = initialToken;
    initialToken = null;
    forgetTokenInUrl(); // spent once used: a reload must not offer it again
    return token;
  }
  const tokenUrl = params.get("token_url");
  if (!tokenUrl) return null;
  const resp = await fetch(tokenUrl, { cache: "no-store", credentials: "same-origin" });
  if (!resp.ok) throw new Error(`token_url answered ${resp.status}`);
  const body = await resp.json();
  hook.tokensFetched++;
  return body.token || body.access_token || null;
}

function forgetTokenInUrl() {
  const url = new URL(location.href);
  url.searchParams.delete("token");
  history.replaceState(null, "", url);
}

function onclose(code, reason) {
  hook.closes.push({ code, reason });
  conn = null;
  player.stop();
  retry(code === 4401 ? `not authorised (${reason})` : `connection lost (${code})`);
}

function retry(why) {
  const delay = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)] * (0.8 + 0.4 * Math.random());
  attempt++;
  setState("offline");
  status(`${why} — reconnecting in ${Math.ceil(delay / 1000)} s`);
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, delay);
}

function reconnectNow() {
  clearTimeout(retryTimer);
  connect();
}

// -- server events ---------------------------------------------------------------------------

const handlers = {
  session_started() {
    attempt = 0; // a working session resets the backoff
    hook.sessions++;
    setState("listening");
  },
  speech_started() {
    setState("hearing");
  },
  speech_stopped() {
    setState("thinking");
  },
  transcription(e) {
    el.you.textContent = e.text;
    if (e.final) hook.transcripts.push(e.text);
  },
  stream_start(e) {
    replyId = e.response_id;
    replyText = "";
    el.caption.textContent = "";
    setState("thinking");
  },
  token(e) {
    if (e.response_id === replyId) replyText += e.text;
  },
  agent_response(e) {
    if (e.response_id === replyId) replyText = e.text;
  },
  tts_start(e) {
    player.begin(e.response_id, e.sample_rate);
  },
  viseme(e) {
    hook.visemeEvents++;
    lipsync.addVisemes(e.response_id, e.visemes);
  },
  word_timing(e) {
    hook.wordEvents++;
    lipsync.addWords(e.response_id, e.words);
  },
  interrupted() {
    player.stop();
  },
  stream_end() {
    hook.replies.push(replyText);
  },
  error(e) {
    hook.errors.push(`${e.code}: ${e.message}`);
  },
};

function onevent(event) {
  handlers[event.type]?.(event);
}

function onaudio(data) {
  player.push(data);
}

// -- the face ----------------------------------------------------------------------------

let lastFrame = performance.now();
let lastPath = "";
let blinkUntil = 0;
let nextBlink = performance.now() + 3000;

function frame(now) {
  const dt = Math.min(100, now - lastFrame);
  lastFrame = now;
  const heard = player.position();
  const [target, name] = mouthTarget(heard);
  ease(pose, target, dt);
  drawMouth(name, heard !== null);
  if (heard) {
    hook.sync.push([Math.round(heard.ms), +heard.rms.toFixed(4), +pose.open.toFixed(3)]);
    if (hook.sync.length > 1000) hook.sync.shift();
  }
  drawEyes(now);
  drawCaption(heard, now);
  if (heard) lastAudioAt = now;
  const speaking = player.playing;
  if (speaking && hook.state !== "speaking" && hook.state !== "hearing") setState("speaking");
  if (!speaking && hook.state === "speaking") setState("listening");
  el.ring.style.strokeOpacity = hook.state === "listening" ? ringLevel() : "";
  requestAnimationFrame(frame);
}

function mouthTarget(heard) {
  if (!heard) return [SHAPES.sil, "sil"];
  const name = lipsync.visemeAt(heard.responseId, heard.ms + LOOKAHEAD_MS);
  if (name) return [SHAPES[name] || SHAPES.E, name];
  return [poseFromLevel(heard.rms), "level"]; // no viseme events: follow the loudness
}

function drawMouth(name, playing) {
  const { d, up, down } = mouthShape(pose, MOUTH.cx, MOUTH.cy);
  if (d === lastPath) return;
  lastPath = d;
  el.mouth.setAttribute("d", d);
  el.mouth.dataset.viseme = name;
  el.inside.setAttribute("d", d);
  el.clip.setAttribute("d", d);
  el.teeth.setAttribute("y", (MOUTH.cy - up - 2).toFixed(1));
  el.teeth.setAttribute("opacity", pose.teeth.toFixed(2));
  el.tongue.setAttribute("cy", (MOUTH.cy + down + 4).toFixed(1));
  if (playing) {
    hook.mouthChanges++;
    hook.shapes[name] = (hook.shapes[name] || 0) + 1;
  }
}

function drawEyes(now) {
  if (now > nextBlink) {
    blinkUntil = now + 130;
    nextBlink = now + 2500 + Math.random() * 4000;
  }
  const closed = now < blinkUntil ? 17 : 0;
  for (const lid of el.lids) lid.setAttribute("ry", String(closed));
  const look = hook.state === "thinking" ? "translate(5 -5)" : "translate(0 0)";
  for (const pupil of el.pupils) pupil.setAttribute("transform", look);
}

function drawCaption(heard, now) {
  let text = replyText;
  if (heard) {
    const words = lipsync.wordsUntil(heard.responseId, heard.ms);
    if (words) text = words.slice(-CAPTION_WORDS).join(" ");
  } else if (text.length > 160) {
    text = "…" + text.slice(-160);
  }
  if (text && el.caption.textContent !== text) el.caption.textContent = text;
  const stale = !heard && !player.playing && now - lastAudioAt > CAPTION_LINGER_MS;
  el.caption.classList.toggle("stale", stale && hook.state === "listening");
}

function ringLevel() {
  const db = mic?.level ?? -100;
  return (0.35 + 0.65 * Math.max(0, Math.min(1, (db + 55) / 40))).toFixed(2);
}

function setState(state) {
  if (hook.state === state) return;
  hook.state = state;
  document.body.className = state;
  if (state !== "offline") status(state);
}

function status(text) {
  el.status.textContent = text;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

drawMouth("sil", false);
boot().catch((err) => {
  hook.errors.push(String(err));
  status(`failed: ${err.message || err}`);
});
