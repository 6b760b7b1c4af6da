import { z } from 'zod';
import type { EnvBinding } from '../shared/config-loader.ts';
import { CliError, EXIT } from './api-client.ts';

/**
 * The CLI's own settings, every environment variable a command reads (the `server`, `agent` and
 * `up` commands read their process's schema instead). Read when a command runs, never at import;
 * an empty value counts as unset. Files named here are read by the command that needs them.
 */
const file = z.string().min(1).max(4096);
const cliSettingsSchema = z
  .object({
    /** Default of `--data-dir`. */
    dataDir: file.default('.bulwark'),
    /** Override the stored `bulwark login` credentials (CI). */
    url: z.string().max(2048).optional(),
    key: z.string().max(512).optional(),
    /** `1`: allow a plain http:// server URL that is not loopback. */
    allowInsecure: z
      .enum(['0', '1'], { message: 'only 1 (allow plain http:// beyond loopback) or 0' })
      .transform((v) => v === '1')
      .default(false),
    /** The control database of operator commands (else the data dir's secret file). */
    databaseUrl: z.string().max(4096).optional(),
    databaseUrlFile: file.optional(),
    /** The master keyring of `bulwark master-key` (else the data dir's). */
    masterKeyFile: file.optional(),
  })
  .strict();

type CliSettings = z.infer<typeof cliSettingsSchema>;

export const cliEnv: Record<keyof CliSettings, EnvBinding> = {
  dataDir: { env: 'BULWARK_DATA_DIR' },
  url: { env: 'BULWARK_URL' },
  key: { env: 'BULWARK_KEY', secret: true },
  allowInsecure: { env: 'BULWARK_ALLOW_INSECURE' },
  databaseUrl: { env: 'BULWARK_DATABASE_URL', secret: true },
  databaseUrlFile: { env: 'BULWARK_DATABASE_URL_FILE' },
  masterKeyFile: { env: 'BULWARK_MASTER_KEY_FILE' },
};

/**
 * One CLI setting from `env` (each command reads only what it uses, so a bad value stops only the
 * commands that need it). A bad value is a usage error (exit 2) naming the variable, never its value.
 */
export function cliSetting<K extends keyof CliSettings>(
  key: K,
  env: NodeJS.ProcessEnv = process.env,
): CliSettings[K] {
  const name = cliEnv[key].env;
  const v = env[name];
  const parsed = (cliSettingsSchema.shape[key] as unknown as z.ZodType<CliSettings[K]>).safeParse(
    v === '' ? undefined : v,
  );
  if (!parsed.success)
    throw new CliError(`${name}: ${parsed.error.issues[0]?.message ?? 'invalid value'}`, EXIT.usage);
  return parsed.data;
}
