// Pure logic of the Causal Forcing live player: no DOM, no ComfyUI imports, so it runs (and is tested) in Node.
//
// ComfyUI imports every *.js file of this folder as an extension module at page load; this one only exports
// constants, functions and a class, so loading it on its own does nothing.

/** comfyClass names of the nodes that get the live player. */
export const PLAYER_NODES = Object.freeze([
  "CausalForcingGenerate",
  "CausalForcingGenerateSchedule",
  "CausalForcingLive",
]);

/** Websocket event announcing the frames of one generated chunk (see nodes/live_preview.py). */
export const CHUNK_EVENT = "causal_forcing.chunk";
/** Keys of the node's `ui` output (ComfyUI passes it to node.onExecuted). */
export const UI_FRAMES_KEY = "causal_forcing_frames";
export const UI_FPS_KEY = "causal_forcing_fps";

export const DEFAULT_FPS = 16;
/** The most frames waiting to be played; beyond it the oldest waiting frames are skipped. */
export const MAX_QUEUE = 600;
/** The most frames of a run kept for the loop replay (frame descriptors only, not images). */
export const MAX_HISTORY = 20000;
/** How many frames ahead of the play head are preloaded. */
export const PRELOAD_AHEAD = 24;

const SEP = " \u00b7 "; // " · "

/** True when nodes of this comfyClass get a player. */
export function isPlayerNode(comfyClass, list = PLAYER_NODES) {
  return typeof comfyClass === "string" && list.includes(comfyClass);
}

/** A frame rate to play at: a finite number in [1, 240], else the default. */
export function sanitizeFps(value, fallback = DEFAULT_FPS) {
  const n = Number(Array.isArray(value) ? value[0] : value);
  if (!Number.isFinite(n) || n <= 0) return fallback;
  return Math.min(240, Math.max(1, n));
}

/** A non-negative integer, or null. */
function toIndex(value) {
  const n = Number(value);
  return Number.isInteger(n) && n >= 0 ? n : null;
}

/** A positive integer, or null. */
function toCount(value) {
  const n = Number(value);
  return Number.isInteger(n) && n > 0 ? n : null;
}

/** A clean `{filename, subfolder, type}`, or null when `frame` names no file. */
export function normalizeFrame(frame) {
  if (!frame || typeof frame !== "object") return null;
  const filename = frame.filename;
  if (typeof filename !== "string" || filename === "") return null;
  const subfolder = typeof frame.subfolder === "string" ? frame.subfolder : "";
  const type = typeof frame.type === "string" && frame.type ? frame.type : "temp";
  return { filename, subfolder, type };
}

/** The valid frames of a list (anything that is not a list gives []). */
export function normalizeFrames(list) {
  if (!Array.isArray(list)) return [];
  const out = [];
  for (const f of list) {
    const n = normalizeFrame(f);
    if (n) out.push(n);
  }
  return out;
}

/** A stable identity for a frame file. */
export function frameKey(frame) {
  return `${frame?.type ?? "temp"}/${frame?.subfolder ?? ""}/${frame?.filename ?? ""}`;
}

/** The `/view` route of a frame (pass it through `api.apiURL`); every parameter URL-encoded. */
export function viewPath(frame, { rand } = {}) {
  const f = normalizeFrame(frame);
  if (!f) return null;
  let path =
    `/view?filename=${encodeURIComponent(f.filename)}` +
    `&subfolder=${encodeURIComponent(f.subfolder)}` +
    `&type=${encodeURIComponent(f.type)}`;
  if (rand !== undefined && rand !== null && rand !== "") path += `&rand=${encodeURIComponent(String(rand))}`;
  return path;
}

/** The stream chunk index in a frame file name such as `chunk00003_011.jpg`, or null. */
export function parseChunkIndex(filename) {
  if (typeof filename !== "string") return null;
  const m = /chunk(\d+)_\d+/i.exec(filename);
  return m ? Number(m[1]) : null;
}

