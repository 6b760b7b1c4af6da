import { type Command, InvalidArgumentError } from 'commander';
import { CliError, EXIT, runCommand } from '../api-client.ts';
import { controlPool, createDriftService, type Db, type DriftReport } from '../control-db.ts';
import { defaultDataDir } from '../options.ts';
import { attachedTable, doctorAttached } from './doctor-attached.ts';

const NODE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

function nodeOption(v: string): string {
  if (!NODE_NAME.test(v)) throw new InvalidArgumentError('not a node name');
  return v;
}

function secondsOption(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 600) throw new InvalidArgumentError('must be 1–600 seconds');
  return n;
}

export type DoctorOutcome = {
  reports: DriftReport[];
  /** Nodes that did not answer in time (or failed the check). */
  errors: { node: string; message: string }[];
};

/** Runs the drift check (or repair) on one node or every active node, one after another. */
export async function runDoctor(
  db: Db,
  opts: { node?: string | undefined; fix: boolean; timeoutMs: number },
): Promise<DoctorOutcome> {
  const drift = createDriftService({ db });
  let nodes = (await drift.listNodes()).filter((n) => n.status === 'active');
  if (opts.node !== undefined) {
    const n = await drift.findNode(opts.node);
    if (!n) throw new CliError(`no node named ${opts.node}`, EXIT.notFound);
    nodes = [n];
  }
  const out: DoctorOutcome = { reports: [], errors: [] };
  for (const n of nodes) {
    try {
      out.reports.push(await drift.check(n.id, { fix: opts.fix, timeoutMs: opts.timeoutMs }));
    } catch (err) {
      out.errors.push({ node: n.name, message: (err as Error).message });
    }
  }
  return out;
}

function table(o: DoctorOutcome): string {
  const lines: string[] = [];
  for (const r of o.reports) {
    const fixed = r.fix ? ` · repaired: ${r.fixed.length ? r.fixed.join(', ') : 'nothing'}` : '';
    lines.push(
      `node ${r.node.name}: ${r.findings.length ? `${r.findings.length} finding(s)` : 'clean'}${fixed}`,
    );
    const w = Math.max(4, ...r.findings.map((f) => f.kind.length));
    const ow = Math.min(60, Math.max(6, ...r.findings.map((f) => f.object.length)));
    if (r.findings.length) lines.push(`  ${'KIND'.padEnd(w)}  ${'OBJECT'.padEnd(ow)}  DETAIL`);
    for (const f of r.findings) lines.push(`  ${f.kind.padEnd(w)}  ${f.object.padEnd(ow)}  ${f.detail}`);
  }
  for (const e of o.errors) lines.push(`node ${e.node}: NOT CHECKED — ${e.message}`);
  if (!o.reports.length && !o.errors.length) lines.push('no active node');
  return `${lines.join('\n')}\n`;
}

/**
 * `bulwark doctor [--fix] [--json] [--node NAME]`: run on the server host (straight through the
 * control DB, like `admin create-key`). Exit 0: every node checked and clean; 1: findings (left
 * after a --fix) or a node not checked; 2: bad usage; 6: no such node.
 */
export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('Compare each node with the desired state (roles, grants, databases); --fix repairs ours')
    .option('--node <name>', 'only this node (default: every active node)', nodeOption)
    .option('--fix', 'repair what is ours (PUBLIC privileges, grants); foreign objects are only reported')
    .option('--timeout <seconds>', 'how long to wait for each node', secondsOption, 30)
    .option('--data-dir <dir>', 'data dir of a `bulwark up` (env BULWARK_DATA_DIR)', defaultDataDir())
    .option('--json', 'machine-readable output: {"nodes":[{node,fix,fixed,findings}],"errors":[…]}')
    .option(
      '--attached <file>',
      "check the attached databases of this agent file instead (run on the agent's host; ADR 0031)",
    )
    .addHelpText(
      'after',
      '\nExit codes: 0 clean · 1 findings or a node not checked · 2 bad usage · 6 no such node',
    )
    .action(
      (o: {
        node?: string;
        fix?: boolean;
        timeout: number;
        dataDir: string;
        json?: boolean;
        attached?: string;
      }) =>
        runCommand(o.json, async () => {
          if (o.attached !== undefined) {
            const d = await doctorAttached(o.attached);
            process.stdout.write(o.json ? `${JSON.stringify(d)}\n` : attachedTable(d));
            if (d.refused.length > 0 || d.checks.some((c) => !c.ok)) process.exit(EXIT.error);
            return;
          }
          const pool = controlPool(o.dataDir, 'bulwark-doctor', 2);
          let outcome: DoctorOutcome;
          try {
            outcome = await runDoctor(pool, {
              node: o.node,
              fix: Boolean(o.fix),
              timeoutMs: o.timeout * 1000,
            });
          } finally {
            await pool.end().catch(() => {});
          }
          if (o.json) {
            process.stdout.write(`${JSON.stringify({ nodes: outcome.reports, errors: outcome.errors })}\n`);
          } else {
            process.stdout.write(table(outcome));
          }
          const dirty = outcome.errors.length > 0 || outcome.reports.some((r) => r.findings.length > 0);
          if (dirty) process.exit(EXIT.error);
        }),
    );
}
