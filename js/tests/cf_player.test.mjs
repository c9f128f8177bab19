// The player extension against stand-ins for ComfyUI's app/api modules and a minimal fake DOM:
// `node --test js/tests/`. Checks the wiring (widget options, events, onExecuted, removal), not the looks.
import assert from "node:assert/strict";
import { copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

const JS_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));

// ------------------------------------------------------------------------------------------------ fake DOM
class FakeStyle {
  setProperty(k, v) {
    this[k] = v;
  }
}
class FakeElement {
  constructor(tag) {
    this.tagName = tag.toUpperCase();
    this.style = new FakeStyle();
    this.children = [];
    this.attrs = {};
    this.listeners = {};
    this.textContent = "";
  }
  append(...c) {
    this.children.push(...c);
  }
  addEventListener(type, fn) {
    (this.listeners[type] ??= []).push(fn);
  }
  setAttribute(k, v) {
    this.attrs[k] = String(v);
  }
  getAttribute(k) {
    return this.attrs[k] ?? null;
  }
  set src(v) {
    this.attrs.src = v;
  }
  get src() {
    return this.attrs.src;
  }
  click() {
    for (const fn of this.listeners.click ?? []) fn({ stopPropagation() {} });
  }
}
const loaded = [];
class FakeImage {
  constructor() {
    this.naturalWidth = 0;
    this.naturalHeight = 0;
  }
  set src(v) {
    this._src = v;
    if (!v) return;
    setTimeout(() => {
      if (this._src !== v) return;
      loaded.push(v);
      if (v.includes("missing")) this.onerror?.();
      else {
        this.naturalWidth = 832;
        this.naturalHeight = 480;
        this.onload?.();
      }
    }, 1);
  }
  get src() {
    return this._src;
  }
  decode() {
    return Promise.resolve();
  }
}
globalThis.document = { createElement: (tag) => new FakeElement(tag) };
globalThis.Image = FakeImage;

// ------------------------------------------------------------------------------- stand-in ComfyUI modules
const root = await mkdtemp(path.join(tmpdir(), "cf-player-"));
after(() => rm(root, { recursive: true, force: true }));
await mkdir(path.join(root, "scripts"), { recursive: true });
await mkdir(path.join(root, "extensions", "cf"), { recursive: true });
await writeFile(path.join(root, "package.json"), '{"type": "module"}\n');
await writeFile(
  path.join(root, "scripts", "app.js"),
  "export const app = { extensions: [], registerExtension(ext) { this.extensions.push(ext); } };\n",
);
await writeFile(
  path.join(root, "scripts", "api.js"),
  `class Api extends EventTarget {
  counts = {};
  addEventListener(type, fn) {
    super.addEventListener(type, fn);
    this.counts[type] = (this.counts[type] ?? 0) + 1;
  }
  removeEventListener(type, fn) {
    super.removeEventListener(type, fn);
    this.counts[type] = (this.counts[type] ?? 0) - 1;
  }
  apiURL(route) { return "/api" + route; }
  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}
export const api = new Api();
`,
);
for (const f of ["causal_forcing_player.js", "cf_player_queue.js"]) {
  await copyFile(path.join(JS_DIR, f), path.join(root, "extensions", "cf", f));
}
const { app } = await import(pathToFileURL(path.join(root, "scripts", "app.js")).href);
const { api } = await import(pathToFileURL(path.join(root, "scripts", "api.js")).href);
const player = await import(pathToFileURL(path.join(root, "extensions", "cf", "causal_forcing_player.js")).href);

const ext = app.extensions.find((e) => e.name === "causal_forcing.player");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, ms = 2000) {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error("timed out");
    await sleep(5);
  }
}