/** The run id a list of frames belongs to: the last segment of their subfolder (`causal_forcing/<run>`), or null. */
export function runIdFromFrames(frames) {
  const f = Array.isArray(frames) ? frames.find((x) => x && typeof x.subfolder === "string" && x.subfolder) : null;
  if (!f) return null;
  const parts = f.subfolder.split(/[\\/]/).filter(Boolean);
  return parts.length ? parts[parts.length - 1] : null;
}

/** `{frames, fps}` from a node's `ui` output (`onExecuted(output)`); frames is [] when there are none. */
export function framesFromOutput(output) {
  if (!output || typeof output !== "object") return { frames: [], fps: DEFAULT_FPS };
  return { frames: normalizeFrames(output[UI_FRAMES_KEY]), fps: sanitizeFps(output[UI_FPS_KEY]) };
}

// ------------------------------------------------------------------------------------------- node-id matching

/**
 * The execution ids (`"5"`, or `"12:5"` inside subgraph node 12) a litegraph node runs under. Duck-typed on the
 * frontend's graph objects: `node.graph`, `graph.isRootGraph`, `graph.rootGraph`, `rootGraph.subgraphs` (a Map),
 * `graph._nodes` / `graph.nodes`, `subgraphNode.subgraph`. A node of a subgraph used by several subgraph nodes has
 * several ids. Never throws.
 */
export function executionPaths(node, depth = 0) {
  try {
    if (!node || node.id === undefined || node.id === null || depth > 16) return [];
    const id = String(node.id);
    const graph = node.graph;
    if (!graph || graph.isRootGraph !== false) return [id];
    const root = graph.rootGraph;
    if (!root || root === graph) return [id];
    const graphs = [root];
    const subs = root.subgraphs ?? root._subgraphs;
    if (subs && typeof subs.values === "function") graphs.push(...subs.values());
    const out = [];
    for (const g of graphs) {
      const nodes = g?._nodes ?? g?.nodes ?? [];
      for (const n of nodes) {
        if (n && n !== node && n.subgraph === graph) {
          for (const p of executionPaths(n, depth + 1)) out.push(`${p}:${id}`);
        }
      }
    }
    return out;
  } catch {
    return [];
  }
}

/** The frontend's node locator id: `"5"` in the root graph, `"<subgraph uuid>:5"` inside a subgraph. */
export function locatorId(node) {
  if (!node || node.id === undefined || node.id === null) return null;
  const graph = node.graph;
  if (graph && graph.isRootGraph === false && graph.id) return `${graph.id}:${node.id}`;
  return String(node.id);
}

/** True when the node sits inside a subgraph (not the root graph). */
export function inSubgraph(node) {
  return !!(node && node.graph && node.graph.isRootGraph === false);
}

/** `{id, ids, inSubgraph, ref}` describing a node for {@link pickTargets}. */
export function describeNode(node, ref = node) {
  const id = node && node.id !== undefined && node.id !== null ? String(node.id) : "";
  const ids = new Set(executionPaths(node));
  const loc = locatorId(node);
  if (loc) ids.add(loc);
  return { id, ids: [...ids], inSubgraph: inSubgraph(node), ref };
}

/**
 * The candidates an event's node id (`"5"`, or a subgraph path `"12:5"`) is meant for: those whose execution id or
 * locator id equals it; failing that, those whose own id equals its last segment (preferring subgraph nodes for a
 * path and root nodes for a plain id).
 */
export function pickTargets(eventNode, candidates) {
  if (eventNode === undefined || eventNode === null || !Array.isArray(candidates)) return [];
  const target = String(eventNode);
  if (target === "") return [];
  const exact = candidates.filter((c) => c && Array.isArray(c.ids) && c.ids.includes(target));
  if (exact.length) return exact;
  const segments = target.split(":");
  const last = segments[segments.length - 1];
  const fallback = candidates.filter((c) => c && c.id === last);
  if (fallback.length <= 1) return fallback;
  const wantSub = segments.length > 1;
  const preferred = fallback.filter((c) => !!c.inSubgraph === wantSub);
  return preferred.length ? preferred : fallback;
}

