// Drive the Causal Forcing Live node in a real ComfyUI page with headless Chromium, end to end:
//
//   node scripts/browser_live_check.mjs --url http://127.0.0.1:PORT --prompt-file tiny_live_api.json --out DIR
//        [--text PROMPT] [--bad-text PROMPT --bad-word WORD]
//
// The page loads the API prompt as its graph (same node ids, so the live events reach the Live node's player),
// queues that prompt with the page's own client id, waits for frames on the player; with --bad-text it first types
// a prompt the encoder refuses (a misspelled toy word) and checks that the route answers 400 naming --bad-word, that
// the panel shows the message and that the take goes on; then it types the new prompt into the Live node's panel
// and presses Ctrl+Enter, waits for the status line to show it and for more frames, presses Stop, waits for
// "finished", then checks that /history's recorded schedule has the typed prompt at a chunk > 0 (and not the
// refused one).
// Writes DIR/{running,after_prompt,finished}.png and DIR/report.json, prints the report, exits 1 on a failed
// check (2 on bad arguments). Env: PLAYWRIGHT_CORE_DIR (the playwright-core package folder, else normal module
// resolution), CHROMIUM (default /usr/bin/chromium), BROWSER_CHECK_TIMEOUT_S (whole run, default 300).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadPlaywright } from './playwright_loader.mjs';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({ options: { url: { type: 'string' }, 'prompt-file': { type: 'string' },
  out: { type: 'string' }, text: { type: 'string', default: 'a snowy owl glides low over a frozen lake' },
  'bad-text': { type: 'string' }, 'bad-word': { type: 'string' } } });
// the typed prompt must fit the status line unshortened (it ellipsizes at 80 characters)
if (!args.url || !args['prompt-file'] || !args.out || !args.text.trim() || args.text.length > 79
  || !args['bad-text'] !== !args['bad-word']) {
  console.error('usage: node browser_live_check.mjs --url http://127.0.0.1:PORT --prompt-file API.json --out DIR'
    + ' [--text PROMPT (one line, < 80 characters)] [--bad-text PROMPT --bad-word WORD (the word it is refused for)]');
  process.exit(2);
}
const OUT = path.resolve(args.out);
fs.mkdirSync(OUT, { recursive: true });
const TYPED = args.text;
const prompt = JSON.parse(fs.readFileSync(args['prompt-file'], 'utf8'));
const liveId = Object.keys(prompt).find((k) => prompt[k].class_type === 'CausalForcingLive');
const schedId = Object.keys(prompt).find((k) => prompt[k].class_type === 'PreviewAny'
  && JSON.stringify(prompt[k].inputs?.source) === JSON.stringify([liveId, 2]));


const report = { ok: false, url: args.url, typed: TYPED, live_node: liveId, schedule_node: schedId ?? null, checks: [],
  screenshots: {}, steps: [], console_errors: [], pack_messages: [] };
const t0 = Date.now();
const step = (name, extra = {}) => { const e = { s: +((Date.now() - t0) / 1000).toFixed(1), step: name, ...extra };
  report.steps.push(e); console.error(JSON.stringify(e)); };
const check = (name, ok, detail = null) => {
  report.checks.push({ name, ok: !!ok, detail });
  if (!ok) step(`CHECK FAILED: ${name}`, { detail });
  return !!ok;
};
let context = null;
let page = null;
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cf-browser-check-'));

function finish(code) {
  report.ok = code === 0 && report.checks.length > 0 && report.checks.every((c) => c.ok);
  report.seconds = +((Date.now() - t0) / 1000).toFixed(1);
  const text = JSON.stringify(report, null, 2);
  fs.writeFileSync(path.join(OUT, 'report.json'), text);
  console.log(text);
  return report.ok ? 0 : 1;
}
const watchdog = setTimeout(async () => {
  report.error = `the whole check took longer than ${process.env.BROWSER_CHECK_TIMEOUT_S || 300} s`;
  if (page) await page.screenshot({ path: path.join(OUT, 'timeout.png'), timeout: 10000 }).catch(() => {});
  if (context) await context.close().catch(() => {});
  fs.rmSync(userDataDir, { recursive: true, force: true });
  finish(1);
  process.exit(1);
}, 1000 * Number(process.env.BROWSER_CHECK_TIMEOUT_S || 300));

