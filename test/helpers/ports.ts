import { randomInt } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/**
 * Ports handed out below the kernel's ephemeral range (32768–60999 on Linux): a port the kernel
 * picked (port 0) and we released could be given again at once as the local port of some
 * outgoing connection, and a server started on it a moment later then fails with "Address
 * already in use" (seen with PgBouncer in a clean-clone run). Here no outgoing connection ever
 * takes these; each is bound once before it is handed out, and never handed out twice in one
 * test run: the test files run in processes of their own, so each port is claimed with a file of
 * its own (created exclusively) in the run's `portsDir` (BULWARK_TEST_ENV, set by
 * scripts/test.ts); without it (a bench, the runner itself) within this process only.
 */
const LOW = 20_000;
const HIGH = 32_000;

const portsDir = (() => {
  try {
    const dir = JSON.parse(process.env.BULWARK_TEST_ENV ?? '{}').portsDir;
    return typeof dir === 'string' ? dir : null;
  } catch {
    return null;
  }
})();

/** Ports this process handed out already. */
const given = new Set<number>();

/** Claims `port` for this run: false when another file (or this process) has it already. */
function claim(port: number): boolean {
  if (given.has(port)) return false;
  if (portsDir) {
    try {
      fs.writeFileSync(path.join(portsDir, String(port)), String(process.pid), { flag: 'wx' });
    } catch {
      return false;
    }
  }
  given.add(port);
  return true;
}

const tryBind = (host: string, port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });

/** A free TCP port on loopback (bound and released; good enough for tests). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = randomInt(LOW, HIGH);
    if (claim(port) && (await tryBind(host, port))) return port;
  }
  // Crowded (not expected): let the kernel choose, as before.
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ host, port: 0 }, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