// ------------------------------------------------------------------------------------------------ status text

/**
 * The status line under the image, e.g. `chunk 2/7 · frame 17 · 16 fps`: the chunk playing, counted from 1, of the
 * run's length when it is known (a live run's is not until it ends). `paused`: the player is paused; `runPaused`: the
 * live run generating the frames is paused (said instead of waiting for the next chunk).
 */
export function formatStatus(s, { paused = false, runPaused = false } = {}) {
  if (!s || s.state === "empty") return "no frames yet \u2014 run the node";
  const fps = `${Math.round(Number(s.fps) * 100) / 100 || DEFAULT_FPS} fps`;
  const of = (i) => (s.chunks ? `${i}/${s.chunks}` : `${i}`);
  const parts = [];
  if (s.frame > 0) {
    parts.push(`chunk ${of(s.chunk)}`, `frame ${s.frame}`, fps);
  } else {
    parts.push(`chunk ${of(s.chunk || 1)}`, fps);
  }
  if (s.state === "waiting" && runPaused) parts.push("live run paused");
  else if (s.state === "waiting" && s.waitingFor) parts.push(`waiting for chunk ${of(s.waitingFor)}`);
  else if (s.state === "loading") parts.push("loading");
  else if (s.state === "unavailable") parts.push("frames unavailable");
  if (s.dropped > 0) parts.push(`${s.dropped} skipped`);
  if (paused) parts.push("paused");
  return parts.join(SEP);
}

// ------------------------------------------------------------------------------------------------ frame queue

/**
 * The frames of one run and the play head over them. The player owns timing and images; this class decides what to
 * show next. Entries: `{frame, key, path, chunk, chunkInRun, chunksInRun, index, status}` where `status` is
 * `"new" | "loading" | "ready" | "error"` (set by the player's preloader) and `index` is the frame's number in the
 * run (0-based).
 */
export class FrameQueue {
  constructor({ maxQueue = MAX_QUEUE, maxHistory = MAX_HISTORY, fps = DEFAULT_FPS } = {}) {
    this.maxQueue = Math.max(1, maxQueue);
    this.maxHistory = Math.max(this.maxQueue, maxHistory);
    this.fps = sanitizeFps(fps);
    this.loop = false;
    this.reset(null);
  }

  /** Forget everything and start run `runId` (null: no run). The shown frame stays until the next one. */
  reset(runId) {
    this.runId = runId ?? null;
    this.history = [];
    this.pos = 0; // index in history of the next frame to show
    this.keys = new Set();
    this.current = null; // the entry on screen
    this.finished = false; // no more chunks will come for this run
    this.lastChunkInRun = -1; // highest chunk_in_run received
    this.chunksInRun = null;
    this.nextIndex = 0;
    this.dropped = 0; // waiting frames skipped because the queue was full
    this.errors = 0; // frames that failed to load
    this.width = null;
    this.height = null;
  }

  /** Frames waiting to be shown. */
  get pending() {
    return this.history.length - this.pos;
  }

  _entry(frame, { chunk = null, chunkInRun = 0, chunksInRun = null, index }) {
    return {
      frame,
      key: frameKey(frame),
      path: viewPath(frame),
      chunk,
      chunkInRun,
      chunksInRun,
      index,
      status: "new",
    };
  }

  _trimHistory() {
    const extra = this.history.length - this.maxHistory;
    if (extra > 0) {
      for (const e of this.history.splice(0, extra)) this.keys.delete(e.key);
      this.pos = Math.max(0, this.pos - extra);
    }
  }

