// Lip sync for the kiosk face: the server's timed viseme and word events, looked up by
// the position of the reply audio being heard, and the mouth geometry of each viseme.

/** Mouth pose per viseme (Oculus/Microsoft set): how open, wide and rounded, teeth. */
export const SHAPES = {
  sil: { open: 0.0, wide: 0.5, round: 0.0, teeth: 0 },
  PP: { open: 0.0, wide: 0.42, round: 0.15, teeth: 0 },
  FF: { open: 0.15, wide: 0.5, round: 0.0, teeth: 1 },
  TH: { open: 0.22, wide: 0.5, round: 0.0, teeth: 1 },
  DD: { open: 0.28, wide: 0.55, round: 0.0, teeth: 1 },
  kk: { open: 0.35, wide: 0.55, round: 0.05, teeth: 0.6 },
  CH: { open: 0.3, wide: 0.38, round: 0.5, teeth: 1 },
  SS: { open: 0.18, wide: 0.62, round: 0.0, teeth: 1 },
  nn: { open: 0.22, wide: 0.52, round: 0.0, teeth: 0.6 },
  RR: { open: 0.3, wide: 0.4, round: 0.45, teeth: 0.4 },
  aa: { open: 0.85, wide: 0.6, round: 0.05, teeth: 0.4 },
  E: { open: 0.55, wide: 0.66, round: 0.0, teeth: 0.7 },
  ih: { open: 0.38, wide: 0.72, round: 0.0, teeth: 0.9 },
  oh: { open: 0.65, wide: 0.4, round: 0.7, teeth: 0.1 },
  ou: { open: 0.45, wide: 0.3, round: 0.95, teeth: 0 },
};

const KEEP_REPLIES = 4;

/** The viseme cues and word timings of the last few replies, by response id. */
export class LipSync {
  constructor() {
    this.cues = new Map(); // response_id → [{offset_ms, viseme}] sorted
    this.words = new Map(); // response_id → [{word, start_ms, end_ms}] sorted
  }

  addVisemes(responseId, list) {
    add(this.cues, responseId, list, "offset_ms");
  }

  addWords(responseId, list) {
    add(this.words, responseId, list, "start_ms");
  }

  hasCues(responseId) {
    return (this.cues.get(responseId)?.length ?? 0) > 0;
  }

  /** The viseme at ``ms`` into the reply's audio (the last cue at or before it). */
  visemeAt(responseId, ms) {
    const cues = this.cues.get(responseId);
    if (!cues?.length) return null;
    const i = lastAtOrBefore(cues, ms, "offset_ms");
    return i < 0 ? "sil" : cues[i].viseme;
  }

  /** Words spoken by ``ms`` (null when there are no timings for this reply). */
  wordsUntil(responseId, ms) {
    const words = this.words.get(responseId);
    if (!words?.length) return null;
    return words.slice(0, lastAtOrBefore(words, ms, "start_ms") + 1).map((w) => w.word);
  }
}

function add(map, id, list, key) {
  if (!id || !Array.isArray(list)) return;
  if (!map.has(id)) {
    map.set(id, []);
    while (map.size > KEEP_REPLIES) map.delete(map.keys().next().value);
  }
  const all = map.get(id);
  all.push(...list.filter((x) => Number.isFinite(x[key])));
  all.sort((a, b) => a[key] - b[key]);
}

function lastAtOrBefore(sorted, value, key) {
  let lo = 0;
  let hi = sorted.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid][key] <= value) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found;
}

/** A pose from the loudness of the audio heard now (no viseme events for this reply). */
export function poseFromLevel(rms) {
  const db = rms > 0 ? 20 * Math.log10(rms) : -100;
  const open = Math.max(0, Math.min(1, (db + 42) / 30));
  return { open, wide: 0.55 - 0.1 * open, round: 0.1, teeth: open > 0.25 ? 0.5 : 0 };
}

/** Moves ``pose`` toward ``target``: fast enough for syllables, without jitter. */
export function ease(pose, target, dtMs, tauMs = 30) {
  const k = 1 - Math.exp(-dtMs / tauMs);
  for (const key of Object.keys(target)) pose[key] += (target[key] - pose[key]) * k;
  return pose;
}

/**
 * The lips' inner outline for a pose, centred on (cx, cy): two cubic curves between
 * the mouth corners (closed lips are a slight smile). Returns the SVG path and how far
 * the upper lip rises (``up``) and the lower lip drops (``down``) at the middle.
 */
export function mouthShape(pose, cx, cy) {
  const half = 50 * (0.7 + 0.5 * pose.wide) * (1 - 0.4 * pose.round);
  const up = pose.open * (12 + 16 * pose.round);
  const down = pose.open * (36 + 4 * pose.round);
  const smile = 4 * (1 - pose.open) * (1 - pose.round);
  const c = half * (0.55 + 0.45 * pose.round); // control points further out: rounder lips
  const yCorner = cy - smile;
  const k = 4 / 3; // a cubic's midpoint reaches 3/4 of its control offset
  const r = (v) => v.toFixed(1);
  const d = `M${r(cx - half)} ${r(yCorner)}` +
    ` C${r(cx - c)} ${r(cy - up * k)} ${r(cx + c)} ${r(cy - up * k)} ${r(cx + half)} ${r(yCorner)}` +
    ` C${r(cx + c)} ${r(cy + down * k)} ${r(cx - c)} ${r(cy + down * k)} ${r(cx - half)} ${r(yCorner)} Z`;
  return { d, up, down };
}
