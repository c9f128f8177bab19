// The player extension against stand-ins for ComfyUI's app/api modules and a minimal fake DOM:
// `node --test js/tests/`. Checks the wiring (widget options, events, executed outputs, removal), not the looks.
import assert from "node:assert/strict";
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
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
    for (const child of c) if (child && typeof child === "object") child.parentNode = this;
    this.children.push(...c);
  }
  contains(other) {
    for (let n = other; n; n = n.parentNode) if (n === this) return true;
    return false;
  }
  /** Dispatch an event of `type` here, bubbling up through parentNode until stopPropagation. */
  fire(type, init = {}) {
    let stopped = false;
    const event = {
      type,
      target: this,
      defaultPrevented: false,
      ...init,
      stopPropagation() {
        stopped = true;
      },
      preventDefault() {
        this.defaultPrevented = true;
      },
    };
    for (let n = this; n && !stopped; n = n.parentNode) for (const fn of n.listeners[type] ?? []) fn(event);
    return { event, stopped };
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
  calls = [];
  reply = () => ({ status: 200, body: { ok: true, state: "running", chunk: 0 } });
  async fetchApi(route, init) {
    this.calls.push({ route, init, body: JSON.parse(init.body) });
    const r = await this.reply(route, init);
    return { status: r.status, json: async () => { if (r.body === undefined) throw new SyntaxError("not JSON"); return r.body; } };
  }
  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}
