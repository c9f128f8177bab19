// Unit tests of the player's pure logic: `node --test js/tests/`.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";

// The module is a plain .js ES module without a package.json; import it directly where Node detects ES module syntax
// (Node >= 20.19 / 22.7), else through a data: URL.
async function load() {
  const url = new URL("../cf_player_queue.js", import.meta.url);
  try {
    return await import(url.href);
  } catch {
    const src = await readFile(url, "utf8");
    return import(`data:text/javascript;base64,${Buffer.from(src).toString("base64")}`);
  }
}

const Q = await load();
const {
  DEFAULT_FPS, FrameQueue, PLAYER_NODES, describeNode, executionPaths, formatStatus, frameKey, framesFromOutput,
  isPlayerNode, locatorId, normalizeFrames, parseChunkIndex, pickTargets, runIdFromFrames, sanitizeFps, viewPath,
} = Q;

const RUN = "abc123def456";
const frame = (chunk, j, run = RUN) => ({
  filename: `chunk${String(chunk).padStart(5, "0")}_${String(j).padStart(3, "0")}.jpg`,
  subfolder: `causal_forcing/${run}`,
  type: "temp",
});
const chunkEvent = (chunkInRun, chunksInRun, { run = RUN, first = 0, n = 4, fps = 16 } = {}) => ({
  node: "7",
  run,
  chunk: first + chunkInRun,
  chunk_in_run: chunkInRun,
  chunks_in_run: chunksInRun,
  fps,
  width: 832,
  height: 480,
  frames: Array.from({ length: n }, (_, j) => frame(first + chunkInRun, j, run)),
});
/** Mark every waiting frame as preloaded. */
const loadAll = (q) => {
  for (const e of q.history) if (e.status === "new" || e.status === "loading") e.status = "ready";
};
/** Step until the queue holds; return the shown entries and the hold reason. */
const drain = (q, max = 10000) => {
  const shown = [];
  for (let i = 0; i < max; i++) {
    const r = q.step();
    if (r.type !== "show") return { shown, reason: r.reason };
    shown.push(r.entry);
  }
  return { shown, reason: "max" };
};

test("player node list", () => {
  assert.deepEqual([...PLAYER_NODES], ["CausalForcingGenerate", "CausalForcingGenerateSchedule", "CausalForcingLive"]);
  assert.ok(Object.isFrozen(PLAYER_NODES));
  assert.ok(isPlayerNode("CausalForcingGenerate"));
  assert.ok(isPlayerNode("CausalForcingLive"));
  assert.ok(!isPlayerNode("CausalForcingStart"));
  assert.ok(!isPlayerNode(undefined));
});

test("fps sanitising", () => {
  assert.equal(sanitizeFps(16), 16);
  assert.equal(sanitizeFps([24]), 24);
  assert.equal(sanitizeFps("12"), 12);
  assert.equal(sanitizeFps(undefined), DEFAULT_FPS);
  assert.equal(sanitizeFps(0), DEFAULT_FPS);
  assert.equal(sanitizeFps(-3), DEFAULT_FPS);
  assert.equal(sanitizeFps(NaN), DEFAULT_FPS);
  assert.equal(sanitizeFps(1e6), 240);
  assert.equal(sanitizeFps(null, 8), 8);
});

test("view URL encodes every parameter", () => {
  assert.equal(
    viewPath(frame(3, 7)),
    `/view?filename=chunk00003_007.jpg&subfolder=causal_forcing%2F${RUN}&type=temp`,
  );
  assert.equal(
    viewPath({ filename: "a b&c=d#.jpg", subfolder: "x/y z" }),
    "/view?filename=a%20b%26c%3Dd%23.jpg&subfolder=x%2Fy%20z&type=temp",
  );
  assert.equal(
    viewPath({ filename: "f.jpg", subfolder: "", type: "temp" }, { rand: 0.5 }),
    "/view?filename=f.jpg&subfolder=&type=temp&rand=0.5",
  );
  assert.equal(viewPath(null), null);
  assert.equal(viewPath({ subfolder: "x" }), null);
});

test("frame helpers", () => {
  assert.deepEqual(normalizeFrames([frame(0, 0), null, 3, { filename: "" }, { filename: "x.jpg" }]), [
    frame(0, 0),
    { filename: "x.jpg", subfolder: "", type: "temp" },
  ]);
  assert.deepEqual(normalizeFrames("nope"), []);
  assert.equal(frameKey(frame(1, 2)), `temp/causal_forcing/${RUN}/chunk00001_002.jpg`);
  assert.equal(parseChunkIndex("chunk00012_003.jpg"), 12);
  assert.equal(parseChunkIndex("frame.jpg"), null);
  assert.equal(parseChunkIndex(undefined), null);
  assert.equal(runIdFromFrames([frame(0, 0)]), RUN);
  assert.equal(runIdFromFrames([{ filename: "a.jpg", subfolder: "" }]), null);
  assert.equal(runIdFromFrames(undefined), null);
});

