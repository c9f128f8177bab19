// Screenshot example workflows in a running ComfyUI page with headless Chromium (their template-browser thumbnails):
//
//   node scripts/workflow_thumbnails.mjs --url http://127.0.0.1:PORT --out DIR example_workflows/NAME.json ...
//
// Loads each UI-format workflow into the page, zooms the canvas so the whole graph (nodes and groups) fits the
// viewport, and writes DIR/NAME.png: the graph's bounding box as drawn on the canvas. Scale the PNG down to 640
// pixels wide and save it as example_workflows/NAME.jpg (see scripts/build_workflows.py). Env: PLAYWRIGHT_CORE_DIR
// (the playwright-core package folder, else normal module resolution), CHROMIUM (default /usr/bin/chromium).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadPlaywright } from './playwright_loader.mjs';
import { parseArgs } from 'node:util';

const { values: args, positionals: files } = parseArgs({
  options: { url: { type: 'string' }, out: { type: 'string' } }, allowPositionals: true });
if (!args.url || !args.out || files.length === 0) {
  console.error('usage: node workflow_thumbnails.mjs --url http://127.0.0.1:PORT --out DIR WORKFLOW.json ...');
  process.exit(2);
}
const VIEWPORT = { width: 2400, height: 1200 };
const MARGIN = 20; // screen pixels kept around the graph


const { chromium } = await loadPlaywright();
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cf-thumbnails-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, viewport: VIEWPORT });
const report = { ok: true, written: {}, console_errors: [] };
try {
  const page = context.pages()[0] ?? await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') report.console_errors.push(m.text()); });
  await page.goto(args.url, { waitUntil: 'load', timeout: 60000 });
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph, null, { timeout: 60000 });
  fs.mkdirSync(args.out, { recursive: true });
  for (const file of files) {
    const name = path.basename(file, '.json');
    const workflow = JSON.parse(fs.readFileSync(file, 'utf8'));
    await page.evaluate(async ([wf, n]) => { await window.app.loadGraphData(wf, true, true, n); }, [workflow, name]);
    await page.waitForTimeout(1500); // widgets and DOM widgets settle
    const clip = await page.evaluate(([margin]) => {
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
    await page.waitForTimeout(500);
    const out = path.join(args.out, `${name}.png`);
    await page.screenshot({ path: out, clip });
    report.written[name] = out;
  }
} catch (err) {
  report.ok = false;
  report.error = String(err?.stack ?? err);
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
console.log(JSON.stringify(report, null, 2));
process.exit(report.ok ? 0 : 1);
