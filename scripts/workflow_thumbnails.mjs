// The example workflows in a running ComfyUI page (headless Chromium): exported by the frontend, and screenshotted
// for the template browser.
//
//   node scripts/workflow_thumbnails.mjs --url http://127.0.0.1:PORT --out DIR [--export] [--shots] WORKFLOW.json ...
//
// Each UI-format workflow is loaded into the page (app.loadGraphData, as opening the file does). Then
//   --export  runs the frontend's own Export and Export (API) commands (Comfy.ExportWorkflow / Comfy.ExportWorkflowAPI)
//             and keeps what they download: DIR/NAME.json (the workflow as the frontend writes it: copy it over
//             example_workflows/NAME.json) and DIR/NAME.api.json (the /prompt format the frontend derives);
//   --shots   (the default without --export) zooms the canvas so the whole graph (nodes and groups) fits the viewport
//             and writes DIR/NAME.png, the graph's bounding box as drawn; scale it to 640 pixels wide and save it as
//             example_workflows/NAME.jpg.
// DIR/report.json (also printed) records the frontend version and what was written. Env: PLAYWRIGHT_CORE_DIR (the
// playwright-core package folder, else normal module resolution), CHROMIUM (default /usr/bin/chromium).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadPlaywright } from './playwright_loader.mjs';
import { parseArgs } from 'node:util';

const { values: args, positionals: files } = parseArgs({
  options: { url: { type: 'string' }, out: { type: 'string' }, export: { type: 'boolean' }, shots: { type: 'boolean' } },
  allowPositionals: true });
if (!args.url || !args.out || files.length === 0) {
  console.error('usage: node workflow_thumbnails.mjs --url http://127.0.0.1:PORT --out DIR [--export] [--shots] WORKFLOW.json ...');
  process.exit(2);
}
const shots = args.shots || !args.export;
const VIEWPORT = { width: 2400, height: 1200 };
const MARGIN = 20; // screen pixels kept around the graph
const BROWSER_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run'];

/** Run a frontend command that downloads a file and save that file as `out`. */
async function downloadFrom(page, command, out) {
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 30000 }),
    page.evaluate((id) => window.app.extensionManager.command.execute(id), command),
  ]);
  await download.saveAs(out);
}

/** Zoom the canvas onto the whole graph; returns the screen rectangle it covers. */
async function fitGraph(page) {
  return page.evaluate(([margin]) => {
    const app = window.app;
    const canvas = app.canvas;
    const rect = canvas.canvas.getBoundingClientRect();
    const title = window.LiteGraph.NODE_TITLE_HEIGHT;
    const boxes = app.graph._nodes.map((n) => [n.pos[0], n.pos[1] - title, n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
    for (const g of app.graph._groups ?? []) {
      const b = g._bounding ?? g.bounding;
      boxes.push([b[0], b[1], b[0] + b[2], b[1] + b[3]]);
    }
    const x0 = Math.min(...boxes.map((b) => b[0])); const y0 = Math.min(...boxes.map((b) => b[1]));
    const x1 = Math.max(...boxes.map((b) => b[2])); const y1 = Math.max(...boxes.map((b) => b[3]));
    const scale = Math.min((rect.width - 2 * margin) / (x1 - x0), (rect.height - 2 * margin) / (y1 - y0), 1);
    canvas.ds.scale = scale;
    canvas.ds.offset = [margin / scale - x0, margin / scale - y0];
    canvas.setDirty(true, true);
    canvas.draw(true, true);
    return { x: rect.left, y: rect.top, width: Math.ceil((x1 - x0) * scale + 2 * margin),
      height: Math.ceil((y1 - y0) * scale + 2 * margin) };
  }, [MARGIN]);
}

const { chromium } = await loadPlaywright();
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cf-thumbnails-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, viewport: VIEWPORT,
  acceptDownloads: true, args: BROWSER_ARGS });
const report = { ok: true, frontend_version: null, written: {}, console_errors: [] };
try {
  const page = context.pages()[0] ?? await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') report.console_errors.push(m.text()); });
  await page.goto(args.url, { waitUntil: 'load', timeout: 60000 });
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph && window.app.extensionManager?.command,
    null, { timeout: 60000 });
  report.frontend_version = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  // Export asks for a file name only when this setting is on; the name is the workflow's own then
  await page.evaluate(() => window.app.extensionManager.setting.set('Comfy.PromptFilename', false));
  fs.mkdirSync(args.out, { recursive: true });
  for (const file of files) {
    const name = path.basename(file, '.json');
    const workflow = JSON.parse(fs.readFileSync(file, 'utf8'));
    await page.evaluate(async ([wf, n]) => { // as opening the file does, without the missing-file dialogs
      await window.app.loadGraphData(wf, true, true, n, { showMissingModelsDialog: false, showMissingNodesDialog: false });
    }, [workflow, name]);
    await page.waitForTimeout(1500); // widgets and DOM widgets settle
    const written = {};
    if (args.export) {
      written.workflow = path.join(args.out, `${name}.json`);
      await downloadFrom(page, 'Comfy.ExportWorkflow', written.workflow);
      written.api = path.join(args.out, `${name}.api.json`);
      await downloadFrom(page, 'Comfy.ExportWorkflowAPI', written.api);
    }
    if (shots) {
      const clip = await fitGraph(page);
      await page.waitForTimeout(500);
      written.png = path.join(args.out, `${name}.png`);
      await page.screenshot({ path: written.png, clip });
    }
    report.written[name] = written;
  }
} catch (err) {
  report.ok = false;
  report.error = String(err?.stack ?? err);
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
fs.mkdirSync(args.out, { recursive: true });
fs.writeFileSync(path.join(args.out, 'report.json'), JSON.stringify(report, null, 2));
console.log(JSON.stringify(report, null, 2));
process.exit(report.ok ? 0 : 1);