test("frames from the ui output", () => {
  assert.deepEqual(framesFromOutput(null), { frames: [], fps: 16 });
  assert.deepEqual(framesFromOutput({}), { frames: [], fps: 16 });
  assert.deepEqual(framesFromOutput({ images: [] }), { frames: [], fps: 16 });
  const out = framesFromOutput({ causal_forcing_frames: [frame(0, 0), frame(0, 1)], causal_forcing_fps: [24] });
  assert.equal(out.frames.length, 2);
  assert.equal(out.fps, 24);
});

// ---------------------------------------------------------------------------------------------- node matching

function fakeGraphs() {
  const root = { isRootGraph: true, _nodes: [] };
  const sub = { id: "uuid-sub", isRootGraph: false, rootGraph: root, _nodes: [] };
  const inner = { id: "uuid-inner", isRootGraph: false, rootGraph: root, _nodes: [] };
  root.subgraphs = new Map([
    [sub.id, sub],
    [inner.id, inner],
  ]);
  const rootNode5 = { id: 5, graph: root };
  const sgNode12 = { id: 12, graph: root, subgraph: sub };
  const sgNode13 = { id: 13, graph: root, subgraph: sub };
  const subNode5 = { id: 5, graph: sub };
  const sgNode3 = { id: 3, graph: sub, subgraph: inner }; // nested subgraph node inside `sub`
  const innerNode9 = { id: 9, graph: inner };
  root._nodes.push(rootNode5, sgNode12, sgNode13);
  sub._nodes.push(subNode5, sgNode3);
  inner._nodes.push(innerNode9);
  return { root, sub, inner, rootNode5, subNode5, innerNode9 };
}

test("execution paths and locator ids", () => {
  const g = fakeGraphs();
  assert.deepEqual(executionPaths(g.rootNode5), ["5"]);
  assert.deepEqual(executionPaths(g.subNode5).sort(), ["12:5", "13:5"]);
  assert.deepEqual(executionPaths(g.innerNode9).sort(), ["12:3:9", "13:3:9"]);
  assert.deepEqual(executionPaths({ id: 4 }), ["4"]); // no graph (older frontends): its own id
  assert.deepEqual(executionPaths(null), []);
  assert.equal(locatorId(g.rootNode5), "5");
  assert.equal(locatorId(g.subNode5), "uuid-sub:5");
  const cyclic = { isRootGraph: false, _nodes: [] };
  cyclic.rootGraph = { isRootGraph: true, _nodes: [], subgraphs: new Map([["c", cyclic]]) };
  cyclic._nodes.push({ id: 1, graph: cyclic, subgraph: cyclic });
  assert.doesNotThrow(() => executionPaths({ id: 2, graph: cyclic }));
});

test("event node ids pick the right player", () => {
  const g = fakeGraphs();
  const cands = [
    describeNode(g.rootNode5, "root5"),
    describeNode(g.subNode5, "sub5"),
    describeNode(g.innerNode9, "in9"),
  ];
  const pick = (id) => pickTargets(id, cands).map((c) => c.ref);
  assert.deepEqual(pick("5"), ["root5"]);
  assert.deepEqual(pick(5), ["root5"]);
  assert.deepEqual(pick("12:5"), ["sub5"]);
  assert.deepEqual(pick("13:5"), ["sub5"]);
  assert.deepEqual(pick("12:3:9"), ["in9"]);
  assert.deepEqual(pick("uuid-sub:5"), ["sub5"]); // locator ids (restored outputs)
  // unknown path: fall back to the last segment, preferring subgraph nodes for a path
  assert.deepEqual(pick("99:5"), ["sub5"]);
  assert.deepEqual(pick("99:9"), ["in9"]);
  assert.deepEqual(pick("77"), []);
  assert.deepEqual(pick(undefined), []);
  assert.deepEqual(pick(""), []);
  assert.deepEqual(pickTargets("5", null), []);
  // plain candidates without graphs (last-segment fallback only)
  const flat = [{ id: "5", ids: ["5"], inSubgraph: false, ref: "a" }];
  assert.deepEqual(pickTargets("12:5", flat).map((c) => c.ref), ["a"]);
});

// ------------------------------------------------------------------------------------------------ frame queue

