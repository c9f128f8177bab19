// Causal Forcing live player: plays the preview frames a generating node streams (`causal_forcing.chunk` websocket
// events, see nodes/live_preview.py) on the node itself, at the video's frame rate, and replays the whole run from
// the node's `ui` output after it ran. The queue, URL and node-id logic lives in ./cf_player_queue.js (tested in
// js/tests/ with `node --test js/tests/`).
//
// `CausalForcingLive` nodes also get a control panel under the player (prompt box, pause/resume, stop, status) that
// follows `causal_forcing.live` events and steers the run through POST /causal_forcing/live/control. Its state
// reducer, request building and rate limiting live in ./cf_live_controls.js.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  CHUNK_EVENT,
  FrameQueue,
  PLAYER_NODES,
  PRELOAD_AHEAD,
  UI_FRAMES_KEY,
  describeNode,
  formatStatus,
  framesFromOutput,
  isPlayerNode,
  pickTargets,
} from "./cf_player_queue.js";
import {
  CONTROL_ROUTE,
  LIVE_EVENT,
  RATE_LIMIT,
  RateLimiter,
  buildControlBody,
  controlRequestInit,
  formatLiveStatus,
  formatLiveTitle,
  initialLive,
  isActive,
  isLiveNode,
  parseControlResponse,
  reduceLive,
  toggleAction,
} from "./cf_live_controls.js";

export { PLAYER_NODES };

const EXTENSION = "causal_forcing.player";
const WIDGET_NAME = "cf_player";
/** Minimum height of the player widget (image + control bar), in canvas pixels. */
const MIN_HEIGHT = 200;
/** The node is never grown past this widget height when fitting the video's aspect ratio. */
const MAX_FIT_HEIGHT = 900;
const BAR_HEIGHT = 22;
const GAP = 4;
/** Events after which no more chunks come for the running prompt. */
const END_EVENTS = ["execution_success", "execution_error", "execution_interrupted"];
/** ComfyUI's event with a node's `ui` output after it ran (or was taken from the cache). */
const EXECUTED_EVENT = "executed";

const ICON_PLAY = "\u25B6"; // ▶
const ICON_PAUSE = "\u275A\u275A"; // ❚❚
const ICON_REPLAY = "\u21BB"; // ↻

function warn(...args) {
  try {
    console.warn(`[${EXTENSION}]`, ...args);
  } catch {
    /* console unavailable */
  }
}

// --------------------------------------------------------------------------------------- player registry + events

/** Players of the nodes currently in a graph. */
const players = new Set();
let listening = false;

function candidates() {
  const out = [];
  for (const p of players) {
    if (!p.disposed && p.node) out.push(describeNode(p.node, p));
  }
  return out;
}

function onChunk(event) {
  try {
    const detail = event?.detail;
    if (!detail || typeof detail !== "object") return;
    for (const c of pickTargets(detail.node, candidates())) c.ref.onChunk(detail);
  } catch (err) {
    warn("chunk event", err);
  }
}

/** A `causal_forcing.live` event: goes to the live panels only (matched like chunk events). */
function onLive(event) {
  try {
    const detail = event?.detail;
    if (!detail || typeof detail !== "object") return;
    const cands = candidates().filter((c) => c.ref.live);
    for (const c of pickTargets(detail.node, cands)) c.ref.live.onEvent(detail);
  } catch (err) {
    warn("live event", err);
  }
}

/** An `executed` event: the node's `ui` output goes to its player (the run's complete frame list). */
function onExecuted(event) {
  try {
    const detail = event?.detail;
    if (!detail || typeof detail !== "object" || !detail.output || typeof detail.output !== "object") return;
    if (!(UI_FRAMES_KEY in detail.output)) return;
    for (const c of pickTargets(detail.node, candidates())) c.ref.onOutput(detail.output);
  } catch (err) {
    warn("executed event", err);
  }
}

function onRunEnded() {
  for (const p of players) {
    try {
      p.onRunEnded();
    } catch (err) {
      warn("end event", err);
    }
  }
}

