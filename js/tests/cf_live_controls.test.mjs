// Unit tests of the live controls' pure logic (cf_live_controls.js): `node --test js/tests/`.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";

// a plain .js ES module without a package.json: import it directly where Node detects ES module syntax, else
// through a data: URL (as cf_player_queue.test.mjs does)
async function load() {
  const url = new URL("../cf_live_controls.js", import.meta.url);
  try {
    return await import(url.href);
  } catch {
    const src = await readFile(url, "utf8");
    return import(`data:text/javascript;base64,${Buffer.from(src).toString("base64")}`);
  }
}

const L = await load();
const {
  ACTIONS, CONTROL_ROUTE, LIVE_EVENT, LIVE_NODES, LIVE_STATES, MAX_PROMPT_CHARS, RATE_LIMIT, RateLimiter,
  buildControlBody, charCount, controlRequestInit, ellipsize, formatLiveStatus, formatLiveTitle, initialLive,
  isActive, isLiveNode, normalizeLiveEvent, parseControlResponse, reduceLive, stateLabel, toggleAction,
  validatePrompt, wantsPaused,
} = L;

const TOKEN = "s3cr3t-token";
const ev = (over = {}) => ({
  node: "9",
  run: TOKEN,
  state: "running",
  chunk: 3,
  max_chunks: 640,
  prompt: "a fox runs through snow",
  events: [{ chunk: 0, text: "a fox runs through snow" }],
  ...over,
});
const feed = (live, ...details) => details.reduce((s, d) => reduceLive(s, { type: "event", detail: d }), live);
const ok = (over = {}) => ({ ok: true, status: 200, state: "running", chunk: 3, appliesAt: null, error: null, ...over });

test("constants and node list", () => {
  assert.deepEqual([...LIVE_NODES], ["CausalForcingLive"]);
  assert.ok(Object.isFrozen(LIVE_NODES));
  assert.ok(isLiveNode("CausalForcingLive"));
  assert.ok(!isLiveNode("CausalForcingGenerate"));
  assert.ok(!isLiveNode(undefined));
  assert.equal(LIVE_EVENT, "causal_forcing.live");
  assert.equal(CONTROL_ROUTE, "/causal_forcing/live/control");
  assert.equal(MAX_PROMPT_CHARS, 2000);
  assert.deepEqual([...LIVE_STATES], ["running", "paused", "stopping", "finished"]);
  assert.deepEqual([...ACTIONS], ["prompt", "pause", "resume", "stop"]);
  assert.deepEqual({ ...RATE_LIMIT }, { limit: 5, windowMs: 1000 });
});

test("normalizes live events and rejects malformed ones", () => {
  const n = normalizeLiveEvent(ev({ ended_by: "stop", events: [{ chunk: 0, text: "a" }, { chunk: -1, text: "b" }, null] }));
  assert.deepEqual(n, {
    node: "9", run: TOKEN, state: "running", chunk: 3, maxChunks: 640, prompt: "a fox runs through snow",
    events: [{ chunk: 0, text: "a" }], endedBy: "stop", error: null,
  });
  assert.equal(normalizeLiveEvent(ev({ node: 12 })).node, "12");
  assert.equal(normalizeLiveEvent(ev({ node: "12:5" })).node, "12:5");
  for (const bad of [null, "x", ev({ run: "" }), ev({ run: 5 }), ev({ state: "walking" }), ev({ node: null }), ev({ node: "" })]) {
    assert.equal(normalizeLiveEvent(bad), null, JSON.stringify(bad));
  }
  const loose = normalizeLiveEvent(ev({ chunk: "x", max_chunks: 0, prompt: 4, events: "no" }));
  assert.equal(loose.chunk, null);
  assert.equal(loose.maxChunks, null);
  assert.equal(loose.prompt, null);
  assert.deepEqual(loose.events, []);
  assert.equal(normalizeLiveEvent(ev({ error: "  " })).error, null);
  assert.equal(normalizeLiveEvent(ev({ error: 7 })).error, null);
});