function fakeNode(id, comfyClass = "CausalForcingGenerate", graph = { isRootGraph: true }) {
  return {
    id,
    comfyClass,
    graph,
    size: [300, 150],
    widgets: [{ name: "length", value: 3 }],
    addDOMWidget(name, type, element, options) {
      const w = { name, type, element, options, margin: 10, computedHeight: 200 };
      this.widgets.push(w);
      return w;
    },
    computeSize() {
      return [280, 320];
    },
    setSize(s) {
      this.size = [s[0], s[1]];
    },
    setDirtyCanvas() {},
  };
}
const RUN = "r1";
const frame = (c, j, run = RUN, name = null) => ({
  filename: name ?? `chunk${String(c).padStart(5, "0")}_${String(j).padStart(3, "0")}.jpg`,
  subfolder: `causal_forcing/${run}`,
  type: "temp",
});
const event = (node, ci, n, { run = RUN, fps = 200, frames = 3 } = {}) => ({
  node, run, chunk: ci, chunk_in_run: ci, chunks_in_run: n, fps, width: 832, height: 480,
  frames: Array.from({ length: frames }, (_, j) => frame(ci, j, run)),
});
const text = (p) => p.statusEl.textContent;

test("registers the extension and exports the node list", () => {
  assert.ok(ext, "extension registered");
  assert.ok(Array.isArray(player.PLAYER_NODES) && player.PLAYER_NODES.includes("CausalForcingLive"));
  assert.equal(typeof ext.nodeCreated, "function");
});

test("only player nodes get the widget, and it is never serialised", () => {
  const other = fakeNode(1, "CausalForcingStart");
  ext.nodeCreated(other);
  assert.equal(other.widgets.length, 1);

  const node = fakeNode(7);
  ext.nodeCreated(node);
  ext.nodeCreated(node); // once only
  const w = node.widgets.filter((x) => x.name === "cf_player");
  assert.equal(w.length, 1);
  assert.equal(w[0].type, "cf_player");
  assert.equal(w[0].options.serialize, false);
  assert.equal(w[0].serialize, false);
  assert.equal(w[0].options.getValue(), "");
  assert.equal(w[0].options.getMinHeight(), 200);
  assert.ok(node.size[1] >= 320 && node.size[0] >= 300, "node sized for the player");
  assert.equal(api.counts["causal_forcing.chunk"], 1);
  node.onRemoved();
  assert.equal(api.counts["causal_forcing.chunk"], 0, "listener removed with the last player");
});

