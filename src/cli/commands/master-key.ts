import type { Command } from 'commander';
import pg from 'pg';
import { dataLayout } from '../../embedded/layout.ts';
import { CliError, EXIT, runCommand } from '../api-client.ts';
import {
  addKeyToKeyringFile,
  controlDatabaseUrl,
  createSecretBox,
  loadKeyringFile,
  resealPasswords,
} from '../control-db.ts';
import { defaultDataDir } from '../options.ts';
import { cliSetting } from '../settings.ts';

type Options = { dataDir: string; keyFile?: string; json?: boolean };

/** Keyring: --key-file, else BULWARK_MASTER_KEY_FILE, else the data dir's. Control DB likewise. */
function locate(o: Options): { keyFile: string; databaseUrl: string } {
  const layout = dataLayout(o.dataDir);
  const keyFile = o.keyFile ?? cliSetting('masterKeyFile') ?? layout.masterKeyring;
  const databaseUrl = controlDatabaseUrl(o.dataDir);
  return { keyFile, databaseUrl };
}

async function reseal(o: Options, addKey: boolean): Promise<void> {
  const { keyFile, databaseUrl } = locate(o);
  let keyring: ReturnType<typeof loadKeyringFile>;
  try {
    keyring = addKey ? addKeyToKeyringFile(keyFile).keyring : loadKeyringFile(keyFile);
  } catch (err) {
    throw new CliError(`keyring ${keyFile}: ${(err as Error).message}`, EXIT.usage);
  }
  const box = createSecretBox(keyring);
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 1, application_name: 'bulwark-master-key' });
  pool.on('error', () => {});
  try {
    const r = await resealPasswords(pool, box);
    const out = { active_key: box.activeKeyId, keys: [...keyring.keys.keys()], ...r };
    process.stdout.write(
      o.json
        ? `${JSON.stringify(out, null, 2)}\n`
        : `active key ${out.active_key}; re-sealed ${r.resealed} of ${r.checked} stored passwords\n` +
            'Running servers follow the keyring file. Old keys stay in it until you remove them by hand.\n',
    );
  } finally {
    await pool.end();
  }
}

export function registerMasterKey(program: Command): void {
  const mk = program
    .command('master-key')
    .description('The keyring that seals database passwords at rest (run on the server host)');
  const common = (c: Command) =>
    c
      .option('--data-dir <dir>', 'data dir of a `bulwark up` (env BULWARK_DATA_DIR)', defaultDataDir())
      .option('--key-file <file>', 'keyring file (default: env BULWARK_MASTER_KEY_FILE or the data dir)')
      .option('--json', 'machine-readable output');
  common(
    mk.command('rotate').description('Add a new active key and re-seal every stored password with it'),
  ).action((o: Options) => runCommand(o.json, () => reseal(o, true)));
  common(
    mk
      .command('reseal')
      .description('Re-seal what an interrupted rotation left under an older key (no new key)'),
  ).action((o: Options) => runCommand(o.json, () => reseal(o, false)));
}