test("reducer: a run starts, counts chunks, finishes; a new token starts afresh", () => {
  const s0 = initialLive();
  assert.equal(isActive(s0), false);
  const s1 = feed(s0, ev({ chunk: 0 }));
  assert.equal(s1.run, TOKEN);
  assert.equal(s1.state, "running");
  assert.equal(isActive(s1), true);
  assert.equal(formatLiveStatus(s1), "running · 0 chunks made (at most 640) · \u201ca fox runs through snow\u201d");
  const s2 = feed(s1, ev({ chunk: 37, prompt: "a fox sleeps", events: [{ chunk: 0, text: "a" }, { chunk: 20, text: "a fox sleeps" }] }));
  assert.equal(s2.chunk, 37);
  assert.equal(s2.prompt, "a fox sleeps");
  assert.equal(formatLiveStatus(s2), "running · 37 chunks made (at most 640) · \u201ca fox sleeps\u201d");
  assert.match(formatLiveTitle(s2), /prompt changes:\n {2}chunk 1: a\n {2}chunk 21: a fox sleeps/);
  // chunk counts never go back within a run; malformed events change nothing
  assert.equal(feed(s2, ev({ chunk: 5 })).chunk, 37);
  assert.equal(reduceLive(s2, { type: "event", detail: { node: "9" } }), s2);
  assert.equal(reduceLive(s2, null), s2);
  const s3 = feed(s2, ev({ state: "finished", chunk: 40, ended_by: "stop" }));
  assert.equal(isActive(s3), false);
  assert.equal(formatLiveStatus(s3), "finished (stopped) · 40 chunks made (at most 640) · \u201ca fox runs through snow\u201d");
  // a finished run never comes back to life, even from a crossed event
  assert.equal(feed(s3, ev({ state: "running", chunk: 41 })).state, "finished");
  // a new token: fresh state (message and pending gone)
  const s4 = feed({ ...s3, message: { kind: "error", text: "x" } }, ev({ run: "other", chunk: 0, max_chunks: 10 }));
  assert.equal(s4.run, "other");
  assert.equal(s4.state, "running");
  assert.equal(s4.message, null);
  assert.equal(s4.chunk, 0);
  assert.equal(formatLiveStatus(initialLive()), "no live run \u2014 queue the workflow to start one");
  // without max_chunks
  assert.equal(formatLiveStatus(feed(s0, ev({ max_chunks: null, prompt: "" }))), "running · 3 chunks made");
  assert.equal(formatLiveStatus(feed(s0, ev({ max_chunks: 9, chunk: 1, prompt: "" }))), "running · 1 chunk made (at most 9)");
});

test("reducer: pause/resume requests stay pending until an event confirms them", () => {
  let s = feed(initialLive(), ev({ chunk: 10 }));
  assert.equal(toggleAction(s), "pause");
  s = reduceLive(s, { type: "response", run: TOKEN, action: "pause", reply: ok({ chunk: 10 }) });
  assert.deepEqual(s.pending, { action: "pause", chunk: 10 });
  assert.equal(s.state, "running");
  assert.equal(wantsPaused(s), true);
  assert.equal(toggleAction(s), "resume");
  assert.equal(stateLabel(s), "running \u2192 pausing");
  s = feed(s, ev({ chunk: 11 })); // the chunk in progress ends
  assert.ok(s.pending);
  s = feed(s, ev({ chunk: 11, state: "paused" }));
  assert.equal(s.pending, null);
  assert.equal(s.state, "paused");
  assert.equal(toggleAction(s), "resume");
  assert.equal(isActive(s), true);
  // resume
  s = reduceLive(s, { type: "response", run: TOKEN, action: "resume", reply: ok({ state: "paused", chunk: 11 }) });
  assert.equal(stateLabel(s), "paused \u2192 resuming");
  assert.equal(toggleAction(s), "pause");
  s = feed(s, ev({ chunk: 11, state: "running" }));
  assert.equal(s.pending, null);
  // a reply that already shows the target state needs no confirmation
  s = reduceLive(s, { type: "response", run: TOKEN, action: "pause", reply: ok({ state: "paused", chunk: 11 }) });
  assert.equal(s.state, "paused");
  assert.equal(s.pending, null);
  // an unconfirmed pause is forgotten two chunks later (someone else resumed)
  s = feed(s, ev({ chunk: 12, state: "running" }));
  s = reduceLive(s, { type: "response", run: TOKEN, action: "pause", reply: ok({ chunk: 12 }) });
  s = feed(s, ev({ chunk: 13 }));
  assert.ok(s.pending);
  s = feed(s, ev({ chunk: 14 }));
  assert.equal(s.pending, null);
});

