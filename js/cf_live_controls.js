// Pure logic of the live controls on `CausalForcingLive` nodes (prompt box, pause/resume, stop, status line): the
// live state reducer, control request building and validation, response parsing and a rate limiter. No DOM, no
// ComfyUI imports, so it runs (and is tested) in Node: `node --test js/tests/`.
//
// ComfyUI imports every *.js file of this folder as an extension module at page load; this one only exports
// constants, functions and a class, so loading it on its own does nothing.

/** comfyClass names of the nodes that get the live control panel (they also get the player). */
export const LIVE_NODES = Object.freeze(["CausalForcingLive"]);

/** Websocket event with a live run's state (sent at start, after each chunk and on every state change). */
export const LIVE_EVENT = "causal_forcing.live";
/** Route that steers a live run (POST, JSON body `{run, action, text?, recache?}`). */
export const CONTROL_ROUTE = "/causal_forcing/live/control";

/** The longest prompt text the server accepts, in characters (Unicode code points, like Python's `len`). */
export const MAX_PROMPT_CHARS = 2000;
/** Client-side request limit: at most `limit` control requests in any `windowMs` milliseconds. */
export const RATE_LIMIT = Object.freeze({ limit: 5, windowMs: 1000 });

export const LIVE_STATES = Object.freeze(["running", "paused", "stopping", "finished"]);
export const ACTIONS = Object.freeze(["prompt", "pause", "resume", "stop"]);
/** Why a live run ended (`ended_by`), as shown in the status line. */
export const ENDED_LABELS = Object.freeze({
  stop: "stopped",
  interrupted: "cancelled from the queue",
  max_chunks: "reached its maximum length",
  disconnected: "page disconnected",
  error: "ended by an error",
});

/** A state never goes back to a lower rank within one run (websocket events and HTTP replies can cross). */
const STATE_RANK = { running: 1, paused: 1, stopping: 2, finished: 3 };
/** A pause/resume request that no event confirmed is forgotten after this many more chunks. */
const PENDING_CHUNKS = 2;
const PROMPT_PREVIEW_CHARS = 80;
const SEP = " \u00b7 "; // " · "

/** True when nodes of this comfyClass get the live controls. */
export function isLiveNode(comfyClass, list = LIVE_NODES) {
  return typeof comfyClass === "string" && list.includes(comfyClass);
}

/** A non-negative integer, or null. */
function toIndex(value) {
  if (value === null || value === undefined || value === "" || typeof value === "boolean") return null;
  const n = Number(value);
  return Number.isInteger(n) && n >= 0 ? n : null;
}

/** Length in Unicode code points (what the server's Python `len` counts; JS `.length` counts UTF-16 units). */
export function charCount(text) {
  let n = 0;
  for (const _ of String(text)) n += 1;
  return n;
}

/** One line of at most `max` characters (whitespace collapsed, "…" when cut). */
export function ellipsize(text, max = PROMPT_PREVIEW_CHARS) {
  const line = String(text ?? "").replace(/\s+/g, " ").trim();
  const chars = [...line];
  if (chars.length <= max) return line;
  return `${chars.slice(0, Math.max(1, max - 1)).join("").trimEnd()}\u2026`;
}

// ------------------------------------------------------------------------------------------------- live events

/** The prompt events of a live event: `[{chunk, text}]` with valid entries only. */
export function normalizeEvents(list) {
  if (!Array.isArray(list)) return [];
  const out = [];
  for (const e of list) {
    if (!e || typeof e !== "object" || typeof e.text !== "string") continue;
    const chunk = toIndex(e.chunk);
    if (chunk === null) continue;
    out.push({ chunk, text: e.text });
  }
  return out;
}

/**
 * A clean `{node, run, state, chunk, maxChunks, prompt, events, endedBy, error}` from a `causal_forcing.live`
 * event's detail, or null when it names no node, no run token or no known state. Optional fields that are malformed
 * are null (chunk, maxChunks, endedBy, prompt, error) or [] (events).
 */
