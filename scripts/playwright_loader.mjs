// Where the browser scripts get playwright-core: $PLAYWRIGHT_CORE_DIR, else a normal import. The folder may be the
// package itself, a folder where `npm install playwright-core` ran (its node_modules/playwright-core), or a
// node_modules folder (its playwright-core).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

/** The playwright-core package folder under `dir`, or null. */
export function playwrightCoreFolder(dir) {
  for (const candidate of [dir, path.join(dir, 'node_modules', 'playwright-core'), path.join(dir, 'playwright-core')]) {
    const manifest = path.join(candidate, 'package.json');
    if (fs.existsSync(manifest) && JSON.parse(fs.readFileSync(manifest, 'utf8')).name === 'playwright-core') {
      return path.resolve(candidate);
    }
  }
  return null;
}

export async function loadPlaywright() {
  const dir = process.env.PLAYWRIGHT_CORE_DIR;
  if (dir) {
    const pkg = playwrightCoreFolder(dir);
    if (!pkg) throw new Error(`PLAYWRIGHT_CORE_DIR=${dir} holds no playwright-core (npm install playwright-core there)`);
    return createRequire(import.meta.url)(pkg);
  }
  return import('playwright-core');
}
