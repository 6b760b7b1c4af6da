/**
 * The import rules between Bulwark's processes (issue 11, "Boundaries"), checked over every `.ts`
 * file under src/ (tests beside their modules included), so a wrong arrow fails the suite:
 *
 *   server   ↛ agent, cli
 *   agent    ↛ server, embedded, cli
 *   cli      ↛ agent; ↛ server except through src/cli/control-db.ts, the operator commands' one door
 *   embedded ↛ cli (it may wire server and agent: it starts both)
 *   shared   ↛ anything in this repository outside src/shared
 *
 * Every area may import shared. Packages and `node:` modules are not arrows of the house and are
 * not checked. No database is needed.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import ts from 'typescript';

const repoRoot = path.resolve(import.meta.dirname, '..');

type Area = 'server' | 'agent' | 'cli' | 'embedded' | 'shared';
const AREAS: readonly Area[] = ['server', 'agent', 'cli', 'embedded', 'shared'];

/** What each area may not import (by the importer's area); `shared` may import only itself. */
const FORBIDDEN: Record<Area, readonly Area[]> = {
  server: ['agent', 'cli'],
  agent: ['server', 'embedded', 'cli'],
  cli: ['agent', 'server'],
  embedded: ['cli'],
  shared: [],
};

/** The one CLI module that may reach the server's code (control database, key files). */
const CLI_CONTROL_DOOR = 'src/cli/control-db.ts';

/** Named exceptions, each with its reason. A stale entry (no such import any more) fails too. */
export const EXCEPTIONS: readonly { from: string; to: string; reason: string }[] = [
  {
    from: 'src/cli/commands/server.ts',
    to: 'src/server/config.ts',
    reason: '`bulwark server` is the server process entry point: it loads its config',
  },
  {
    from: 'src/cli/commands/server.ts',
    to: 'src/server/main.ts',
    reason: '`bulwark server` is the server process entry point: it starts it',
  },
  {
    from: 'src/cli/commands/agent.ts',
    to: 'src/agent/config.ts',
    reason: '`bulwark agent` is the agent process entry point: it loads its config',
  },
  {
    from: 'src/cli/commands/agent.ts',
    to: 'src/agent/main.ts',
    reason: '`bulwark agent` is the agent process entry point: it starts it',
  },
  {
    from: 'src/cli/commands/doctor-attached.ts',
    to: 'src/agent/attached/attached-check.ts',
    reason: "`bulwark doctor --attached` runs the agent's checks on the agent host, with its file",
  },
  {
    from: 'src/cli/commands/doctor-attached.ts',
    to: 'src/agent/attached/attached-config.ts',
    reason: "`bulwark doctor --attached` reads the agent's attached-databases file the agent way",
  },
];

export type Arrow = { from: string; to: string; line: number };

function areaOf(rel: string): Area | null {
  const [top, area] = rel.split('/');
  return top === 'src' && AREAS.includes(area as Area) ? (area as Area) : null;
}

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...tsFiles(p));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Every relative import (static, re-export, type-only, dynamic) of every .ts file under root/src. */
export function projectArrows(root: string): Arrow[] {
  const arrows: Arrow[] = [];
  for (const file of tsFiles(path.join(root, 'src'))) {
    const text = fs.readFileSync(file, 'utf8');
    const from = path.relative(root, file).split(path.sep).join('/');
    const source = ts.createSourceFile(from, text, ts.ScriptTarget.Latest);
    for (const ref of ts.preProcessFile(text, true, true).importedFiles) {
      if (!ref.fileName.startsWith('.')) continue;
      const to = path
        .relative(root, path.resolve(path.dirname(file), ref.fileName))
        .split(path.sep)
        .join('/');
      arrows.push({ from, to, line: source.getLineAndCharacterOfPosition(ref.pos).line + 1 });
    }
  }
  return arrows;
}

/** The arrows that break a rule, each as `file:line imports target (why)`; and unused exceptions. */
export function importViolations(
  root: string,
  exceptions = EXCEPTIONS,
): { broken: string[]; stale: string[] } {
  const broken: string[] = [];
  const used = new Set<(typeof exceptions)[number]>();
  for (const a of projectArrows(root)) {
    const fromArea = areaOf(a.from);
    if (!fromArea) continue;
    const toArea = areaOf(a.to);
    let why: string | null = null;
    if (fromArea === 'shared') {
      if (toArea !== 'shared') why = 'src/shared imports nothing outside src/shared';
    } else if (toArea && FORBIDDEN[fromArea].includes(toArea)) {
      why = `src/${fromArea} may not import src/${toArea}`;
      if (fromArea === 'cli' && toArea === 'server') {
        if (a.from === CLI_CONTROL_DOOR) why = null;
        else why = `the CLI reaches src/server only through ${CLI_CONTROL_DOOR}`;
      }
    }
    if (!why) continue;
    const exception = exceptions.find((e) => e.from === a.from && e.to === a.to);
    if (exception) {
      used.add(exception);
      continue;
    }
    broken.push(`${a.from}:${a.line} imports ${a.to} (${why})`);
  }
  const stale = exceptions.filter((e) => !used.has(e)).map((e) => `${e.from} -> ${e.to}`);
  return { broken: broken.sort(), stale };
}

test('no import crosses a process boundary the rules forbid', () => {
  const { broken, stale } = importViolations(repoRoot);
  assert.deepEqual(broken, [], `forbidden imports:\n  ${broken.join('\n  ')}`);
  assert.deepEqual(stale, [], `exceptions no import uses any more (remove them):\n  ${stale.join('\n  ')}`);
});

test('the rules see a forbidden arrow of each kind, with its file and line', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'import-rules-'));
  try {
    const put = (rel: string, text: string) => {
      fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
      fs.writeFileSync(path.join(root, rel), text);
    };
    put('src/shared/a.ts', "import { z } from 'zod';\nimport { x } from '../server/x.ts';\n");
    put('src/server/x.ts', "import type { Y } from '../agent/y.ts';\nexport const x = 1;\n");
    put(
      'src/agent/y.ts',
      "// import '../server/x.ts' in a comment is no arrow\nimport '../embedded/e.ts';\n",
    );
    put('src/cli/c.ts', "const m = await import('../agent/y.ts');\nimport { x } from '../server/x.ts';\n");
    put('src/cli/control-db.ts', "export { x } from '../server/x.ts';\n");
    put('src/embedded/e.ts', "import '../server/x.ts';\nimport '../agent/y.ts';\nimport '../shared/a.ts';\n");
    const { broken, stale } = importViolations(root, [
      { from: 'src/cli/old.ts', to: 'src/agent/y.ts', reason: 'gone' },
    ]);
    assert.deepEqual(broken, [
      'src/agent/y.ts:2 imports src/embedded/e.ts (src/agent may not import src/embedded)',
      'src/cli/c.ts:1 imports src/agent/y.ts (src/cli may not import src/agent)',
      'src/cli/c.ts:2 imports src/server/x.ts (the CLI reaches src/server only through src/cli/control-db.ts)',
      'src/server/x.ts:1 imports src/agent/y.ts (src/server may not import src/agent)',
      'src/shared/a.ts:2 imports src/server/x.ts (src/shared imports nothing outside src/shared)',
    ]);
    assert.deepEqual(stale, ['src/cli/old.ts -> src/agent/y.ts']);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