export function normalizeLiveEvent(detail) {
  if (!detail || typeof detail !== "object") return null;
  const node = detail.node;
  if ((typeof node !== "string" && typeof node !== "number") || String(node) === "") return null;
  const run = detail.run;
  if (typeof run !== "string" || run === "") return null;
  const state = detail.state;
  if (!LIVE_STATES.includes(state)) return null;
  const max = toIndex(detail.max_chunks);
  return {
    node: String(node),
    run,
    state,
    chunk: toIndex(detail.chunk),
    maxChunks: max && max > 0 ? max : null,
    prompt: typeof detail.prompt === "string" ? detail.prompt : null,
    events: normalizeEvents(detail.events),
    endedBy: typeof detail.ended_by === "string" && detail.ended_by ? detail.ended_by : null,
    error: typeof detail.error === "string" && detail.error.trim() ? detail.error.trim() : null,
  };
}

/** The message under the status line for a run that an error ended (the outputs keep what was made). */
export function errorMessage(error, chunk) {
  const made = chunk === 1 ? "1 chunk" : `${chunk ?? 0} chunks`;
  return { kind: "error", text: `${error} — the run ended; its outputs keep the ${made} made.` };
}

/** The state of a node's live controls before any event. */
export function initialLive() {
  return {
    run: null, // the run's secret token: needed to steer it
    state: null, // "running" | "paused" | "stopping" | "finished" | null (no run seen)
    chunk: 0, // chunks made so far
    maxChunks: null,
    prompt: "", // the run's current prompt
    events: [], // [{chunk, text}] prompt changes so far
    endedBy: null,
    error: null, // why an error ended the run (the server's message)
    pending: null, // {action: "pause" | "resume", chunk}: requested, not yet confirmed by an event
    sentPrompt: null, // the last prompt text the server accepted from this client
    message: null, // {kind: "error" | "info", text}: shown under the status line
  };
}

/** True when the run can be steered: it has a token and is running or paused. */
export function isActive(live) {
  return !!(live && live.run && (live.state === "running" || live.state === "paused"));
}

/** True when the run is (or is about to be) paused: it is paused with no resume pending, or a pause is pending. */
export function wantsPaused(live) {
  if (!live) return false;
  if (live.pending) return live.pending.action === "pause";
  return live.state === "paused";
}

/** The action of the Pause/Resume toggle button now: "resume" while (about to be) paused, else "pause". */
export function toggleAction(live) {
  return wantsPaused(live) ? "resume" : "pause";
}

function higherOrSame(current, next) {
  return (STATE_RANK[next] ?? 0) >= (STATE_RANK[current] ?? 0);
}

/** `pending` after the run moved to `state` at `chunk`: kept until confirmed, overtaken or stale. */
function settlePending(pending, state, chunk) {
  if (!pending) return null;
  if (state === "stopping" || state === "finished") return null;
  if (pending.action === "pause" && state === "paused") return null;
  if (pending.action === "resume" && state === "running") return null;
  if (chunk >= pending.chunk + PENDING_CHUNKS) return null;
  return pending;
}

/**
 * The next live state. Actions:
 *
 * - `{type: "event", detail}`: a `causal_forcing.live` event for this node. Another run token starts afresh;
 *   within one run the state never goes back (finished > stopping > running/paused) and the chunk count never
 *   decreases. Invalid details change nothing.
 * - `{type: "response", run, action, text?, reply}`: the parsed reply ({@link parseControlResponse}) to a control
 *   request sent for run `run`; ignored when the node has moved on to another run.
 * - `{type: "message", kind, text}`: a message from the client itself (validation, rate limit).
 * - `{type: "ended"}`: the prompt ended (success, error or interruption): a run still open is finished.
 *
 * Never throws; returns `live` itself when nothing changes.
 */