test("reducer: stop, prompt replies, errors, stale replies, prompt end", () => {
  let s = feed(initialLive(), ev({ chunk: 36 }));
  s = reduceLive(s, { type: "response", run: TOKEN, action: "prompt", text: "owls", reply: ok({ appliesAt: 37 }) });
  // counted from 1 like the status line (37 made: the next is the 38th), with the 0-based schedule line named
  assert.deepEqual(s.message, { kind: "info", text: "prompt accepted: from chunk 38 on (line \u201c37:\u201d of the schedule output)" });
  assert.equal(s.sentPrompt, "owls");
  s = reduceLive(s, { type: "response", run: TOKEN, action: "prompt", text: "x", reply: parseControlResponse(400, { error: "prompt too long" }) });
  assert.deepEqual(s.message, { kind: "error", text: "prompt too long" });
  assert.equal(s.state, "running");
  // a reply for another (older) run is ignored
  assert.equal(reduceLive(s, { type: "response", run: "old", action: "stop", reply: ok() }), s);
  // stop: stopping at once, never back to running from a crossed reply or event
  s = reduceLive(s, { type: "response", run: TOKEN, action: "stop", reply: ok({ state: "stopping", chunk: 36 }) });
  assert.equal(s.state, "stopping");
  assert.equal(s.message, null, "a successful request clears the last error");
  assert.equal(isActive(s), false);
  s = feed(s, ev({ chunk: 37, state: "running" }));
  assert.equal(s.state, "stopping");
  assert.equal(s.chunk, 37);
  s = reduceLive(s, { type: "response", run: TOKEN, action: "pause", reply: ok({ state: "running", chunk: 36 }) });
  assert.equal(s.state, "stopping");
  // a reply saying stopping even when the client asked for something else
  let t = feed(initialLive(), ev({ chunk: 3 }));
  t = reduceLive(t, { type: "response", run: TOKEN, action: "stop", reply: ok({ state: null, chunk: null }) });
  assert.equal(t.state, "stopping");
  // the prompt ended: an open run is finished
  t = feed(initialLive(), ev({ state: "paused" }));
  t = reduceLive(t, { type: "ended" });
  assert.equal(t.state, "finished");
  assert.equal(isActive(t), false);
  assert.equal(reduceLive(initialLive(), { type: "ended" }).state, null);
  // 404: the server does not know the run any more
  t = feed(initialLive(), ev());
  t = reduceLive(t, { type: "response", run: TOKEN, action: "pause", reply: parseControlResponse(404, { error: "no such live run" }) });
  assert.equal(t.state, "finished");
  assert.equal(t.message.text, "no such live run");
  // local messages
  t = reduceLive(t, { type: "message", kind: "error", text: "too many requests" });
  assert.deepEqual(t.message, { kind: "error", text: "too many requests" });
  assert.equal(reduceLive(t, { type: "message", text: "" }).message, null);
});

test("prompt validation mirrors the server (trimmed, non-empty, at most 2000 code points)", () => {
  assert.deepEqual(validatePrompt("  a cat \n"), { ok: true, text: "a cat" });
  assert.equal(validatePrompt("   \n\t").ok, false);
  assert.match(validatePrompt("").error, /empty/);
  assert.equal(validatePrompt(null).ok, false);
  assert.equal(validatePrompt("x".repeat(2000)).ok, true);
  assert.equal(validatePrompt(` ${"x".repeat(2000)}\n`).ok, true, "whitespace around does not count");
  const long = validatePrompt("x".repeat(2001));
  assert.equal(long.ok, false);
  assert.match(long.error, /2001 characters; keep it under 2000/);
  // astral characters count once (as Python's len does), not twice as JS .length would
  const emoji = "\u{1F98A}".repeat(2000);
  assert.equal(emoji.length, 4000);
  assert.equal(charCount(emoji), 2000);
  assert.equal(validatePrompt(emoji).ok, true);
});