test("frames play in order, hold while loading, wait for the next chunk", () => {
  const q = new FrameQueue();
  assert.deepEqual(q.step(), { type: "hold", reason: "empty" });
  assert.equal(formatStatus(q.status()), "no frames yet \u2014 run the node");

  const r = q.pushChunk(chunkEvent(0, 3));
  assert.deepEqual(r, { reset: true, added: 4, dropped: 0 });
  assert.equal(q.status().state, "loading");
  assert.equal(formatStatus(q.status()), "chunk 1/3 \u00b7 16 fps \u00b7 loading");
  assert.deepEqual(q.step(), { type: "hold", reason: "loading" }); // nothing preloaded yet
  assert.equal(q.preloadCandidates(2).length, 2);

  loadAll(q);
  const a = drain(q);
  assert.deepEqual(a.shown.map((e) => e.frame.filename), [0, 1, 2, 3].map((j) => frame(0, j).filename));
  assert.equal(a.reason, "waiting"); // back-pressure: hold the last frame
  assert.equal(formatStatus(q.status()), "chunk 1/3 \u00b7 frame 4 \u00b7 16 fps \u00b7 waiting for chunk 2/3");

  q.pushChunk(chunkEvent(1, 3));
  q.pushChunk(chunkEvent(2, 3));
  assert.ok(q.finished, "the last chunk of the run finishes it");
  loadAll(q);
  const b = drain(q);
  assert.equal(b.shown.length, 8);
  assert.deepEqual(b.shown.map((e) => e.index), [4, 5, 6, 7, 8, 9, 10, 11]);
  assert.equal(b.reason, "done");
  assert.equal(formatStatus(q.status()), "chunk 3/3 \u00b7 frame 12 \u00b7 16 fps");
  assert.equal(formatStatus(q.status(), { paused: true }), "chunk 3/3 \u00b7 frame 12 \u00b7 16 fps \u00b7 paused");
});

test("a new run id resets the queue; duplicates are ignored", () => {
  const q = new FrameQueue();
  q.loop = true;
  q.pushChunk(chunkEvent(0, 2));
  q.pushChunk(chunkEvent(0, 2)); // the same event twice
  assert.equal(q.history.length, 4);
  loadAll(q);
  q.step();
  const r = q.pushChunk(chunkEvent(0, 5, { run: "other", first: 10 }));
  assert.equal(r.reset, true);
  assert.equal(q.runId, "other");
  assert.equal(q.history.length, 4);
  assert.equal(q.pos, 0);
  assert.equal(q.current, null);
  assert.equal(q.loop, true, "the loop setting survives a reset");
  assert.equal(formatStatus(q.status()), "chunk 1/5 \u00b7 16 fps \u00b7 loading");
});

test("the queue is capped, dropping the oldest waiting frames", () => {
  const q = new FrameQueue({ maxQueue: 10 });
  q.pushChunk(chunkEvent(0, 5));
  q.pushChunk(chunkEvent(1, 5));
  const r = q.pushChunk(chunkEvent(2, 5)); // 12 waiting > 10
  assert.equal(r.dropped, 2);
  assert.equal(q.pending, 10);
  assert.equal(q.dropped, 2);
  loadAll(q);
  const { shown } = drain(q);
  assert.equal(shown[0].index, 2);
  assert.equal(shown.length, 10);
  assert.match(formatStatus(q.status()), /2 skipped/);
  // the whole run is still there for the loop replay
  q.loop = true;
  q.pushChunk(chunkEvent(3, 5));
  q.pushChunk(chunkEvent(4, 5));
  loadAll(q);
  drain(q, 8);
  assert.equal(q.history.length, 20);
});

test("loop replays the run after it finishes; failed frames are skipped", () => {
  const q = new FrameQueue();
  q.pushChunk(chunkEvent(0, 2, { n: 3 }));
  q.pushChunk(chunkEvent(1, 2, { n: 3 }));
  loadAll(q);
  q.history[1].status = "error";
  let { shown, reason } = drain(q);
  assert.deepEqual(shown.map((e) => e.index), [0, 2, 3, 4, 5]);
  assert.equal(reason, "done");
  q.loop = true;
  const r = q.step(); // rewinds: frames need preloading again
  assert.deepEqual(r, { type: "hold", reason: "loading" });
  assert.equal(q.pos, 0);
  assert.equal(q.history[1].status, "error");
  loadAll(q);
  ({ shown } = drain(q, 5));
  assert.deepEqual(shown.map((e) => e.index), [0, 2, 3, 4, 5]);
  // every frame failing: no endless rewinding
  for (const e of q.history) e.status = "error";
  q.pos = q.history.length;
  assert.deepEqual(q.step(), { type: "hold", reason: "done" });
  assert.equal(q.status().state, "unavailable");
  assert.match(formatStatus(q.status()), /frames unavailable/);
});

