import { once } from 'node:events';
import { createReadStream, createWriteStream, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import pg from 'pg';
import { dataLayout } from '../../embedded/layout.ts';
import { readSecretFile } from '../../embedded/secrets.ts';
import {
  ExportFormatError,
  exportLines,
  keyIdOfPem,
  keyMap,
  parseCheckpointLines,
  parseExport,
  publicKeysOf,
  type VerifyReport,
  verifyDatabase,
  verifyExport,
} from '../control-db.ts';
import { defaultDataDir } from '../options.ts';

type VerifyOpts = {
  dataDir: string;
  file?: string;
  publicKey?: string[];
  checkpointFile?: string;
  json?: boolean;
};

function fail(message: string, code = 2): never {
  process.stderr.write(`bulwark audit: ${message}\n`);
  process.exit(code);
}

async function controlDb(dataDir: string): Promise<pg.Client> {
  const layout = dataLayout(dataDir);
  const urlFile = path.join(layout.secrets, 'control-database-url');
  if (!existsSync(urlFile)) fail(`no Bulwark data dir at ${layout.root} (missing ${urlFile})`);
  const db = new pg.Client({
    connectionString: readSecretFile(urlFile),
    application_name: 'bulwark-audit-cli',
  });
  try {
    await db.connect();
  } catch (err) {
    fail(`cannot reach the control database (is \`bulwark up\` running?): ${(err as Error).message}`, 1);
  }
  return db;
}

function print(r: VerifyReport & { scope?: string; complete?: boolean }, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
    return;
  }
  const from = r.anchor_seq > 0 ? `from signed anchor ${r.anchor_seq}` : 'from genesis';
  if (r.ok) {
    const scope = r.scope === 'account' ? ' (account export: links checked, completeness not provable)' : '';
    process.stdout.write(
      `audit log OK${scope}: ${r.events} events verified ${from} to seq ${r.head_seq}, ` +
        `${r.checkpoints_checked} checkpoint(s) matched, ${r.pending} pending\n` +
        `signatures by key id(s): ${r.key_ids.join(', ') || 'none'} — compare with the keys you trust\n`,
    );
  } else if (r.failure) {
    process.stdout.write(
      `audit log BROKEN at seq ${r.failure.seq}: ${r.failure.reason} — ${r.failure.detail}\n` +
        `(verified ${from}; ${r.events} events before the break)\n`,
    );
  } else {
    process.stdout.write('audit log NOT VERIFIED: the export is incomplete\n');
  }
}

async function* fileLines(file: string): AsyncGenerator<string> {
  const rl = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
  for await (const line of rl) yield line;
}

export function registerAudit(program: Command): void {
  const audit = program.command('audit').description('The tamper-evident audit log');

  audit
    .command('verify')
    .description(
      'Check the hash chain and signed checkpoints; names the first broken event (exit 1 if broken)',
    )
    .option(
      '--data-dir <dir>',
      'data dir of a `bulwark up` on this host (env BULWARK_DATA_DIR)',
      defaultDataDir(),
    )
    .option('--file <export.jsonl>', 'verify an export file offline instead of the database')
    .option('--public-key <pem-file...>', 'trusted public key(s) (PEM) in addition to those in the export')
    .option('--checkpoint-file <file>', 'external checkpoint file (JSON lines) to check against as well')
    .option('--json', 'machine-readable output')
    .action(async (o: VerifyOpts) => {
      const extraKeys = new Map<string, string>();
      for (const f of o.publicKey ?? []) {
        try {
          const pem = readFileSync(f, 'utf8');
          extraKeys.set(keyIdOfPem(pem), pem);
        } catch {
          fail(`${f} is not an Ed25519 public key (PEM)`);
        }
      }
      let extraCheckpoints: ReturnType<typeof parseCheckpointLines> = [];
      if (o.checkpointFile) {
        try {
          extraCheckpoints = parseCheckpointLines(readFileSync(o.checkpointFile, 'utf8'));
        } catch (err) {
          fail((err as Error).message);
        }
      }
      let report: VerifyReport & { scope?: string; complete?: boolean };
      if (o.file) {
        if (!existsSync(o.file)) fail(`${o.file} does not exist`);
        try {
          report = await verifyExport(await parseExport(fileLines(o.file)), { extraKeys, extraCheckpoints });
        } catch (err) {
          if (err instanceof ExportFormatError) fail(`${o.file}: ${err.message}`, 1);
          throw err;
        }
      } else {
        const layout = dataLayout(o.dataDir);
        const keys = new Map([...keyMap(publicKeysOf(layout.server)), ...extraKeys]);
        const db = await controlDb(o.dataDir);
        try {
          report = await verifyDatabase(db, keys, extraCheckpoints);
        } finally {
          await db.end().catch(() => {});
        }
      }
      print(report, Boolean(o.json));
      process.exit(report.ok ? 0 : 1);
    });

  audit
    .command('export')
    .description('Write the whole chain (with checkpoints and public keys) as JSON Lines, verifiable offline')
    .option(
      '--data-dir <dir>',
      'data dir of a `bulwark up` on this host (env BULWARK_DATA_DIR)',
      defaultDataDir(),
    )
    .option('--output <file>', 'write here (mode 0600) instead of standard output')
    .action(async (o: { dataDir: string; output?: string }) => {
      const layout = dataLayout(o.dataDir);
      const publicKeys = publicKeysOf(layout.server);
      const db = await controlDb(o.dataDir);
      const out = o.output ? createWriteStream(o.output, { mode: 0o600, flags: 'wx' }) : process.stdout;
      let n = 0;
      try {
        for await (const line of exportLines(db, { accountId: null, publicKeys })) {
          if (!out.write(`${line}\n`)) await once(out, 'drain');
          n++;
        }
      } finally {
        await db.end().catch(() => {});
      }
      if (o.output) {
        await new Promise<void>((resolve, reject) =>
          (out as ReturnType<typeof createWriteStream>).end((e?: Error) => (e ? reject(e) : resolve())),
        );
        process.stderr.write(`wrote ${n} lines to ${o.output}\n`);
      }
      process.exit(0);
    });
}