async function shot(name) {
  const file = path.join(OUT, `${name}.png`);
  await page.screenshot({ path: file });
  report.screenshots[name] = file;
}
async function waitFor(what, fn, arg, timeoutMs = 60000) {
  try {
    await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 250 });
  } catch (err) {
    const now = JSON.stringify(await panel().catch(() => null));
    throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}; panel: ${now}`);
  }
}
const panel = () => page.evaluate((id) => {
  const p = window.app?.graph?.getNodeById(id)?.__cfPlayer;
  const ev = window.__cf ?? {};
  return p && { player: p.statusEl.textContent, live: p.live?.statusEl.textContent, message: p.live?.messageEl.textContent,
    img: (p.img.getAttribute('src') || '').replace(/^.*\/view\?/, ''),
    frame: +(p.statusEl.textContent.match(/frame (\d+)/)?.[1] ?? 0), chunkEvents: ev.chunks, lastLive: ev.live?.at(-1) ?? null };
}, liveId);

/** Type `text` into the Live panel's prompt box, press Ctrl+Enter, and return the control route's reply. */
async function sendFromPanel(box, text) {
  await box.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.type(text);
  const [reply] = await Promise.all([
    page.waitForResponse((r) => r.url().includes('/causal_forcing/live/control'), { timeout: 15000 }),
    page.keyboard.press('Control+Enter'),
  ]);
  return { status: reply.status(), body: await reply.json().catch(() => null) };
}

async function run() {
  if (!liveId) throw new Error(`${args['prompt-file']} has no CausalForcingLive node`);
  const { chromium } = await loadPlaywright();
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath, headless: true, viewport: { width: 1600, height: 1000 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'] });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => {
    if (m.type() === 'error') report.console_errors.push(m.text().slice(0, 300));
    if (/causal.forcing/i.test(m.text()) && /error|warn/.test(m.type())) {
      report.pack_messages.push(`[${m.type()}] ${m.text().slice(0, 300)}`);
    }
  });
  page.on('pageerror', (e) => report.console_errors.push(
    `[pageerror] ${String(e.stack || e.message).split('\n').slice(0, 3).join(' | ').slice(0, 400)}`));
  page.on('response', (r) => {
    if (r.status() >= 400) report.console_errors.push(`[HTTP ${r.status()}] ${r.url().slice(0, 200)}`);
  });
  let queued = 0;
  page.on('request', (r) => { if (r.method() === 'POST' && /\/api\/prompt$/.test(r.url())) queued += 1; });

  await page.goto(args.url, { waitUntil: 'load', timeout: 60000 });
  await waitFor('the ComfyUI app and its websocket client id',
    () => window.app?.graph && window.LiteGraph && window.app.api?.clientId, null);
  await page.waitForTimeout(1500);
  for (let i = 0; i < 5 && (await page.locator('.p-dialog').count()); i++) { // first-start dialogs (templates...)
    await page.keyboard.press('Escape');
    await page.waitForTimeout(400);
  }
  // the graph: the API prompt itself, so the nodes have the prompt's ids
  await page.evaluate(async (p) => { await window.app.loadApiJson(p, 'tiny_live_api.json'); }, prompt);
  await waitFor(`the Live node ${liveId} with its player and live panel`,
    (id) => !!window.app.graph.getNodeById(id)?.__cfPlayer?.live, liveId, 20000);
  const clientId = await page.evaluate((id) => {
    window.__cf = { chunks: 0, live: [] };
    const api = window.app.api;
    api.addEventListener('causal_forcing.chunk', (e) => { if (String(e.detail?.node) === id) window.__cf.chunks += 1; });
    api.addEventListener('causal_forcing.live', (e) => {
      window.__cf.live.push({ state: e.detail.state, chunk: e.detail.chunk, prompt: e.detail.prompt });
    });
    const n = window.app.graph.getNodeById(id); const c = window.app.canvas; // the Live node at the top left, scale 1
    c.ds.scale = 1; c.ds.offset = [40 - n.pos[0], 80 - n.pos[1]]; c.setDirty(true, true);
    return window.app.api.clientId;
  }, liveId);
  report.client_id = clientId;

  // queue the tiny prompt from the page, with the page's client id: the live events and the token come here
  const queuedReply = await page.evaluate(async ([p, cid]) => {
    const r = await window.app.api.fetchApi('/prompt', { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ prompt: p, client_id: cid }) });
    return { status: r.status, body: await r.json().catch(() => null) };
  }, [prompt, clientId]);
  report.prompt_id = queuedReply.body?.prompt_id ?? null;
  step('queued', queuedReply);
  if (!check('prompt queued', queuedReply.status === 200 && report.prompt_id, queuedReply)) return;

  await waitFor('frames on the Live node\'s player (3 chunks) and a running live state', (id) => {
    const p = window.app.graph.getNodeById(id).__cfPlayer;
    return window.__cf.chunks >= 3 && p.img.getAttribute('src') && p.live.live.state === 'running';
  }, liveId, 120000);
  const running = await panel();
  step('running', running);
  check('frames on the player', running.chunkEvents >= 3 && running.img, running);
  await shot('running');

  const box = page.locator(`textarea.cf-live-prompt`).first();
  if (args['bad-text']) {
    // a prompt the encoder refuses: answered at the route, shown in the panel, and the take goes on
    const refused = await sendFromPanel(box, args['bad-text']);
    report.refused_reply = refused;
    step('bad prompt sent', refused);
    report.console_errors = report.console_errors.filter((e) => !/HTTP 400.*live\/control/.test(e)); // expected
    check('the route refuses the bad prompt with 400 naming the word', refused.status === 400
      && String(refused.body?.error ?? '').includes(args['bad-word']), refused);
    const chunksAtRefusal = (await panel()).chunkEvents;
    await waitFor('the refusal in the panel and 2 more chunks of the take', ([id, word, n]) => {
      const p = window.app.graph.getNodeById(id).__cfPlayer;
      return p.live.messageEl.textContent.includes(word) && p.live.live.state === 'running' && window.__cf.chunks >= n + 2;
    }, [liveId, args['bad-word'], chunksAtRefusal], 60000);
    const afterRefusal = await panel();
    report.refusal_panel = afterRefusal;
    step('after the refused prompt', afterRefusal);
    check('the panel shows the refusal and the take goes on', afterRefusal.message.includes(args['bad-word'])
      && afterRefusal.chunkEvents >= chunksAtRefusal + 2, afterRefusal);
    await shot('refused');
  }

  // a new prompt, typed into the panel and sent with Ctrl+Enter
  const postsBefore = queued;
  const control = await sendFromPanel(box, TYPED);
  report.control_reply = control;
  step('prompt sent', control);
  const accepted = control.status === 200 && control.body?.ok && control.body.applies_at_chunk > 0;
  if (!check('prompt accepted by the control route', accepted, control)) return;
  const chunksAtSend = (await panel()).chunkEvents;
  await waitFor('the status line to show the typed prompt, 3 more chunks and the player further on', ([id, text, n, f]) => {
    const p = window.app.graph.getNodeById(id).__cfPlayer;
    const frame = +(p.statusEl.textContent.match(/frame (\d+)/)?.[1] ?? 0);
    return p.live.statusEl.textContent.includes(text) && window.__cf.chunks >= n + 3 && frame > f;
  }, [liveId, TYPED, chunksAtSend, running.frame], 60000);
  const after = await panel();
  step('after prompt', after);
  check('status shows the typed prompt', after.live.includes(TYPED), after.live);
  check('more frames after the prompt', after.chunkEvents >= chunksAtSend + 3 && after.frame > running.frame,
    { chunk_events: [running.chunkEvents, after.chunkEvents], frame_shown: [running.frame, after.frame] });
  check('Ctrl+Enter in the panel queued nothing', queued === postsBefore, { prompt_posts: [postsBefore, queued] });
  await shot('after_prompt');

  // Stop, then "finished"
  const [stopReply] = await Promise.all([
    page.waitForResponse((r) => r.url().includes('/causal_forcing/live/control'), { timeout: 15000 }),
    page.locator('.cf-live button', { hasText: 'Stop' }).first().click(),
  ]);
  const stopBody = await stopReply.json().catch(() => null);
  step('stop pressed', { status: stopReply.status(), body: stopBody });
  check('stop accepted', stopReply.status() === 200 && stopBody?.ok, stopBody);
  await waitFor('the live status "finished"',
    (id) => window.app.graph.getNodeById(id).__cfPlayer.live.statusEl.textContent.startsWith('finished'), liveId, 60000);
  const fin = await panel();
  step('finished', fin);
  check('status finished (stopped)', /^finished \(stopped\)/.test(fin.live), fin.live);

  // the recorded schedule in /history
  let entry = null;
  for (const until = Date.now() + 60000; Date.now() < until && !entry?.status?.completed; await page.waitForTimeout(500)) {
    entry = await page.evaluate(async (pid) => (await (await window.app.api.fetchApi(`/history/${pid}`)).json())[pid] ?? null,
      report.prompt_id);
  }
  await page.waitForTimeout(1000); // let the player pick up the final ui
  await shot('finished');
  check('prompt finished successfully in /history', entry?.status?.status_str === 'success',
    entry ? { status: entry.status?.status_str, errors: entry.status?.messages?.filter((m) => m[0] === 'execution_error') }
      : 'no history entry within 60 s');
  const schedule = schedId ? entry?.outputs?.[schedId]?.text?.[0] ?? null : null;
  report.schedule = schedule;
  if (args['bad-text']) check('the refused prompt is not in the schedule', schedule !== null
    && !schedule.includes(args['bad-text']), { schedule });
  const lines = (schedule ?? '').split('\n').map((l) => l.match(/^\s*(\d+)\s*:\s*(.*?)\s*$/)).filter(Boolean);
  const hit = lines.find((m) => +m[1] > 0 && m[2] === TYPED);
  check('schedule has the typed prompt at a chunk > 0', hit,
    { schedule, schedule_node: schedId ?? 'no PreviewAny on the schedule output' });
  const pageErrors = report.console_errors.filter((e) => /pageerror.*causal-forcing-nodes/.test(e));
  const packErrors = report.pack_messages.concat(pageErrors);
  check('no errors or warnings from the pack\'s js', !packErrors.length, packErrors);
  if (hit) check('schedule chunk = the chunk the control route announced', +hit[1] === control.body.applies_at_chunk,
    { schedule_chunk: +hit[1], applies_at_chunk: control.body.applies_at_chunk });
}

let code = 1;
try {
  await run();
  code = 0;
} catch (err) {
  report.error ??= String(err?.stack || err).replace(/\x1b\[[0-9;]*m/g, '').split('\n').slice(0, 4).join('\n');
  step('error', { error: report.error });
  if (page) await shot('error').catch(() => {});
}
clearTimeout(watchdog);
if (context) await context.close().catch(() => {});
fs.rmSync(userDataDir, { recursive: true, force: true });
process.exit(finish(code));