/** The api listeners live while at least one player exists. */
function subscribe(player) {
  players.add(player);
  if (listening) return;
  api.addEventListener(CHUNK_EVENT, onChunk);
  api.addEventListener(LIVE_EVENT, onLive);
  api.addEventListener(EXECUTED_EVENT, onExecuted);
  for (const name of END_EVENTS) api.addEventListener(name, onRunEnded);
  listening = true;
}

function unsubscribe(player) {
  players.delete(player);
  if (!listening || players.size) return;
  api.removeEventListener(CHUNK_EVENT, onChunk);
  api.removeEventListener(LIVE_EVENT, onLive);
  api.removeEventListener(EXECUTED_EVENT, onExecuted);
  for (const name of END_EVENTS) api.removeEventListener(name, onRunEnded);
  listening = false;
}

// --------------------------------------------------------------------------------------------------- the player

function el(tag, style = {}, props = {}) {
  const e = document.createElement(tag);
  Object.assign(e.style, style);
  Object.assign(e, props);
  return e;
}

/** A DOM widget that is never serialised: not sent in the API prompt (the `serialize` option) and not written to
 *  the workflow's widgets_values (LGraphNode.serialize checks `widget.serialize`). `sizes`: getMinHeight and
 *  optionally getMaxHeight. */
function addUnsavedDomWidget(node, name, root, sizes) {
  const widget = node.addDOMWidget(name, name, root, {
    serialize: false,
    hideOnZoom: true,
    getValue() {
      return "";
    },
    setValue() {},
    ...sizes,
  });
  widget.serialize = false;
  return widget;
}

/** The column that holds a widget's DOM; the CSS variables are read by the frontend's DOM widget layout when
 *  getMinHeight / getMaxHeight are not supported. */
function panelRoot(className, minHeight, maxHeight = null) {
  const root = el("div", {
    display: "flex",
    flexDirection: "column",
    gap: `${GAP}px`,
    width: "100%",
    height: "100%",
    boxSizing: "border-box",
    overflow: "hidden",
    font: "11px sans-serif",
    color: "var(--input-text, #ddd)",
  });
  root.className = className;
  root.style.setProperty("--comfy-widget-min-height", String(minHeight));
  if (maxHeight !== null) root.style.setProperty("--comfy-widget-max-height", String(maxHeight));
  return root;
}

function makeButton(text, title) {
  return el(
    "button",
    {
      flex: "0 0 auto",
      height: `${BAR_HEIGHT}px`,
      minWidth: "28px",
      padding: "0 6px",
      font: "inherit",
      lineHeight: `${BAR_HEIGHT - 2}px`,
      color: "var(--input-text, #ddd)",
      background: "var(--comfy-input-bg, #222)",
      border: "1px solid var(--border-color, #444)",
      borderRadius: "4px",
      cursor: "pointer",
    },
    { type: "button", textContent: text, title },
  );
}

class CausalForcingPlayer {
  constructor(node) {
    this.node = node;
    this.queue = new FrameQueue();
    this.playing = true;
    this.disposed = false;
    this.timer = null;
    this.timerFps = 0;
    this.inflight = new Set(); // preloading Image objects
    this.fitted = null; // "WxH" the node was last fitted to
    this.shownAny = false;
    this.live = null; // the LivePanel of a CausalForcingLive node
    this._buildDom();
    this.widget = addUnsavedDomWidget(node, WIDGET_NAME, this.root, { getMinHeight: () => MIN_HEIGHT });
    subscribe(this);
    this._render();
  }