  /**
   * Add the frames of a `causal_forcing.chunk` event. A new run id resets the queue first. Returns
   * `{reset, added, dropped}`; never throws on malformed input.
   */
  pushChunk(detail) {
    const d = detail && typeof detail === "object" ? detail : {};
    const frames = normalizeFrames(d.frames);
    const chunkInRunRaw = toIndex(d.chunk_in_run);
    let runId = d.run !== undefined && d.run !== null && d.run !== "" ? String(d.run) : runIdFromFrames(frames);
    if (runId === null) runId = chunkInRunRaw === 0 || this.runId === null ? `anon-${Date.now()}` : this.runId;
    let reset = false;
    if (runId !== this.runId) {
      const loop = this.loop;
      this.reset(runId);
      this.loop = loop;
      reset = true;
    }
    if (d.fps !== undefined) this.fps = sanitizeFps(d.fps, this.fps);
    const w = toCount(d.width);
    const h = toCount(d.height);
    if (w && h) {
      this.width = w;
      this.height = h;
    }
    const chunks = toCount(d.chunks_in_run);
    if (chunks) this.chunksInRun = chunks;
    const chunkInRun = chunkInRunRaw ?? this.lastChunkInRun + 1;
    this.lastChunkInRun = Math.max(this.lastChunkInRun, chunkInRun);
    const chunk = toIndex(d.chunk);
    let added = 0;
    for (const f of frames) {
      const entry = this._entry(f, { chunk, chunkInRun, chunksInRun: this.chunksInRun, index: this.nextIndex });
      if (this.keys.has(entry.key)) continue;
      this.keys.add(entry.key);
      this.history.push(entry);
      this.nextIndex += 1;
      added += 1;
    }
    // more chunks may still come unless this was the run's last one
    this.finished = this.chunksInRun !== null && this.lastChunkInRun >= this.chunksInRun - 1;
    let dropped = 0;
    if (this.pending > this.maxQueue) {
      dropped = this.pending - this.maxQueue;
      for (let i = this.pos; i < this.pos + dropped; i++) {
        if (this.history[i].status !== "error") this.history[i].status = "new";
      }
      this.pos += dropped;
      this.dropped += dropped;
    }
    this._trimHistory();
    return { reset, added, dropped };
  }

  /**
   * Load the complete frame list of a run (the node's `ui` output). Frames of the current run keep their place and
   * preload state, and the play head stays on the frame shown; another run replaces the queue and plays from its
   * start. The run is finished afterwards. Returns `{reset, added}`.
   */
  loadRun(list, { fps, runId } = {}) {
    const frames = normalizeFrames(list);
    if (!frames.length) return { reset: false, added: 0 };
    const id = runId ?? runIdFromFrames(frames);
    const keys = frames.map(frameKey);
    const same = this.runId !== null && ((id !== null && id === this.runId) || keys.some((k) => this.keys.has(k)));
    if (fps !== undefined) this.fps = sanitizeFps(fps, this.fps);
    // chunk numbering from file names (chunkNNNNN_JJJ.jpg): the k-th distinct chunk of the list is chunk k of the run
    const order = new Map();
    const chunkOf = frames.map((f) => {
      const c = parseChunkIndex(f.filename);
      const k = c === null ? "#" : c; // frames without a chunk number form one chunk
      if (!order.has(k)) order.set(k, order.size);
      return { chunk: c, chunkInRun: order.get(k) };
    });
    const chunks = Math.max(order.size, 1);
    if (!same) {
      const loop = this.loop;
      this.reset(id ?? `ui-${Date.now()}`);
      this.loop = loop;
    }
    const old = new Map(this.history.map((e) => [e.key, e]));
    const shownKey = this.current ? this.current.key : null;
    const nextKey = this.pos < this.history.length ? this.history[this.pos].key : null;
    let added = 0;
    const history = frames.map((f, i) => {
      const prev = old.get(keys[i]);
      const e = prev ?? this._entry(f, { ...chunkOf[i], chunksInRun: chunks, index: i });
      if (!prev) added += 1;
      e.index = i;
      e.chunkInRun = chunkOf[i].chunkInRun;
      e.chunksInRun = chunks;
      return e;
    });
    this.history = history;
    this.keys = new Set(keys);
    this.chunksInRun = chunks;
    this.lastChunkInRun = chunks - 1;
    this.nextIndex = history.length;
    if (nextKey !== null && this.keys.has(nextKey)) this.pos = keys.indexOf(nextKey);
    else if (shownKey !== null && this.keys.has(shownKey)) this.pos = keys.indexOf(shownKey) + 1;
    else this.pos = same ? Math.min(this.pos, history.length) : 0;
    this.finished = true;
    this._trimHistory();
    return { reset: !same, added };
  }