export function reduceLive(live, action) {
  const cur = live && typeof live === "object" ? live : initialLive();
  if (!action || typeof action !== "object") return cur;
  switch (action.type) {
    case "event": {
      const n = normalizeLiveEvent(action.detail);
      if (!n) return cur;
      if (n.run !== cur.run) {
        return {
          ...initialLive(),
          run: n.run,
          state: n.state,
          chunk: n.chunk ?? 0,
          maxChunks: n.maxChunks,
          prompt: n.prompt ?? "",
          events: n.events,
          endedBy: n.endedBy,
          error: n.error,
          message: n.error ? errorMessage(n.error, n.chunk) : null,
        };
      }
      const state = higherOrSame(cur.state, n.state) ? n.state : cur.state;
      const chunk = Math.max(cur.chunk, n.chunk ?? 0);
      return {
        ...cur,
        state,
        chunk,
        maxChunks: n.maxChunks ?? cur.maxChunks,
        prompt: n.prompt ?? cur.prompt,
        events: n.events.length || !cur.events.length ? n.events : cur.events,
        endedBy: n.endedBy ?? cur.endedBy,
        error: n.error ?? cur.error,
        message: n.error && !cur.error ? errorMessage(n.error, chunk) : cur.message,
        pending: settlePending(cur.pending, state, chunk),
      };
    }
    case "response": {
      if (!cur.run || action.run !== cur.run) return cur;
      const reply = action.reply && typeof action.reply === "object" ? action.reply : { ok: false };
      if (!reply.ok) {
        const next = { ...cur, message: { kind: "error", text: reply.error || "the request failed" } };
        // the server does not know this run (any more): it cannot be steered
        if (reply.status === 404 && (cur.state === "running" || cur.state === "paused" || cur.state === "stopping")) {
          next.state = "finished";
          next.pending = null;
        }
        return next;
      }
      let state = cur.state;
      if (LIVE_STATES.includes(reply.state) && higherOrSame(cur.state, reply.state)) {
        // a reply can be older than the events that came meanwhile; only trust it for the same or a later chunk
        if (reply.chunk === null || reply.chunk >= cur.chunk || STATE_RANK[reply.state] > STATE_RANK[cur.state]) {
          state = reply.state;
        }
      }
      const chunk = Math.max(cur.chunk, reply.chunk ?? 0);
      let pending = cur.pending;
      let message = null;
      let sentPrompt = cur.sentPrompt;
      if (action.action === "pause" || action.action === "resume") {
        pending = { action: action.action, chunk };
      } else if (action.action === "stop") {
        if (STATE_RANK[state] < STATE_RANK.stopping) state = "stopping";
        pending = null;
      } else if (action.action === "prompt") {
        sentPrompt = typeof action.text === "string" ? action.text : null;
        message = { kind: "info", text: acceptedText(reply.appliesAt) };
      }
      return { ...cur, state, chunk, pending: settlePending(pending, state, chunk), sentPrompt, message };
    }
    case "message": {
      const text = typeof action.text === "string" ? action.text : "";
      if (!text) return cur.message ? { ...cur, message: null } : cur;
      return { ...cur, message: { kind: action.kind === "info" ? "info" : "error", text } };
    }
    case "ended": {
      if (!cur.run || cur.state === "finished" || cur.state === null) return cur;
      return { ...cur, state: "finished", pending: null };
    }
    default:
      return cur;
  }
}

/**
 * What the panel says when the server accepted a prompt (it was checked and encoded): the chunk it drives from,
 * counted from 1 like the status line, and the line of the schedule output that records it (which counts from 0).
 */
export function acceptedText(appliesAt) {
  if (appliesAt === null || appliesAt === undefined) return "prompt accepted";
  return `prompt accepted: from chunk ${appliesAt + 1} on (line “${appliesAt}:” of the schedule output)`;
}

// ------------------------------------------------------------------------------------------------- requests

/** `{ok: true, text}` (trimmed) when the server would take `text` as a prompt, else `{ok: false, error}`. */
export function validatePrompt(text, { maxChars = MAX_PROMPT_CHARS } = {}) {
  if (typeof text !== "string" || !text.trim()) {
    return { ok: false, error: "The prompt is empty; write what the video should show." };
  }
  const trimmed = text.trim();
  const n = charCount(trimmed);
  if (n > maxChars) return { ok: false, error: `The prompt has ${n} characters; keep it under ${maxChars}.` };
  return { ok: true, text: trimmed };
}

/**
 * The JSON body of a control request for the node's live state: `{ok: true, body}` or `{ok: false, error}` when
 * there is no run to steer, the action is unknown or the prompt is invalid. `prompt` bodies carry the trimmed text
 * and `recache` (a boolean, default true); the others only `{run, action}`.
 */
export function buildControlBody(live, action, { text, recache = true } = {}) {
  if (!ACTIONS.includes(action)) return { ok: false, error: `unknown action ${JSON.stringify(action)}` };
  if (!isActive(live)) {
    return { ok: false, error: live && live.run ? "this live run has ended" : "no live run to steer; queue the workflow" };
  }
  if (action !== "prompt") return { ok: true, body: { run: live.run, action } };
  const v = validatePrompt(text);
  if (!v.ok) return v;
  return { ok: true, body: { run: live.run, action, text: v.text, recache: recache !== false } };
}