  // ------------------------------------------------------------------------------------------------- DOM
  _buildDom() {
    this.root = panelRoot("cf-player", MIN_HEIGHT);

    this.screen = el("div", {
      position: "relative",
      flex: "1 1 auto",
      minHeight: "0",
      background: "#000",
      borderRadius: "4px",
      overflow: "hidden",
    });
    this.img = el(
      "img",
      {
        position: "absolute",
        inset: "0",
        width: "100%",
        height: "100%",
        objectFit: "contain",
        display: "none",
        userSelect: "none",
      },
      { alt: "", draggable: false, decoding: "sync" },
    );
    this.placeholder = el("div", {
      position: "absolute",
      inset: "0",
      display: "flex",
      alignItems: "center",
      justifyContent: "center",
      textAlign: "center",
      padding: "8px",
      opacity: "0.6",
      pointerEvents: "none",
    });
    this.placeholder.textContent = "live preview appears here while the node runs";
    this.screen.append(this.img, this.placeholder);

    this.bar = el("div", {
      display: "flex",
      alignItems: "center",
      gap: "6px",
      flex: `0 0 ${BAR_HEIGHT}px`,
      height: `${BAR_HEIGHT}px`,
      minWidth: "0",
    });
    this.playBtn = makeButton(ICON_PAUSE, "Pause");
    this.loopBtn = makeButton("loop", "Replay the last run's frames in a loop after it finishes");
    this.statusEl = el("span", {
      flex: "1 1 auto",
      minWidth: "0",
      overflow: "hidden",
      textOverflow: "ellipsis",
      whiteSpace: "nowrap",
    });
    this.playBtn.addEventListener("click", (e) => this._guard(() => this.togglePlay(), e));
    this.loopBtn.addEventListener("click", (e) => this._guard(() => this.toggleLoop(), e));
    this.bar.append(this.playBtn, this.loopBtn, this.statusEl);
    this.root.append(this.screen, this.bar);
  }

  _guard(fn, event) {
    try {
      event?.stopPropagation?.();
      fn();
    } catch (err) {
      warn(err);
    }
  }

  _render() {
    if (this.disposed) return;
    const s = this.queue.status();
    this.statusEl.textContent = formatStatus(s, { paused: !this.playing, runPaused: this.live?.live?.state === "paused" });
    this.statusEl.title = this.statusEl.textContent;
    if (s.state === "done" || s.state === "unavailable") {
      this.playBtn.textContent = ICON_REPLAY;
      this.playBtn.title = "Replay the run";
    } else if (this.playing) {
      this.playBtn.textContent = ICON_PAUSE;
      this.playBtn.title = "Pause";
    } else {
      this.playBtn.textContent = ICON_PLAY;
      this.playBtn.title = "Play";
    }
    const loop = this.queue.loop;
    this.loopBtn.setAttribute("aria-pressed", loop ? "true" : "false");
    // pressed: the palette's colours swapped (only ComfyUI's colour-palette variables, which every frontend sets)
    this.loopBtn.style.background = loop ? "var(--input-text, #ddd)" : "var(--comfy-input-bg, #222)";
    this.loopBtn.style.color = loop ? "var(--comfy-input-bg, #222)" : "var(--input-text, #ddd)";
    if (s.state === "unavailable") {
      this.placeholder.textContent = "preview frames are no longer on the server";
      this.placeholder.style.display = "flex";
    } else {
      this.placeholder.style.display = this.shownAny ? "none" : "flex";
    }
  }

  // ------------------------------------------------------------------------------------------- timing
  _ensureTimer() {
    if (this.disposed || !this.playing) return;
    const fps = this.queue.fps;
    if (this.timer !== null && this.timerFps === fps) return;
    const fresh = this.timer === null;
    this._stopTimer();
    this.timerFps = fps;
    this.timer = setInterval(() => this._tick(), 1000 / fps);
    if (fresh) this._tick(); // show a frame that is ready at once instead of one period later
  }

  _stopTimer() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  _tick() {
    try {
      if (this.disposed) return this._stopTimer();
      const r = this.queue.step();
      if (r.type === "show") this._show(r.entry);
      else if (r.reason !== "loading") this._stopTimer(); // waiting/done/empty: restarted by new frames or a click
      this._preload();
      this._render();
    } catch (err) {
      this._stopTimer();
      warn("playback", err);
    }
  }

  _show(entry) {
    const url = entry.url || this._url(entry);
    if (!url) return;
    const pre = entry.img;
    entry.img = null; // the preloaded image is in the document's image cache now; drop the reference
    if (!this.queue.width && pre && pre.naturalWidth && pre.naturalHeight) {
      this._fit(pre.naturalWidth, pre.naturalHeight);
    }
    if (this.img.getAttribute("src") !== url) this.img.src = url;
    if (!this.shownAny) {
      this.shownAny = true;
      this.img.style.display = "block";
    }
  }