test("an unfinished run finishes on endRun (interrupted prompt)", () => {
  const q = new FrameQueue();
  q.pushChunk(chunkEvent(0, 4));
  loadAll(q);
  assert.equal(drain(q).reason, "waiting");
  q.endRun();
  assert.equal(q.step().reason, "done");
  // a late chunk of the same run re-opens it
  q.pushChunk(chunkEvent(1, 4));
  assert.equal(q.finished, false);
});

test("the ui output of another run replaces the queue and plays from its start", () => {
  const q = new FrameQueue();
  q.pushChunk(chunkEvent(0, 2, { run: "old" }));
  loadAll(q);
  drain(q);
  const frames = [frame(4, 0, "new"), frame(4, 1, "new"), frame(5, 0, "new"), frame(5, 1, "new"), frame(6, 0, "new")];
  const r = q.loadRun(frames, { fps: 24 });
  assert.deepEqual(r, { reset: true, added: 5 });
  assert.equal(q.runId, "new");
  assert.equal(q.fps, 24);
  assert.equal(q.finished, true);
  assert.equal(q.chunksInRun, 3);
  loadAll(q);
  const { shown, reason } = drain(q);
  assert.deepEqual(shown.map((e) => [e.chunkInRun, e.index]), [[0, 0], [0, 1], [1, 2], [1, 3], [2, 4]]);
  assert.equal(reason, "done");
  assert.equal(formatStatus(q.status()), "chunk 3/3 \u00b7 frame 5 \u00b7 24 fps");
  assert.deepEqual(q.loadRun([], {}), { reset: false, added: 0 });
  assert.deepEqual(q.loadRun(null), { reset: false, added: 0 });
});

test("the ui output of the streamed run fills in missed chunks and keeps the play head", () => {
  const q = new FrameQueue();
  q.pushChunk(chunkEvent(0, 3, { n: 2 }));
  // chunk 1's event was missed
  q.pushChunk(chunkEvent(2, 3, { n: 2 }));
  loadAll(q);
  q.step(); // shows chunk 0 frame 0
  const all = [frame(0, 0), frame(0, 1), frame(1, 0), frame(1, 1), frame(2, 0), frame(2, 1)];
  const r = q.loadRun(all, { fps: 16 });
  assert.deepEqual(r, { reset: false, added: 2 });
  assert.equal(q.current.frame.filename, frame(0, 0).filename);
  assert.equal(q.history[0].status, "ready", "preload state kept");
  assert.equal(q.history[2].status, "new");
  loadAll(q);
  const { shown, reason } = drain(q);
  assert.deepEqual(shown.map((e) => e.frame.filename), all.slice(1).map((f) => f.filename));
  assert.deepEqual(shown.map((e) => e.index), [1, 2, 3, 4, 5]);
  assert.equal(reason, "done");
  // the same output again (a cached re-run) changes nothing
  assert.deepEqual(q.loadRun(all), { reset: false, added: 0 });
  assert.equal(q.step().reason, "done");
});

test("malformed events never throw", () => {
  const q = new FrameQueue();
  const bads = [undefined, null, 3, "x", {}, { frames: "no" }, { run: "r", frames: [null, {}] }, { chunks_in_run: -1 }];
  for (const bad of bads) {
    assert.doesNotThrow(() => q.pushChunk(bad));
    assert.doesNotThrow(() => q.step());
    assert.doesNotThrow(() => formatStatus(q.status()));
  }
  // no run id at all: frames still play, under a made-up run
  const q2 = new FrameQueue();
  q2.pushChunk({ chunk_in_run: 0, frames: [{ filename: "a.jpg" }, { filename: "b.jpg" }] });
  q2.pushChunk({ frames: [{ filename: "c.jpg" }] });
  assert.equal(q2.history.length, 3);
  assert.equal(q2.status().chunks, null);
  loadAll(q2);
  drain(q2);
  assert.equal(formatStatus(q2.status()), "chunk 2 \u00b7 frame 3 \u00b7 16 fps \u00b7 waiting for chunk 3");
  // a live run that is paused: the player says so instead of waiting for a chunk that will not come yet
  assert.equal(formatStatus(q2.status(), { runPaused: true }), "chunk 2 \u00b7 frame 3 \u00b7 16 fps \u00b7 live run paused");
});

test("history is bounded", () => {
  const q = new FrameQueue({ maxQueue: 8, maxHistory: 20 });
  for (let c = 0; c < 10; c++) {
    q.pushChunk(chunkEvent(c, 10));
    loadAll(q);
    drain(q);
  }
  assert.equal(q.history.length, 20);
  assert.equal(q.history[0].index, 20);
  assert.equal(q.status().frame, 40);
});