export const api = new Api();
`,
);
// every module of the folder, as ComfyUI serves it
for (const f of (await readdir(JS_DIR)).filter((name) => name.endsWith(".js"))) {
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

/** A LiteGraph-like node class per node type, registered through the extension's beforeRegisterNodeDef as the
 *  frontend does (its prototype's onRemoved / onAdded are LiteGraph's, here counting calls). */
const nodeTypes = new Map();
function nodeType(comfyClass) {
  if (!nodeTypes.has(comfyClass)) {
    class FakeNode {
      onRemoved() {
        this.baseRemoved = (this.baseRemoved ?? 0) + 1;
      }
    }
    ext.beforeRegisterNodeDef?.(FakeNode, { name: comfyClass }, app);
    nodeTypes.set(comfyClass, FakeNode);
  }
  return nodeTypes.get(comfyClass);
}

function fakeNode(id, comfyClass = "CausalForcingGenerate", graph = { isRootGraph: true }) {
  const node = new (nodeType(comfyClass))();
  return Object.assign(node, {
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
  });
}
/** ComfyUI's `executed` event for node `id` with its `ui` output. */
const executed = (id, output) => api.emit("executed", { node: String(id), display_node: String(id), output });
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
  assert.equal(typeof ext.beforeRegisterNodeDef, "function");
});

test("only the player's node types are chained, and LiteGraph's own onRemoved still runs", () => {
  assert.equal(nodeType("CausalForcingStart").prototype.onAdded, undefined, "other node types untouched");
  const node = fakeNode(7);
  ext.nodeCreated(node);
  assert.equal(api.counts["causal_forcing.chunk"], 1);
  node.onRemoved();
  assert.equal(node.baseRemoved, 1, "the prototype's previous onRemoved ran");
  assert.equal(api.counts["causal_forcing.chunk"], 0);
  assert.equal(api.counts.executed, 0, "the executed listener goes with the last player");
});

test("the browser code uses only the frontend's public names", async () => {
  const { readFile } = await import("node:fs/promises");
  for (const f of (await readdir(JS_DIR)).filter((name) => name.endsWith(".js"))) {
    const src = await readFile(path.join(JS_DIR, f), "utf8");
    assert.doesNotMatch(src, /\$\$canvas|--p-[a-z]/, `${f}: a private widget name or PrimeVue variable`);
    assert.doesNotMatch(src, /node\.on[A-Z][A-Za-z]+ = /, `${f}: a per-node callback override`);
  }
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
  executed(7, { causal_forcing_frames: p.queue.history.map((e) => e.frame), causal_forcing_fps: [200] });
  assert.equal(p.queue.status().state, "done");

  // malformed input never throws
  assert.doesNotThrow(() => executed(7, null));
  assert.doesNotThrow(() => api.emit("executed", null));
  assert.doesNotThrow(() => executed(7, { causal_forcing_frames: "x" }));
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
  executed(8, { causal_forcing_frames: frames, causal_forcing_fps: [100] }); // another node's output: ignored
  assert.equal(p.queue.runId, "r2");
  executed(7, { causal_forcing_frames: frames, causal_forcing_fps: [100] });
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

// ------------------------------------------------------------------------------------------- live controls
const liveEvent = (node, over = {}) => ({
  node, run: "tok-1", state: "running", chunk: 0, max_chunks: 640, prompt: "a fox in snow",
  events: [{ chunk: 0, text: "a fox in snow" }], ...over,
});

test("only CausalForcingLive nodes get the live panel, under the player, never serialised", () => {
  const gen = fakeNode(3);
  ext.nodeCreated(gen);
  assert.equal(gen.__cfPlayer.live, null);
  assert.ok(!gen.widgets.some((w) => w.name === "cf_live"));

  const node = fakeNode(9, "CausalForcingLive");
  ext.nodeCreated(node);
  const names = node.widgets.map((w) => w.name);
  assert.deepEqual(names.slice(-2), ["cf_player", "cf_live"], "the panel sits under the player");
  const w = node.widgets.find((x) => x.name === "cf_live");
  assert.equal(w.options.serialize, false);
  assert.equal(w.serialize, false);
  assert.equal(w.options.getValue(), "");
  assert.equal(w.options.getMinHeight(), w.options.getMaxHeight());
  const panel = node.__cfPlayer.live;
  assert.equal(panel.textarea.tagName, "TEXTAREA");
  assert.equal(panel.recacheBox.checked, true, "re-cache checked by default");
  assert.equal(api.counts["causal_forcing.live"], 1);
  gen.onRemoved();
  node.onRemoved();
  assert.equal(api.counts["causal_forcing.live"], 0);
});

test("live panel: follows live events, steers the run, shows errors, mirrors the limits", async () => {
  const node = fakeNode(9, "CausalForcingLive");
  ext.nodeCreated(node);
  const panel = node.__cfPlayer.live;
  const status = () => panel.statusEl.textContent;
  const controls = () => [panel.sendBtn, panel.pauseBtn, panel.stopBtn, panel.recacheBox];
  assert.match(status(), /no live run/);
  assert.ok(controls().every((c) => c.disabled), "disabled without a run");
  api.calls.length = 0;

  // keys typed in the panel never reach ComfyUI's window/document shortcuts
  assert.equal(panel.textarea.fire("keydown", { key: "Delete" }).stopped, true);
  assert.equal(panel.textarea.fire("keydown", { key: "Enter", ctrlKey: true }).stopped, true);
  await sleep(1);
  assert.equal(api.calls.length, 0, "nothing sent without a run");
  assert.match(panel.messageEl.textContent, /no live run/);

  // a run starts (matched like chunk events: a subgraph path falls back to the last segment)
  api.emit("causal_forcing.live", liveEvent("4:9"));
  assert.equal(status(), "running · 0 chunks made (at most 640) · \u201ca fox in snow\u201d");
  assert.ok(controls().every((c) => !c.disabled), "enabled while running");
  assert.equal(panel.textarea.value, "a fox in snow", "the empty box takes the run's prompt");
  api.emit("causal_forcing.live", liveEvent("9", { chunk: 37 }));
  assert.match(status(), /^running · 37 chunks made \(at most 640\) · /);
  api.emit("causal_forcing.live", liveEvent("10", { chunk: 99 })); // another node
  assert.match(status(), /37 chunks made \(at most 640\)/);

  // send with Ctrl+Enter: trimmed text, the token, re-cache
  panel.textarea.value = "  owls at night \n";
  api.reply = () => ({ status: 200, body: { ok: true, state: "running", chunk: 37, applies_at_chunk: 38 } });
  const { event } = panel.textarea.fire("keydown", { key: "Enter", ctrlKey: true });
  assert.equal(event.defaultPrevented, true);
  await until(() => api.calls.length === 1 && /prompt accepted/.test(panel.messageEl.textContent));
  assert.equal(api.calls[0].route, "/causal_forcing/live/control");
  assert.equal(api.calls[0].init.method, "POST");
  assert.equal(api.calls[0].init.headers["Content-Type"], "application/json");
  assert.deepEqual(api.calls[0].body, { run: "tok-1", action: "prompt", text: "owls at night", recache: true });
  assert.equal(panel.messageEl.textContent, "prompt accepted: from chunk 39 on (line \u201c38:\u201d of the schedule output)");

  // the Send button, re-cache unchecked, Cmd+Enter too
  panel.recacheBox.checked = false;
  panel.sendBtn.click();
  await until(() => api.calls.length === 2);
  assert.equal(api.calls[1].body.recache, false);
  panel.textarea.fire("keydown", { key: "Enter", metaKey: true });
  await until(() => api.calls.length === 3);
  panel.textarea.fire("keydown", { key: "Enter" }); // plain Enter is a new line
  await sleep(5);
  assert.equal(api.calls.length, 3);

  // client-side limits: too long, empty, too many requests
  const freshRateWindow = () => (panel.limiter.times.length = 0); // instead of waiting a second
  freshRateWindow();
  panel.textarea.value = "z".repeat(2001);
  panel.sendBtn.click();
  await sleep(1);
  assert.equal(api.calls.length, 3);
  assert.match(panel.messageEl.textContent, /2001 characters/);
  assert.equal(panel.messageEl.style.color, "var(--error-text, #ff6b6b)");
  panel.textarea.value = " ";
  panel.sendBtn.click();
  await sleep(1);
  assert.equal(api.calls.length, 3);
  assert.match(panel.messageEl.textContent, /empty/);
  panel.textarea.value = "owls";
  for (let i = 0; i < 7; i++) panel.sendBtn.click();
  assert.match(panel.messageEl.textContent, /^too many requests; try again in 1 s$/);
  await until(() => api.calls.length === 8);
  await sleep(5);
  assert.equal(api.calls.length, 8, "5 requests a second at most");

  // server errors are shown
  freshRateWindow();
  api.reply = () => ({ status: 400, body: { error: "prompt too long" } });
  panel.sendBtn.click();
  await until(() => panel.messageEl.textContent === "prompt too long");
  api.reply = () => ({ status: 502 }); // not JSON
  panel.sendBtn.click();
  await until(() => panel.messageEl.textContent === "the request failed (HTTP 502)");
  api.reply = () => Promise.reject(new TypeError("Failed to fetch"));
  panel.sendBtn.click();
  await until(() => /Failed to fetch/.test(panel.messageEl.textContent));

  // pause → pending until the event, then Resume
  api.reply = () => ({ status: 200, body: { ok: true, state: "running", chunk: 37 } });
  assert.equal(panel.pauseBtn.textContent, "Pause");
  panel.pauseBtn.click();
  await until(() => panel.pauseBtn.textContent === "Resume");
  assert.deepEqual(api.calls.at(-1).body, { run: "tok-1", action: "pause" });
  assert.match(status(), /^running → pausing · 37 chunks made/);
  assert.equal(panel.messageEl.textContent, "", "a successful request clears the error");
  api.emit("causal_forcing.live", liveEvent("9", { chunk: 38, state: "paused" }));
  assert.match(status(), /^paused · 38 chunks made \(at most 640\)/);
  assert.ok(controls().every((c) => !c.disabled), "enabled while paused");
  api.reply = () => ({ status: 200, body: { ok: true, state: "running", chunk: 38 } });
  panel.pauseBtn.click();
  await until(() => panel.pauseBtn.textContent === "Pause");
  assert.equal(api.calls.at(-1).body.action, "resume");

  // stop → stopping (controls off) → finished
  freshRateWindow();
  api.reply = () => ({ status: 200, body: { ok: true, state: "stopping", chunk: 38 } });
  panel.stopBtn.click();
  await until(() => /^stopping/.test(status()));
  assert.deepEqual(api.calls.at(-1).body, { run: "tok-1", action: "stop" });
  assert.ok(controls().every((c) => c.disabled), "disabled while stopping");
  api.emit("causal_forcing.live", liveEvent("9", { chunk: 39, state: "finished", ended_by: "stop" }));
  assert.match(status(), /^finished \(stopped\) · 39 chunks made \(at most 640\)/);

  // a new run: fresh state; the box follows the run's prompt while it holds what was sent, else keeps the draft
  api.emit("causal_forcing.live", liveEvent("9", { run: "tok-2", prompt: "rain", max_chunks: 8 }));
  assert.match(status(), /^running · 0 chunks made \(at most 8\) · \u201crain\u201d$/);
  assert.equal(panel.textarea.value, "rain");
  assert.equal(panel.messageEl.textContent, "");
  panel.textarea.value = "an unsent draft";
  api.emit("causal_forcing.live", liveEvent("9", { run: "tok-2", prompt: "snow", max_chunks: 8 }));
  assert.equal(panel.textarea.value, "an unsent draft");
  // the prompt ends without a finished event: controls off
  api.emit("execution_interrupted", {});
  assert.match(status(), /^finished · 0 chunks made \(at most 8\)/);
  assert.ok(controls().every((c) => c.disabled));
  // malformed live events never throw
  assert.doesNotThrow(() => api.emit("causal_forcing.live", null));
  assert.doesNotThrow(() => api.emit("causal_forcing.live", { node: "9", run: "tok-3", state: "??" }));
  assert.match(status(), /^finished/);
  await sleep(20);
  node.onRemoved();
});

test("live node frames play on across chunks of one run", async () => {
  const node = fakeNode(11, "CausalForcingLive");
  ext.nodeCreated(node);
  const p = node.__cfPlayer;
  const live = (ci) => ({ ...event("11", ci, undefined, { run: "L" }), chunks_in_run: undefined });
  api.emit("causal_forcing.chunk", live(0));
  await until(() => /waiting for chunk 2/.test(text(p)));
  api.emit("causal_forcing.chunk", live(1));
  api.emit("causal_forcing.chunk", live(2));
  await until(() => /waiting for chunk 4/.test(text(p)));
  assert.equal(p.queue.runId, "L");
  assert.equal(p.queue.history.length, 9);
  assert.match(text(p), /^chunk 3 · frame 9 · 200 fps · waiting for chunk 4$/);
  // the live run pauses: the player says so instead of waiting (the panel tells it)
  api.emit("causal_forcing.live", { node: "11", run: "tok-L", state: "paused", chunk: 3, max_chunks: 80, prompt: "p" });
  assert.match(text(p), /^chunk 3 · frame 9 · 200 fps · live run paused$/);
  api.emit("causal_forcing.live", { node: "11", run: "tok-L", state: "running", chunk: 3, max_chunks: 80, prompt: "p" });
  assert.match(text(p), /waiting for chunk 4$/);
  api.emit("execution_success", {});
  await until(() => p.queue.status().state === "done");
  node.onRemoved();
});
