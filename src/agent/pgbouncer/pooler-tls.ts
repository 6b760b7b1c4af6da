import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import type pg from 'pg';
import { runChecked } from '../../shared/child-process.ts';

export type PoolerTls = {
  certFile: string;
  keyFile: string;
  sslmode: 'allow' | 'prefer' | 'require';
  /** TLS options for the agent's own connections to PgBouncer (pinned to this certificate). */
  clientSsl: pg.ClientConfig['ssl'];
};

/** True when every address PgBouncer listens on is loopback. */
export function listensOnLoopbackOnly(listenAddr: string): boolean {
  const addrs = listenAddr
    .split(',')
    .map((a) => a.trim())
    .filter(Boolean);
  return (
    addrs.length > 0 &&
    addrs.every((a) => a === 'localhost' || (isIP(a) === 4 && a.startsWith('127.')) || a === '::1')
  );
}

/** TLS is required of clients whenever PgBouncer listens beyond loopback; offered on loopback. */
export function clientSslModeFor(listenAddr: string): 'prefer' | 'require' {
  return listensOnLoopbackOnly(listenAddr) ? 'prefer' : 'require';
}

/**
 * The pooler's TLS certificate: the operator's own when both files are given, otherwise a
 * self-signed P-256 certificate generated once (openssl, argv exec) into the pooler dir and
 * kept across restarts. Files are 0600 and owned by the pooler dir's owner (PgBouncer's user).
 */
export async function ensurePoolerTls(opts: {
  dir: string;
  listenAddr: string;
  certFile?: string | undefined;
  keyFile?: string | undefined;
  sslmode?: 'allow' | 'prefer' | 'require';
}): Promise<PoolerTls> {
  let certFile = opts.certFile;
  let keyFile = opts.keyFile;
  if (!certFile || !keyFile) {
    certFile = path.join(opts.dir, 'server.crt');
    keyFile = path.join(opts.dir, 'server.key');
    if (!existsSync(certFile) || !existsSync(keyFile)) {
      const tmpKey = `${keyFile}.tmp`;
      const tmpCert = `${certFile}.tmp`;
      await runChecked(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-keyout',
          tmpKey,
          '-out',
          tmpCert,
          '-nodes',
          '-days',
          '825',
          '-subj',
          '/CN=bulwark',
        ],
        null,
      );
      const st = await fs.stat(opts.dir);
      for (const f of [tmpKey, tmpCert]) {
        await fs.chmod(f, 0o600);
        if (process.getuid?.() === 0) await fs.chown(f, st.uid, st.gid);
      }
      await fs.rename(tmpCert, certFile);
      await fs.rename(tmpKey, keyFile);
    }
  }
  const certPem = await fs.readFile(certFile, 'utf8');
  return {
    certFile,
    keyFile,
    sslmode: opts.sslmode ?? clientSslModeFor(opts.listenAddr),
    // Pinned: our own certificate is the only CA; its CN is not a host name, so skip that check.
    clientSsl: { ca: certPem, checkServerIdentity: () => undefined },
  };
}