  /** No more chunks will come for the current run (the prompt ended, was interrupted or failed). */
  endRun() {
    if (this.runId !== null) this.finished = true;
  }

  /** Entries ahead of the play head that still need preloading (status "new"), at most `ahead` positions ahead. */
  preloadCandidates(ahead = PRELOAD_AHEAD) {
    const out = [];
    const end = Math.min(this.history.length, this.pos + Math.max(0, ahead));
    for (let i = this.pos; i < end; i++) if (this.history[i].status === "new") out.push(this.history[i]);
    return out;
  }

  /** Rewind to the run's first frame (loop replay); frames that failed to load stay skipped. */
  restart() {
    if (!this.history.some((e) => e.status !== "error")) return false;
    for (const e of this.history) if (e.status !== "error") e.status = "new";
    this.pos = 0;
    return true;
  }

  /**
   * Advance the play head by one frame. Returns `{type: "show", entry}` for the frame to put on screen now, or
   * `{type: "hold", reason}` with reason `"loading"` (next frame not preloaded yet), `"waiting"` (generation is
   * behind playback: the next chunk has not arrived), `"done"` (run played out) or `"empty"` (no run yet).
   */
  step() {
    if (this.runId === null) return { type: "hold", reason: "empty" };
    for (let attempt = 0; attempt < 2; attempt++) {
      while (this.pos < this.history.length && this.history[this.pos].status === "error") {
        this.pos += 1;
        this.errors += 1;
      }
      if (this.pos < this.history.length) {
        const entry = this.history[this.pos];
        if (entry.status !== "ready") return { type: "hold", reason: "loading" };
        this.pos += 1;
        this.current = entry;
        return { type: "show", entry };
      }
      if (!this.finished) return { type: "hold", reason: "waiting" };
      if (!(this.loop && attempt === 0 && this.history.length && this.restart())) break;
    }
    return { type: "hold", reason: "done" };
  }

  /**
   * The play state for {@link formatStatus}: `{state, chunk, chunks, frame, fps, waitingFor, dropped}` where state is
   * `"empty"` (no run), `"loading"` (frames queued, none shown yet), `"playing"`, `"waiting"` (every received frame
   * played, the run's next chunk not here yet), `"done"` or `"unavailable"` (the run's frames all failed to load).
   */
  status() {
    if (this.runId === null) {
      return { state: "empty", chunk: 0, chunks: null, frame: 0, fps: this.fps, waitingFor: null, dropped: 0 };
    }
    const cur = this.current;
    const head = this.pos < this.history.length ? this.history[this.pos] : null;
    let state;
    if (head) state = cur ? "playing" : "loading";
    else if (!this.finished) state = "waiting";
    else state = this.history.some((e) => e.status !== "error") ? "done" : "unavailable";
    return {
      state,
      chunk: cur ? cur.chunkInRun + 1 : head ? head.chunkInRun + 1 : 1,
      chunks: (cur && cur.chunksInRun) || this.chunksInRun || null,
      frame: cur ? cur.index + 1 : 0,
      fps: this.fps,
      waitingFor: state === "waiting" ? this.lastChunkInRun + 2 : null,
      dropped: this.dropped,
    };
  }
}