  _url(entry) {
    if (!entry || !entry.path) return null;
    if (!entry.url) entry.url = api.apiURL(entry.path);
    return entry.url;
  }

  /** Load (and decode) the frames just ahead of the play head, so showing them never flickers. */
  _preload() {
    if (this.disposed) return;
    for (const entry of this.queue.preloadCandidates(PRELOAD_AHEAD)) {
      const url = this._url(entry);
      if (!url) {
        entry.status = "error";
        continue;
      }
      entry.status = "loading";
      const img = new Image();
      img.decoding = "async";
      const finish = (ok) => {
        if (!this.inflight.delete(img)) return; // cancelled
        img.onload = img.onerror = null;
        if (entry.status === "loading") {
          entry.status = ok ? "ready" : "error";
          entry.img = ok ? img : null;
        }
        this._ensureTimer();
        if (!this.timer) this._render();
      };
      img.onload = () => {
        if (typeof img.decode === "function") img.decode().then(() => finish(true), () => finish(true));
        else finish(true);
      };
      img.onerror = () => finish(false);
      this.inflight.add(img);
      img.src = url;
    }
  }

  _cancelPreloads() {
    for (const img of this.inflight) {
      img.onload = img.onerror = null;
      try {
        img.src = "";
      } catch {
        /* ignore */
      }
    }
    this.inflight.clear();
  }

  /** Grow the node so the image area has the video's aspect ratio (once per size; never shrinks the node). */
  _fit(width, height) {
    const key = `${width}x${height}`;
    if (this.fitted === key) return;
    this.fitted = key;
    const node = this.node;
    if (!node || !node.size || node.size.length < 2 || !(width > 0) || !(height > 0)) return;
    const margin = Number(this.widget?.margin) || 10;
    const screenW = Math.max(50, node.size[0] - 2 * margin);
    const ideal = (screenW * height) / width + BAR_HEIGHT + GAP + 2 * margin;
    const want = Math.min(MAX_FIT_HEIGHT, Math.max(MIN_HEIGHT, ideal));
    const have = Number(this.widget?.computedHeight) || MIN_HEIGHT;
    const delta = Math.round(want - have);
    if (delta > 1 && typeof node.setSize === "function") {
      node.setSize([node.size[0], node.size[1] + delta]);
      node.setDirtyCanvas?.(true, true);
    }
  }

  // ------------------------------------------------------------------------------------------- inputs
  /** A `causal_forcing.chunk` event meant for this node. */
  onChunk(detail) {
    if (this.disposed) return;
    const r = this.queue.pushChunk(detail);
    if (r.reset) this._cancelPreloads();
    if (this.queue.width && this.queue.height) this._fit(this.queue.width, this.queue.height);
    this._preload();
    this._ensureTimer();
    this._render();
  }

  /** The node's `ui` output after it ran (or was cached): the run's complete frame list. */
  onOutput(output) {
    if (this.disposed) return;
    const { frames, fps } = framesFromOutput(output);
    if (!frames.length) return;
    const r = this.queue.loadRun(frames, { fps });
    if (r.reset) {
      this._cancelPreloads();
      this.playing = true;
    }
    this._preload();
    this._ensureTimer();
    this._render();
  }

  /** The prompt ended: no more chunks for the current run (and a live run is over). */
  onRunEnded() {
    if (this.disposed) return;
    this.queue.endRun();
    this._ensureTimer();
    this._render();
    this.live?.onPromptEnded();
  }

  togglePlay() {
    const state = this.queue.status().state;
    if (state === "done" || state === "unavailable") {
      this.queue.restart();
      this.playing = true;
    } else {
      this.playing = !this.playing;
    }
    if (this.playing) this._ensureTimer();
    else this._stopTimer();
    this._render();
  }

  toggleLoop() {
    this.queue.loop = !this.queue.loop;
    this._ensureTimer();
    this._render();
  }

  // ------------------------------------------------------------------------------------------- lifecycle
  /** The node was (re-)added to a graph. */
  attach() {
    if (!this.disposed) return;
    this.disposed = false;
    subscribe(this);
    this._ensureTimer();
    this._render();
  }

