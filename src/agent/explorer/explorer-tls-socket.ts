/**
 * The explorer's filtered socket over TLS (attached databases, ADR 0031). The framing filter
 * (explorer-stream.ts) must see PostgreSQL's messages, not ciphertext, so TLS is negotiated here,
 * below the filter: node-postgres is given this object as a plain connection (its own `ssl` off)
 * while it connects, sends PostgreSQL's SSLRequest, and on 'S' runs TLS over the TCP socket;
 * decrypted bytes go through `receive` (the filter) and pg's writes go into TLS. A server that
 * answers 'N' gets nothing: the connection fails (never a silent fall back to clear text).
 */
import net from 'node:net';
import tls from 'node:tls';
import { ExplorerSocket } from './explorer-stream.ts';

const SSL_REQUEST = (() => {
  const b = Buffer.alloc(8);
  b.writeInt32BE(8, 0);
  b.writeInt32BE(80877103, 4);
  return b;
})();

export type ExplorerTlsOptions = { rejectUnauthorized: boolean; servername?: string };

export class ExplorerTlsSocket extends ExplorerSocket {
  #raw: net.Socket | null = null;
  #tls: tls.TLSSocket | null = null;

  constructor(opts: ExplorerTlsOptions) {
    super();
    // The methods pg calls, bound to the TLS socket (instance properties shadow net.Socket's).
    const self = this as unknown as Record<string, unknown>;
    self.connect = (port: number, host: string) => {
      this.#open(port, host, opts);
      return this;
    };
    self.write = (chunk: Buffer | string, a?: unknown, b?: unknown) => {
      const secure = this.#tls;
      if (!secure || secure.destroyed) return false;
      return secure.write(chunk, a as BufferEncoding, b as (err?: Error | null) => void);
    };
    self.end = (...args: unknown[]) => {
      const cb = args.find((a) => typeof a === 'function') as (() => void) | undefined;
      if (this.#tls && !this.#tls.destroyed) this.#tls.end(cb);
      else cb?.();
      return this;
    };
    self.setNoDelay = () => this;
    self.setKeepAlive = (enable?: boolean, delay?: number) => {
      this.#raw?.setKeepAlive(enable, delay);
      return this;
    };
    self.ref = () => {
      this.#raw?.ref();
      return this;
    };
    self.unref = () => {
      this.#raw?.unref();
      return this;
    };
    const destroy = this.destroy.bind(this);
    self.destroy = (err?: Error) => {
      this.#tls?.destroy();
      this.#raw?.destroy();
      return destroy(err);
    };
    // pg checks `writable` before each write: the TLS socket's, not the unconnected base socket's.
    Object.defineProperty(this, 'writable', {
      get: () => Boolean(this.#tls && !this.#tls.destroyed && this.#tls.writable),
      set: () => {},
      configurable: true,
    });
  }

  #open(port: number, host: string, opts: ExplorerTlsOptions): void {
    const raw = net.connect({ port, host });
    this.#raw = raw;
    raw.setNoDelay(true);
    raw.on('error', (err) => this.destroy(err));
    raw.once('connect', () => {
      raw.write(SSL_REQUEST);
      raw.once('data', (answer: Buffer) => {
        if (answer[0] !== 0x53) {
          this.destroy(new Error('the server does not offer TLS; the connection is refused'));
          return;
        }
        // Bytes after the 'S' were sent before any encryption (a man in the middle's, CVE-2021-23222).
        if (answer.length !== 1) {
          this.destroy(new Error('unencrypted bytes followed the TLS answer; the connection is refused'));
          return;
        }
        const secure = tls.connect({ socket: raw, host, ...opts });
        this.#tls = secure;
        secure.on('error', (err) => this.destroy(err));
        secure.on('data', (chunk: Buffer) => this.receive(chunk));
        secure.on('close', () => this.destroy());
        secure.once('secureConnect', () => this.emit('connect'));
      });
    });
  }
}
