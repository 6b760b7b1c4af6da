/**
 * Where `bulwark login` keeps the server URL and API key: `$XDG_CONFIG_HOME/bulwark/credentials.json`
 * (or `~/.config/bulwark/credentials.json`), file 0600 in a 0700 directory. `BULWARK_URL` and
 * `BULWARK_KEY` override what is stored (for CI, where nothing should be written to disk).
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type ApiClient, CliError, createApiClient, EXIT, parseServerUrl } from './api-client.ts';
import { cliSetting } from './settings.ts';

export type Credentials = { url: string; key: string };

export function credentialsPath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || path.join(env.HOME || os.homedir(), '.config');
  return path.join(base, 'bulwark', 'credentials.json');
}

function readStored(file: string): Partial<Credentials> {
  if (!existsSync(file)) return {};
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) {
    throw new CliError(
      `${file} is readable by others (mode ${mode.toString(8)}); run: chmod 600 ${file}`,
      EXIT.usage,
    );
  }
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as Partial<Credentials>;
    return {
      ...(typeof v.url === 'string' ? { url: v.url } : {}),
      ...(typeof v.key === 'string' ? { key: v.key } : {}),
    };
  } catch {
    throw new CliError(`${file} is not valid JSON; run bulwark login again`, EXIT.usage);
  }
}

/** Environment first, then the stored file; null when there is no URL or no key. */
export function loadCredentials(env: NodeJS.ProcessEnv = process.env): Credentials | null {
  const stored = readStored(credentialsPath(env));
  const url = cliSetting('url', env) || stored.url;
  const key = cliSetting('key', env) || stored.key;
  return url && key ? { url, key } : null;
}

/** Writes atomically: a 0600 temp file renamed over the old one, in a 0700 directory. */
export function saveCredentials(c: Credentials, env: NodeJS.ProcessEnv = process.env): string {
  const file = credentialsPath(env);
  const dir = path.dirname(file);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ url: c.url, key: c.key }, null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
  return file;
}

/** An API client for the stored (or environment) credentials; exit 5 when there are none. */
export function clientFromCredentials(env: NodeJS.ProcessEnv = process.env): ApiClient {
  const c = loadCredentials(env);
  if (!c)
    throw new CliError(
      'not logged in: run `bulwark login --url URL --key KEY` or set BULWARK_URL and BULWARK_KEY',
      EXIT.auth,
    );
  return createApiClient({ url: parseServerUrl(c.url, cliSetting('allowInsecure', env)), key: c.key });
}