/** The `api.fetchApi` options of a control request with this body. */
export function controlRequestInit(body) {
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

/**
 * `{ok, status, state, chunk, appliesAt, error}` from a control reply's HTTP status and parsed JSON body (null when
 * the body was not JSON). A 2xx reply with `ok: true` succeeds; otherwise `error` is the server's message, or a
 * description of the status.
 */
export function parseControlResponse(status, json) {
  const code = Number(status);
  const body = json && typeof json === "object" && !Array.isArray(json) ? json : null;
  const good = code >= 200 && code < 300 && !!body && body.ok === true;
  const state = body && LIVE_STATES.includes(body.state) ? body.state : null;
  const chunk = body ? toIndex(body.chunk) : null;
  const appliesAt = body ? toIndex(body.applies_at_chunk) : null;
  if (good) return { ok: true, status: code, state, chunk, appliesAt, error: null };
  let error = body && typeof body.error === "string" && body.error.trim() ? body.error.trim() : null;
  if (!error) {
    if (code === 404) error = "the server has no such live run (HTTP 404)";
    else if (code === 429) error = "too many requests; wait a moment (HTTP 429)";
    else if (Number.isFinite(code) && code > 0) error = `the request failed (HTTP ${code})`;
    else error = "the request failed";
  }
  return { ok: false, status: Number.isFinite(code) ? code : 0, state, chunk, appliesAt, error };
}

/** Allows at most `limit` requests in any `windowMs` milliseconds (a sliding window). */
export class RateLimiter {
  constructor({ limit = RATE_LIMIT.limit, windowMs = RATE_LIMIT.windowMs, now = () => Date.now() } = {}) {
    this.limit = Math.max(1, Math.floor(limit));
    this.windowMs = Math.max(1, windowMs);
    this.now = now;
    this.times = [];
  }

  _prune(t) {
    while (this.times.length && t - this.times[0] >= this.windowMs) this.times.shift();
  }

  /** Take a slot: `{ok: true}`, or `{ok: false, retryInMs}` when the limit is reached (nothing is taken then). */
  take(t = this.now()) {
    this._prune(t);
    if (this.times.length >= this.limit) {
      return { ok: false, retryInMs: Math.max(1, Math.ceil(this.times[0] + this.windowMs - t)) };
    }
    this.times.push(t);
    return { ok: true };
  }
}

// ------------------------------------------------------------------------------------------------- display

/** The state part of the status line, e.g. `running`, `running → pausing`, `finished (stopped)`. */
export function stateLabel(live) {
  if (!live || !live.state) return "";
  let s = live.state;
  if (live.pending?.action === "pause" && s === "running") s += " \u2192 pausing";
  else if (live.pending?.action === "resume" && s === "paused") s += " \u2192 resuming";
  if (s === "finished" && live.endedBy) s += ` (${ENDED_LABELS[live.endedBy] ?? live.endedBy})`;
  return s;
}

/** How many chunks a run made, e.g. `37 chunks made (at most 640)` (the player counts the same chunks from 1). */
export function madeLabel(chunk, maxChunks) {
  const made = chunk === 1 ? "1 chunk made" : `${chunk} chunks made`;
  return maxChunks ? `${made} (at most ${maxChunks})` : made;
}

/** The status line under the prompt box, e.g. `running · 37 chunks made (at most 640) · “a fox runs…”`. */
export function formatLiveStatus(live) {
  if (!live || !live.run) return "no live run \u2014 queue the workflow to start one";
  const parts = [stateLabel(live), madeLabel(live.chunk, live.maxChunks)];
  if (live.prompt) parts.push(`\u201c${ellipsize(live.prompt)}\u201d`);
  return parts.join(SEP);
}

/** A tooltip with the whole prompt and the run's prompt changes (`chunk N: text`, chunks counted from 1). */
export function formatLiveTitle(live) {
  if (!live || !live.run) return formatLiveStatus(live);
  const lines = [formatLiveStatus(live).replace(/\s·\s\u201c.*$/, "")];
  if (live.prompt) lines.push(`prompt: ${live.prompt}`);
  if (live.events.length > 1) {
    lines.push("prompt changes:");
    for (const e of live.events) lines.push(`  chunk ${e.chunk + 1}: ${ellipsize(e.text, 120)}`);
  }
  return lines.join("\n");
}
