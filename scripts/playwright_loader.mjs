// Where the browser scripts get playwright-core: $PLAYWRIGHT_CORE_DIR (a node_modules folder or the package itself),
// else a normal import.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

export async function loadPlaywright() {
  const dir = process.env.PLAYWRIGHT_CORE_DIR;
  if (dir) {
    const pkg = fs.existsSync(path.join(dir, 'package.json')) ? dir : path.join(dir, 'playwright-core');
    return createRequire(import.meta.url)(path.resolve(pkg));
  }
  return import('playwright-core');
}