test("control bodies", () => {
  const live = feed(initialLive(), ev());
  assert.deepEqual(buildControlBody(live, "pause"), { ok: true, body: { run: TOKEN, action: "pause" } });
  assert.deepEqual(buildControlBody(live, "stop"), { ok: true, body: { run: TOKEN, action: "stop" } });
  assert.deepEqual(buildControlBody(live, "prompt", { text: " owls \n" }), {
    ok: true, body: { run: TOKEN, action: "prompt", text: "owls", recache: true },
  });
  assert.equal(buildControlBody(live, "prompt", { text: "owls", recache: false }).body.recache, false);
  assert.equal(buildControlBody(live, "prompt", { text: "" }).ok, false);
  assert.equal(buildControlBody(live, "prompt", { text: "y".repeat(2001) }).ok, false);
  assert.match(buildControlBody(live, "jump").error, /unknown action/);
  assert.match(buildControlBody(initialLive(), "pause").error, /no live run/);
  const done = feed(live, ev({ state: "finished" }));
  assert.match(buildControlBody(done, "resume").error, /ended/);
  assert.equal(buildControlBody(feed(live, ev({ state: "stopping" })), "stop").ok, false);
  assert.equal(buildControlBody(feed(live, ev({ state: "paused" })), "resume").ok, true);
  const init = controlRequestInit({ run: TOKEN, action: "stop" });
  assert.equal(init.method, "POST");
  assert.equal(init.headers["Content-Type"], "application/json");
  assert.deepEqual(JSON.parse(init.body), { run: TOKEN, action: "stop" });
});

test("control replies", () => {
  assert.deepEqual(parseControlResponse(200, { ok: true, state: "paused", chunk: 4, applies_at_chunk: 5 }), {
    ok: true, status: 200, state: "paused", chunk: 4, appliesAt: 5, error: null,
  });
  assert.equal(parseControlResponse(200, { ok: true, state: "weird" }).state, null);
  assert.equal(parseControlResponse(200, { state: "running" }).ok, false, "ok: true is required");
  assert.equal(parseControlResponse(409, { error: " This live run has ended. " }).error, "This live run has ended.");
  assert.equal(parseControlResponse(429, {}).error, "too many requests; wait a moment (HTTP 429)");
  assert.equal(parseControlResponse(404, null).error, "the server has no such live run (HTTP 404)");
  assert.equal(parseControlResponse(500, "<html>").error, "the request failed (HTTP 500)");
  assert.equal(parseControlResponse(undefined, null).error, "the request failed");
});

test("rate limiter: at most 5 requests in any second", () => {
  let t = 1000;
  const r = new RateLimiter({ now: () => t });
  for (let i = 0; i < 5; i++, t += 100) assert.deepEqual(r.take(), { ok: true }); // at 1000, 1100, ..., 1400
  t = 1450;
  const no = r.take();
  assert.equal(no.ok, false);
  assert.equal(no.retryInMs, 550);
  t = 2000; // the first slot frees
  assert.equal(r.take().ok, true);
  assert.equal(r.take().ok, false);
  t = 2400; // 1100..1400 have freed
  assert.equal(r.take().ok, true);
  const one = new RateLimiter({ limit: 1, windowMs: 200 });
  assert.equal(one.take(0).ok, true);
  assert.equal(one.take(199).ok, false);
  assert.equal(one.take(200).ok, true);
});

test("ellipsize", () => {
  assert.equal(ellipsize("a\n  b"), "a b");
  assert.equal(ellipsize("abcdef", 4), "abc\u2026");
  assert.equal(ellipsize("\u{1F98A}\u{1F98A}\u{1F98A}", 2), "\u{1F98A}\u2026");
  assert.equal(ellipsize(null), "");
});

test("a run an error ended says so, with the server's message and what the outputs keep", () => {
  let s = feed(initialLive(), ev({ chunk: 13 }));
  s = feed(s, ev({ state: "finished", chunk: 14, ended_by: "error", error: "RuntimeError: CUDA out of memory" }));
  assert.equal(stateLabel(s), "finished (ended by an error)");
  assert.equal(formatLiveStatus(s), "finished (ended by an error) · 14 chunks made (at most 640) · \u201ca fox runs through snow\u201d");
  assert.deepEqual(s.message, {
    kind: "error", text: "RuntimeError: CUDA out of memory \u2014 the run ended; its outputs keep the 14 chunks made.",
  });
  assert.equal(isActive(s), false);
  // a cancel from the queue reads as such (not "stopped"), and so does each other end
  for (const [endedBy, label] of [["interrupted", "cancelled from the queue"], ["stop", "stopped"],
    ["max_chunks", "reached its maximum length"], ["disconnected", "page disconnected"]]) {
    assert.equal(stateLabel(feed(initialLive(), ev({ state: "finished", ended_by: endedBy }))), `finished (${label})`);
  }
  // a page that opens after the error (first event it sees) shows the message too
  const late = feed(initialLive(), ev({ state: "finished", chunk: 1, ended_by: "error", error: "boom" }));
  assert.equal(late.message.text, "boom \u2014 the run ended; its outputs keep the 1 chunk made.");
});
