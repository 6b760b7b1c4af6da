import { randomInt } from 'node:crypto';
import net from 'node:net';

/**
 * Ports handed out below the kernel's ephemeral range (32768–60999 on Linux): a port the kernel
 * picked (port 0) and we released could be given again at once as the local port of some
 * outgoing connection, and a server started on it a moment later then fails with "Address
 * already in use" (seen with PgBouncer in a clean-clone run). Here no outgoing connection ever
 * takes these, and each is bound once before it is handed out.
 */
const LOW = 20_000;
const HIGH = 32_000;

const tryBind = (host: string, port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });

/** Ports this process handed out already (never twice, even once released). */
const given = new Set<number>();

/** A free TCP port on loopback (bound and released; good enough for tests). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = randomInt(LOW, HIGH);
    if (given.has(port)) continue;
    if (await tryBind(host, port)) {
      given.add(port);
      return port;
    }
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