  /** The node was removed: stop the timer, cancel preloads, stop receiving events. */
  detach() {
    if (this.disposed) return;
    this.disposed = true;
    this._stopTimer();
    this._cancelPreloads();
    unsubscribe(this);
  }
}

// ------------------------------------------------------------------------------------------- the live panel

const LIVE_WIDGET_NAME = "cf_live";
const LINE_HEIGHT = 14;
/** Fixed height of the live panel: prompt box, button row, status line, message line. */
const LIVE_PANEL_HEIGHT = 132;
const ERROR_COLOR = "var(--error-text, #ff6b6b)";

/**
 * The control panel under the player of a `CausalForcingLive` node: a prompt box with Send (and Ctrl/Cmd+Enter), a
 * re-cache checkbox, Pause/Resume and Stop, a status line and a message line. It keeps the node's latest
 * `causal_forcing.live` state (with the run's token) and steers the run through {@link CONTROL_ROUTE}. A DOM widget
 * of its own that is never serialised (not in the API prompt, not in the workflow's widgets_values).
 */
class LivePanel {
  /** `onChange()`: called after the live state changed (the player re-renders: it says when the run is paused). */
  constructor(node, { onChange = () => {} } = {}) {
    this.node = node;
    this.onChange = onChange;
    this.live = initialLive();
    this.limiter = new RateLimiter(RATE_LIMIT);
    this.autoText = null; // the prompt text last put in the box by the panel itself (not typed)
    this._buildDom();
    this.widget = addUnsavedDomWidget(node, LIVE_WIDGET_NAME, this.root, {
      getMinHeight: () => LIVE_PANEL_HEIGHT,
      getMaxHeight: () => LIVE_PANEL_HEIGHT,
    });
    this._render();
  }