test("plays streamed chunks, waits for the next, resets on a new run, replays the ui output", async () => {
  const node = fakeNode(7);
  ext.nodeCreated(node);
  const p = node.__cfPlayer;
  assert.match(text(p), /no frames yet/);

  api.emit("causal_forcing.chunk", event("7", 0, 2));
  assert.match(text(p), /^chunk 1\/2/);
  assert.ok(node.size[1] > 320, "node grown towards the video's aspect ratio");
  await until(() => /waiting for chunk 2\/2/.test(text(p)));
  assert.equal(p.img.src, `/api/view?filename=chunk00000_002.jpg&subfolder=causal_forcing%2F${RUN}&type=temp`);
  assert.match(text(p), /^chunk 1\/2 · frame 3 · 200 fps · waiting for chunk 2\/2$/);

  // an event for another node is ignored; a subgraph path falls back to the last segment
  api.emit("causal_forcing.chunk", event("8", 1, 2));
  assert.equal(p.queue.history.length, 3);
  api.emit("causal_forcing.chunk", event("4:7", 1, 2));
  await until(() => p.queue.status().state === "done");
  assert.match(text(p), /^chunk 2\/2 · frame 6 · 200 fps$/);
  await until(() => p.timer === null); // stopped one period after the last frame

  // the ui output of the same run changes nothing
  node.onExecuted({ causal_forcing_frames: p.queue.history.map((e) => e.frame), causal_forcing_fps: [200] });
  assert.equal(p.queue.status().state, "done");

  // malformed input never throws
  assert.doesNotThrow(() => node.onExecuted(null));
  assert.doesNotThrow(() => node.onExecuted({ causal_forcing_frames: "x" }));
  assert.doesNotThrow(() => api.emit("causal_forcing.chunk", null));
  assert.doesNotThrow(() => api.emit("causal_forcing.chunk", { node: "7", frames: [null] }));

  // a new run resets
  api.emit("causal_forcing.chunk", event("7", 0, 3, { run: "r2" }));
  assert.equal(p.queue.runId, "r2");
  assert.match(text(p), /^chunk 1\/3/);
  await until(() => /waiting for chunk 2\/3/.test(text(p)));
  api.emit("execution_interrupted", {});
  await until(() => p.queue.status().state === "done");

  // the ui output of another run (cached result after a reload) plays from its start, skipping missing files
  const frames = [frame(0, 0, "r0"), frame(0, 1, "r0", "chunk00000_001_missing.jpg"), frame(1, 0, "r0")];
  node.onExecuted({ causal_forcing_frames: frames, causal_forcing_fps: [100] });
  assert.equal(p.queue.runId, "r0");
  await until(() => p.queue.status().state === "done");
  assert.match(text(p), /^chunk 2\/2 · frame 3 · 100 fps$/);
  assert.ok(p.img.src.endsWith("chunk00001_000.jpg&subfolder=causal_forcing%2Fr0&type=temp"));

  // loop replays it
  p.loopBtn.click();
  assert.equal(p.loopBtn.getAttribute("aria-pressed"), "true");
  const before = loaded.length;
  await until(() => loaded.length >= before + 4);
  assert.notEqual(p.timer, null, "looping keeps the timer");
  // pause stops the timer
  p.playBtn.click();
  assert.equal(p.playing, false);
  assert.equal(p.timer, null);
  assert.match(text(p), /paused$/);
  p.playBtn.click();
  assert.equal(p.playing, true);

  // removal: timer stopped, listeners gone, later events ignored
  node.onRemoved();
  assert.equal(p.timer, null);
  assert.equal(api.counts["causal_forcing.chunk"], 0);
  assert.equal(api.counts.execution_success, 0);
  assert.doesNotThrow(() => api.emit("causal_forcing.chunk", event("7", 0, 1, { run: "r3" })));
  assert.equal(p.queue.runId, "r0");
  // re-added (e.g. undo of a delete): listening again
  node.onAdded();
  assert.equal(api.counts["causal_forcing.chunk"], 1);
  p.loopBtn.click();
  node.onRemoved();
});

test("exact subgraph paths win over last-segment matches", async () => {
  const rootGraph = { isRootGraph: true, _nodes: [] };
  const sub = { id: "sg-uuid", isRootGraph: false, rootGraph, _nodes: [] };
  rootGraph.subgraphs = new Map([[sub.id, sub]]);
  rootGraph._nodes.push({ id: 12, graph: rootGraph, subgraph: sub });
  const top = fakeNode(5, "CausalForcingGenerate", rootGraph);
  const inner = fakeNode(5, "CausalForcingGenerateSchedule", sub);
  rootGraph._nodes.push(top);
  sub._nodes.push(inner);
  ext.nodeCreated(top);
  ext.nodeCreated(inner);
  api.emit("causal_forcing.chunk", event("12:5", 0, 1, { run: "s" }));
  assert.equal(inner.__cfPlayer.queue.runId, "s");
  assert.equal(top.__cfPlayer.queue.runId, null);
  api.emit("causal_forcing.chunk", event("5", 0, 1, { run: "t" }));
  assert.equal(top.__cfPlayer.queue.runId, "t");
  assert.equal(inner.__cfPlayer.queue.runId, "s");
  // restored outputs are keyed by locator id
  ext.onNodeOutputsUpdated({ "sg-uuid:5": { causal_forcing_frames: [frame(0, 0, "u")] }, 5: { images: [] } });
  assert.equal(inner.__cfPlayer.queue.runId, "u");
  assert.equal(top.__cfPlayer.queue.runId, "t");
  assert.doesNotThrow(() => ext.onNodeOutputsUpdated(null));
  await sleep(20);
  top.onRemoved();
  inner.onRemoved();
  assert.equal(api.counts["causal_forcing.chunk"], 0);
});
