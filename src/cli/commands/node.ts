import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError } from 'commander';
import { DEFAULT_PORTS } from '../../embedded/layout.ts';
import { CliError, EXIT, parseServerUrl, runCommand } from '../api-client.ts';
import { clientFromCredentials } from '../credentials.ts';
import { defaultDataDir, exitWithConfigErrors, portOption } from '../options.ts';
import { formatTable, terminalSafe } from '../output.ts';

/** A node as GET /v1/nodes answers it (the fields shown here). */
type Node = {
  id: string;
  name: string;
  status: string;
  health: string;
  cordoned: boolean;
  heartbeat_age_seconds: number | null;
  database_count: number;
  reserved_databases?: number;
  agent_version: string | null;
  pooler: { host: string; port: number } | null;
  capacity: { budget: number; committed: number; free: number };
  drift: { checked_at: string; findings: number } | null;
};

const COLUMNS = [
  { key: 'name', title: 'name' },
  { key: 'health', title: 'health' },
  { key: 'cordoned', title: 'cordoned' },
  { key: 'heartbeat', title: 'heartbeat' },
  { key: 'databases', title: 'databases' },
  { key: 'reserved', title: 'reserved' },
  { key: 'free', title: 'free conns' },
  { key: 'pooler', title: 'pooler' },
  { key: 'version', title: 'version' },
  { key: 'id', title: 'id' },
];

const row = (n: Node) => ({
  id: n.id,
  name: terminalSafe(n.name),
  health: n.health,
  cordoned: n.cordoned ? 'yes' : 'no',
  heartbeat: n.heartbeat_age_seconds === null ? null : `${n.heartbeat_age_seconds}s ago`,
  databases: n.database_count,
  reserved: n.reserved_databases ?? 0,
  free: `${n.capacity.free}/${n.capacity.budget}`,
  pooler: n.pooler ? terminalSafe(`${n.pooler.host}:${n.pooler.port}`) : null,
  version: n.agent_version ? terminalSafe(n.agent_version) : null,
});

function nodeRef(v: string): string {
  if (!/^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9_-]{0,62})$/i.test(v))
    throw new InvalidArgumentError("must be a node's name or id");
  return v;
}

function hostOption(v: string): string {
  if (!/^[A-Za-z0-9.:_-]{1,255}$/.test(v))
    throw new InvalidArgumentError('must be a host name or an IP address');
  return v;
}

const print = (nodes: Node[], json: boolean | undefined) => {
  if (json) process.stdout.write(`${JSON.stringify(nodes.length === 1 ? nodes[0] : nodes, null, 2)}\n`);
  else process.stdout.write(`${formatTable(nodes.map(row), COLUMNS)}\n`);
};