  _buildDom() {
    this.root = panelRoot("cf-live", LIVE_PANEL_HEIGHT, LIVE_PANEL_HEIGHT);

    this.textarea = el(
      "textarea",
      {
        flex: "1 1 auto",
        minHeight: "0",
        width: "100%",
        boxSizing: "border-box",
        resize: "none",
        padding: "3px 5px",
        font: "inherit",
        lineHeight: `${LINE_HEIGHT}px`,
        color: "var(--input-text, #ddd)",
        background: "var(--comfy-input-bg, #222)",
        border: "1px solid var(--border-color, #444)",
        borderRadius: "4px",
      },
      {
        placeholder: "New prompt for the live run \u2014 Send or Ctrl+Enter applies it from the next chunk",
        spellcheck: false,
      },
    );
    this.textarea.className = "cf-live-prompt";

    const row = el("div", {
      display: "flex",
      alignItems: "center",
      gap: "6px",
      flex: `0 0 ${BAR_HEIGHT}px`,
      height: `${BAR_HEIGHT}px`,
      minWidth: "0",
    });
    this.sendBtn = makeButton("Send", "Send the prompt to the live run (Ctrl+Enter)");
    this.recacheBox = el("input", { margin: "0" }, { type: "checkbox", checked: true });
    this.recacheLabel = el(
      "label",
      { display: "flex", alignItems: "center", gap: "3px", flex: "0 0 auto", cursor: "pointer", userSelect: "none" },
      { title: "Re-encode the cached frames under the new prompt (smoother, more faithful switch)" },
    );
    this.recacheLabel.append(this.recacheBox, el("span", {}, { textContent: "re-cache" }));
    const spacer = el("span", { flex: "1 1 auto" });
    this.pauseBtn = makeButton("Pause", "Pause generation after the chunk in progress");
    this.stopBtn = makeButton("Stop", "Stop the live run after the chunk in progress (it keeps what it made)");
    row.append(this.sendBtn, this.recacheLabel, spacer, this.pauseBtn, this.stopBtn);

    const line = (extra = {}) =>
      el("div", {
        flex: `0 0 ${LINE_HEIGHT}px`,
        height: `${LINE_HEIGHT}px`,
        lineHeight: `${LINE_HEIGHT}px`,
        minWidth: "0",
        overflow: "hidden",
        textOverflow: "ellipsis",
        whiteSpace: "nowrap",
        ...extra,
      });
    this.statusEl = line();
    this.messageEl = line();
    this.root.append(this.textarea, row, this.statusEl, this.messageEl);

    // typing in the panel must not reach ComfyUI's shortcuts (window/document keydown listeners)
    this.root.addEventListener("keydown", (e) => e.stopPropagation());
    this.textarea.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !e.isComposing) {
        e.preventDefault();
        this._guard(() => this.sendPrompt(), e);
      }
    });
    this.sendBtn.addEventListener("click", (e) => this._guard(() => this.sendPrompt(), e));
    this.pauseBtn.addEventListener("click", (e) => this._guard(() => this.control(toggleAction(this.live)), e));
    this.stopBtn.addEventListener("click", (e) => this._guard(() => this.control("stop"), e));
    // the frontend blurs a DOM widget's element on a mousedown outside it: pass that on to the focused box
    const root = this.root;
    root.blur = function () {
      const active = typeof document !== "undefined" ? document.activeElement : null;
      if (active && active !== root && typeof root.contains === "function" && root.contains(active)) active.blur?.();
    };
  }

  _guard(fn, event) {
    try {
      event?.stopPropagation?.();
      const r = fn();
      if (r && typeof r.catch === "function") r.catch((err) => warn("live control", err));
    } catch (err) {
      warn("live control", err);
    }
  }

  _dispatch(action) {
    this.live = reduceLive(this.live, action);
    this._render();
  }

  _render() {
    const live = this.live;
    const active = isActive(live);
    this.root.setAttribute("data-state", live.state ?? "none");
    this.statusEl.textContent = formatLiveStatus(live);
    this.statusEl.title = formatLiveTitle(live);
    const msg = live.message;
    this.messageEl.textContent = msg ? msg.text : "";
    this.messageEl.title = msg ? msg.text : "";
    this.messageEl.style.color = msg?.kind === "error" ? ERROR_COLOR : "inherit";
    this.messageEl.style.opacity = msg?.kind === "error" ? "1" : "0.75";
    const resume = toggleAction(live) === "resume";
    this.pauseBtn.textContent = resume ? "Resume" : "Pause";
    this.pauseBtn.title = resume ? "Resume generation" : "Pause generation after the chunk in progress";
    for (const b of [this.sendBtn, this.pauseBtn, this.stopBtn, this.recacheBox]) {
      b.disabled = !active;
      b.style.opacity = active ? "1" : "0.45";
      b.style.cursor = active ? "pointer" : "default";
    }
    this.recacheLabel.style.opacity = active ? "1" : "0.45";
    try {
      this.onChange();
    } catch (err) {
      warn("live panel listener", err);
    }
  }

  /** Put the run's prompt in the box when the box is empty or still holds what the panel put there. */
  _syncPromptBox() {
    const prompt = this.live.prompt;
    if (!prompt) return;
    const focused = typeof document !== "undefined" && document.activeElement === this.textarea;
    const value = this.textarea.value ?? "";
    if (focused || !(value.trim() === "" || value === this.autoText)) return;
    this.textarea.value = prompt;
    this.autoText = prompt;
  }

  // ------------------------------------------------------------------------------------------- inputs
  /** A `causal_forcing.live` event for this node. */
  onEvent(detail) {
    const before = this.live;
    this.live = reduceLive(before, { type: "event", detail });
    if (this.live === before) {
      warn("ignored a malformed live event");
      return;
    }
    if (this.live.run !== before.run || this.live.prompt !== before.prompt) this._syncPromptBox();
    this._render();
  }

  /** The prompt ended: a run still open is over. */
  onPromptEnded() {
    this._dispatch({ type: "ended" });
  }

  /** Send the box's text as the run's new prompt (with the re-cache flag). */
  sendPrompt() {
    return this.control("prompt", { text: this.textarea.value, recache: !!this.recacheBox.checked });
  }

  /**
   * POST one control request for the current run; the reply (or the reason nothing was sent) lands in the live
   * state. Resolves to the parsed reply, or null when nothing was sent. Never rejects.
   */
  async control(action, opts = {}) {
    const built = buildControlBody(this.live, action, opts);
    if (!built.ok) {
      this._dispatch({ type: "message", kind: "error", text: built.error });
      return null;
    }
    const slot = this.limiter.take();
    if (!slot.ok) {
      const s = Math.max(0.1, Math.ceil(slot.retryInMs / 100) / 10);
      this._dispatch({ type: "message", kind: "error", text: `too many requests; try again in ${s} s` });
      return null;
    }
    const { run, text } = built.body;
    let reply;
    try {
      const res = await api.fetchApi(CONTROL_ROUTE, controlRequestInit(built.body));
      let json = null;
      try {
        json = await res.json();
      } catch {
        json = null; // not JSON (e.g. the route is missing)
      }
      reply = parseControlResponse(res?.status, json);
    } catch (err) {
      reply = { ok: false, status: 0, error: `the request failed: ${err?.message || err}` };
    }
    if (reply.ok && action === "prompt" && this.textarea.value.trim() === text) this.autoText = this.textarea.value;
    this._dispatch({ type: "response", run, action, text, reply });
    return reply;
  }
}

