/**
 * How the agent reaches an attached database (ADR 0031): TLS as the entry's `sslmode` says, and a
 * query cancel that goes to that database's server — never through the agent's own admin pool,
 * whose `pg_cancel_backend(pid)` would hit whatever backend has that pid on the agent's cluster.
 *
 * The cancel is PostgreSQL's CancelRequest (process id + the secret key the backend sent at
 * login): no login, no role needed. With `require` / `verify-full` it is sent inside TLS (an
 * SSLRequest first, as libpq does since PostgreSQL 17): a server that refuses TLS gets nothing.
 */
import net, { isIP } from 'node:net';
import tls from 'node:tls';
import type { AttachedDatabase } from './attached-config.ts';

type Sslmode = AttachedDatabase['sslmode'];

/** node-postgres's `ssl` option for an entry: none, encrypted only, or encrypted and verified. */
export function attachedSsl(db: {
  host: string;
  sslmode: Sslmode;
}): false | { rejectUnauthorized: boolean; servername?: string } {
  if (db.sslmode === 'disable') return false;
  if (db.sslmode === 'require') return { rejectUnauthorized: false };
  // SNI takes a host name only; node-postgres checks an IP address against the certificate itself.
  return { rejectUnauthorized: true, ...(isIP(db.host) === 0 ? { servername: db.host } : {}) };
}

const CANCEL_CODE = 80877102;
const SSL_REQUEST_CODE = 80877103;
const CANCEL_TIMEOUT_MS = 5_000;

/**
 * Sends a CancelRequest for backend `pid` (with its `secret`) to the entry's server. Resolves once
 * the request is written and the server closed the connection (or after 5 s); rejects when it
 * could not be sent. PostgreSQL never answers a cancel: whether it landed is seen on the query.
 */
export function cancelAttachedBackend(
  db: Pick<AttachedDatabase, 'host' | 'port' | 'sslmode'>,
  pid: number,
  secret: number,
): Promise<void> {
  const packet = Buffer.alloc(16);
  packet.writeInt32BE(16, 0);
  packet.writeInt32BE(CANCEL_CODE, 4);
  packet.writeInt32BE(pid | 0, 8);
  packet.writeInt32BE(secret | 0, 12);
  return new Promise<void>((resolve, reject) => {
    const raw = net.connect({ host: db.host, port: db.port });
    let socket: net.Socket = raw;
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      raw.destroy();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => finish(), CANCEL_TIMEOUT_MS);
    timer.unref();
    const send = (s: net.Socket) => {
      s.on('close', () => finish());
      s.end(packet);
    };
    raw.on('error', (err) => finish(err));
    raw.once('connect', () => {
      const ssl = attachedSsl({ host: db.host, sslmode: db.sslmode });
      if (!ssl) return send(raw);
      const head = Buffer.alloc(8);
      head.writeInt32BE(8, 0);
      head.writeInt32BE(SSL_REQUEST_CODE, 4);
      raw.write(head);
      raw.once('data', (answer) => {
        if (answer[0] !== 0x53) return finish(new Error('the attached server refused TLS: cancel not sent'));
        if (answer.length !== 1)
          return finish(new Error('unencrypted bytes followed the TLS answer: cancel not sent'));
        const secure = tls.connect({ socket: raw, host: db.host, ...ssl });
        socket = secure;
        secure.on('error', (err) => finish(err));
        secure.once('secureConnect', () => send(secure));
      });
    });
  });
}
