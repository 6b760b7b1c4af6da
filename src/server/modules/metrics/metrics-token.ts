import { readFileSync } from 'node:fs';
import type { ServerConfig } from '../../config.ts';

/**
 * The /metrics bearer token: `metricsToken` (env BULWARK_METRICS_TOKEN or BULWARK_METRICS_TOKEN_FILE)
 * or the file named by `metricsTokenFile`. Null: metrics disabled. A short token is refused.
 */
export function readMetricsToken(
  config: Pick<ServerConfig, 'metricsToken' | 'metricsTokenFile'>,
): string | null {
  if (config.metricsToken !== undefined) return config.metricsToken;
  if (config.metricsTokenFile === undefined) return null;
  const token = readFileSync(config.metricsTokenFile, 'utf8').trim();
  if (token.length < 32)
    throw new Error(`metrics token file ${config.metricsTokenFile}: token shorter than 32 characters`);
  return token;
}