// ----------------------------------------------------------------------------------------- wiring to the node

function attachPlayer(node) {
  if (!node || node.__cfPlayer) return;
  if (typeof node.addDOMWidget !== "function") {
    warn("this ComfyUI frontend has no addDOMWidget; the live player is off");
    return;
  }
  const player = new CausalForcingPlayer(node);
  Object.defineProperty(node, "__cfPlayer", { value: player, configurable: true, enumerable: false });
  if (isLiveNode(comfyClassOf(node))) {
    try {
      player.live = new LivePanel(node, { onChange: () => player._render() }); // under the player
    } catch (err) {
      warn("live controls", err);
    }
  }

  // room for the player in a freshly created node (a loaded workflow restores its saved size afterwards)
  try {
    const min = node.computeSize?.();
    if (node.size && node.size.length >= 2) {
      const w = Math.max(node.size[0], min?.[0] ?? 0, 300);
      const h = Math.max(node.size[1], min?.[1] ?? 0);
      node.setSize?.([w, h]);
    }
  } catch {
    /* keep the frontend's size */
  }
}

function comfyClassOf(node) {
  return node?.comfyClass ?? node?.constructor?.comfyClass ?? node?.type;
}

/** Wraps `proto[name]` so that `after` runs after whatever was there (other extensions' handlers keep working). */
function chainMethod(proto, name, after) {
  const previous = proto[name];
  proto[name] = function (...args) {
    const r = previous?.apply(this, args);
    try {
      after.call(this);
    } catch (err) {
      warn(name, err);
    }
    return r;
  };
}

app.registerExtension({
  name: EXTENSION,

  // The frontend has no extension hook for a node leaving or re-entering the graph, so the player's node types
  // chain LiteGraph's onRemoved / onAdded on their prototype (the documented beforeRegisterNodeDef pattern, for our
  // own node types only). Everything else arrives through extension hooks and api events.
  beforeRegisterNodeDef(nodeType, nodeData) {
    try {
      if (!isPlayerNode(nodeData?.name) || !nodeType?.prototype) return;
      chainMethod(nodeType.prototype, "onRemoved", function () {
        this.__cfPlayer?.detach();
      });
      chainMethod(nodeType.prototype, "onAdded", function () {
        this.__cfPlayer?.attach();
      });
    } catch (err) {
      warn("beforeRegisterNodeDef", err);
    }
  },

  nodeCreated(node) {
    try {
      if (isPlayerNode(comfyClassOf(node))) attachPlayer(node);
    } catch (err) {
      warn("nodeCreated", err);
    }
  },

  // Outputs restored by the frontend (switching workflow tabs, loading a run from the queue history): replay them.
  onNodeOutputsUpdated(nodeOutputs) {
    try {
      if (!nodeOutputs || typeof nodeOutputs !== "object" || !players.size) return;
      const cands = candidates();
      for (const [id, output] of Object.entries(nodeOutputs)) {
        if (!output || typeof output !== "object" || !(UI_FRAMES_KEY in output)) continue;
        for (const c of pickTargets(id, cands)) c.ref.onOutput(output);
      }
    } catch (err) {
      warn("onNodeOutputsUpdated", err);
    }
  },
});
