import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type Received = { headers: http.IncomingHttpHeaders; body: string; at: number };

/**
 * A real HTTP receiver on a loopback address (127.0.0.x): records every request and counts every
 * TCP connection (a refused destination must see none). `answer` decides the status code.
 */
export async function startReceiver(host = '127.0.0.1') {
  const received: Received[] = [];
  let connections = 0;
  let answer: (r: Received) => number = () => 200;
  const listeners = new Set<(r: Received, path: string) => void>();
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      body += c;
    });
    req.on('end', () => {
      const r = { headers: req.headers, body, at: Date.now() };
      received.push(r);
      for (const fn of listeners) fn(r, req.url ?? '');
      const code = answer(r);
      res.writeHead(code, code >= 300 && code < 400 ? { location: 'http://127.0.0.1/' } : {});
      res.end(code >= 200 && code < 300 ? 'ok' : 'x'.repeat(3000));
    });
  });
  server.on('connection', () => {
    connections++;
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    host,
    port,
    url: (path = '/hook') => `http://${host}:${port}${path}`,
    received,
    connections: () => connections,
    answerWith(fn: (r: Received) => number) {
      answer = fn;
    },
    /** Calls `fn` at every request received (with its path); returns the unsubscribe. */
    onReceived(fn: (r: Received, path: string) => void) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
export type Receiver = Awaited<ReturnType<typeof startReceiver>>;