/** `bulwark node …`: start a data-plane node on this machine, and the nodes API (platform admins). */
export function registerNode(program: Command): void {
  const node = program.command('node').description('Data-plane nodes: start one here, list and manage them');

  node
    .command('up')
    .description(
      'Start a data-plane node on this machine (PostgreSQL, PgBouncer, an agent; no server). ' +
        'It enrolls once with --token and keeps its own credentials in the data dir',
    )
    .requiredOption('--server <url>', "the control plane's URL")
    .option('--token <token>', 'one-time enrollment token (first start only)')
    .option('--token-file <file>', 'read the enrollment token from this file instead')
    .option('--data-dir <dir>', 'where the node keeps everything (env BULWARK_DATA_DIR)', defaultDataDir())
    .option(
      '--pooler-host <host>',
      'address PgBouncer listens on and tenants are told',
      hostOption,
      '127.0.0.1',
    )
    .option('--pooler-port <port>', 'PgBouncer port', portOption, DEFAULT_PORTS.pooler)
    .option('--pg-port <port>', 'PostgreSQL port (loopback only)', portOption, DEFAULT_PORTS.postgres)
    .option('--agent-config <file>', "the agent's JSON config file (its environment overrides it)")
    .action(
      async (o: {
        server: string;
        token?: string;
        tokenFile?: string;
        dataDir: string;
        poolerHost: string;
        poolerPort: number;
        pgPort: number;
        agentConfig?: string;
      }) => {
        const { nodeUp } = await import('../../embedded/node-up.ts');
        const { loadUpConfig } = await import('../../embedded/up-config.ts');
        const { PreflightError } = await import('../../embedded/preflight.ts');
        const config = loadUpConfig({ env: process.env });
        if (!config.ok) exitWithConfigErrors('bulwark node up', config.errors);
        try {
          const serverUrl = parseServerUrl(o.server);
          const token = o.tokenFile ? readFileSync(o.tokenFile, 'utf8').trim() : o.token;
          if (token !== undefined && !/^bwe_[A-Za-z0-9_-]{43}$/.test(token))
            throw new CliError('--token: not an enrollment token (bwe_…)', EXIT.usage);
          const code = await nodeUp({
            dataDir: o.dataDir,
            serverUrl,
            token,
            poolerHost: o.poolerHost,
            poolerPort: o.poolerPort,
            pgPort: o.pgPort,
            out: (line) => process.stdout.write(`${line}\n`),
            config: config.config,
            env: process.env,
            agentConfigFile: o.agentConfig,
          });
          process.exit(code);
        } catch (err) {
          process.stderr.write(`bulwark node up: ${(err as Error).message}\n`);
          process.exit(
            err instanceof PreflightError ? err.exitCode : err instanceof CliError ? err.exitCode : 1,
          );
        }
      },
    );

  node
    .command('list')
    .description('Every node: health, heartbeat, databases, free connections, cordon (platform admins)')
    .option('--json', 'machine-readable output')
    .action((o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const r = await clientFromCredentials().request<{ items: Node[] }>('GET', '/v1/nodes');
        if (o.json) process.stdout.write(`${JSON.stringify(r.items, null, 2)}\n`);
        else print(r.items, false);
      }),
    );

  node
    .command('show <node>')
    .description('One node by name or id (platform admins)')
    .option('--json', 'machine-readable output')
    .action((ref: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const n = await clientFromCredentials().request<Node>(
          'GET',
          `/v1/nodes/${encodeURIComponent(nodeRef(ref))}`,
        );
        print([n], o.json);
      }),
    );

  for (const [verb, what] of [
    ['cordon', 'No new databases on the node (those on it stay)'],
    ['uncordon', 'Placement may choose the node again'],
    ['decommission', 'Retire a node without databases: disabled, its agent credentials revoked'],
  ] as const) {
    const cmd = node
      .command(`${verb} <node>`)
      .description(`${what} (platform admins; audited)`)
      .option('--json', 'machine-readable output');
    if (verb === 'decommission')
      cmd.option(
        '--force',
        'revoke a lost or untrusted node even though hosted databases remain on it (they stay there, on a disabled node)',
      );
    cmd.action((ref: string, o: { json?: boolean; force?: boolean }) =>
      runCommand(o.json, async () => {
        const n = await clientFromCredentials().request<Node>(
          'POST',
          `/v1/nodes/${encodeURIComponent(nodeRef(ref))}/${verb}`,
          ...(o.force ? [{ force: true }] : []),
        );
        print([n], o.json);
      }),
    );
  }

  node
    .command('enroll <name>')
    .description('A one-time enrollment token for a new node, through the API (platform admins)')
    .option('--json', 'machine-readable output: {"node_name","token","expires_at"}')
    .action((name: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        if (!/^[a-z][a-z0-9_-]{0,62}$/.test(name))
          throw new CliError(
            'the node name: a-z, 0-9, _ and -, starting with a letter (at most 63)',
            EXIT.usage,
          );
        const e = await clientFromCredentials().request<{
          node_name: string;
          token: string;
          expires_at: string;
        }>('POST', '/v1/nodes/enrollments', { name });
        if (o.json) {
          process.stdout.write(`${JSON.stringify(e)}\n`);
          return;
        }
        process.stderr.write(
          `Enrollment for node "${name}", single use, expires ${e.expires_at}.\nThe token (shown only once):\n`,
        );
        process.stdout.write(`${e.token}\n`);
      }),
    );
}
