/** `npm run bench -- <name> [args]` runs bench/<name>.bench.ts; with no name, lists them. */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';

const dir = import.meta.dirname;
const names = readdirSync(dir)
  .filter((f) => f.endsWith('.bench.ts'))
  .map((f) => f.slice(0, -'.bench.ts'.length))
  .sort();
const [name, ...args] = process.argv.slice(2);
if (!name || !names.includes(name)) {
  process.stdout.write(`usage: npm run bench -- <name> [args]\nbenchmarks: ${names.join(', ')}\n`);
  process.exit(name ? 2 : 0);
}
const r = spawnSync(process.execPath, [path.join(dir, `${name}.bench.ts`), ...args], { stdio: 'inherit' });
process.exit(r.status ?? 1);
