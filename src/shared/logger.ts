import pino, { type Logger } from 'pino';

/** Paths redacted from every log line: credentials never reach a log. */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-bulwark-agent-token"]',
  'res.headers["set-cookie"]',
  'password',
  '*.password',
  'token',
  '*.token',
  'key',
  '*.key',
  'secret',
  '*.secret',
  'connectionString',
  '*.connectionString',
  'databaseUrl',
  '*.databaseUrl',
];

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/** What replaces a credential (or any query value) in a log line. */
const CENSOR = '[redacted]';

/** Our credentials by shape (API keys, agent and enrollment tokens), wherever they appear. */
const CREDENTIAL = /\bbw[kae]_[0-9A-Za-z_-]{16,}/g;
/** `scheme://user:password@` or `scheme://user@`: the userinfo of an absolute URL. */
const USERINFO = /([a-z][a-z0-9+.-]*:\/\/)[^/?#@\s]*@/gi;
/** A query string inside free text (error messages): `?` right after a URL character, up to whitespace or a quote. */
const TEXT_QUERY = /([^\s?]\?)[^\s'"`<>]+/g;

/** Percent-decodes what decodes (a bad escape is left as it is, never a throw). */
function lenientDecode(s: string): string {
  return s.replace(/(%[0-9A-Fa-f]{2})+/g, (run) => {
    try {
      return decodeURIComponent(run);
    } catch {
      return run;
    }
  });
}

/** Credentials by shape, in the text as written and in its percent-decoded form. */
function scrubCredentials(s: string): string {
  const decoded = lenientDecode(s);
  // An encoded credential (`%62wk_…`) is only found decoded: log the decoded, scrubbed form.
  const base = decoded !== s && CREDENTIAL.test(decoded) ? decoded : s;
  CREDENTIAL.lastIndex = 0;
  return base.replace(CREDENTIAL, CENSOR).replace(USERINFO, `$1${CENSOR}@`);
}

/**
 * A request URL as it may be logged: the path (credentials by shape and userinfo removed,
 * encoded forms included) and the query's parameter names, every value redacted. Whatever
 * the parameter is called (`key`, `token`, `%6Bey`…), its value never reaches a log.
 */
export function redactUrl(raw: string): string {
  const cut = raw.search(/[?#]/);
  let path = cut === -1 ? raw : raw.slice(0, cut);
  // A query hidden in the path by encoding its `?` (`/x%3Fkey%3D…`): everything after it goes.
  const decodedPath = lenientDecode(path);
  const hidden = decodedPath.search(/[?#]/);
  path =
    hidden === -1 ? scrubCredentials(path) : `${scrubCredentials(decodedPath.slice(0, hidden))}?${CENSOR}`;
  if (cut === -1) return path;
  const query = raw
    .slice(cut + 1)
    .split(/[&;#]/)
    .filter((p) => p !== '')
    .map((p) => {
      const eq = p.indexOf('=');
      if (eq === -1) return CENSOR;
      const name = scrubCredentials(p.slice(0, eq)).slice(0, 64);
      return `${name}=${CENSOR}`;
    });
  return `${path}?${query.join('&')}`;
}

/** Free text (messages, stacks) with query strings, userinfo and credential-shaped tokens removed. */
export function redactText(text: string): string {
  return scrubCredentials(text.replace(TEXT_QUERY, `$1${CENSOR}`));
}

type RequestLike = {
  method?: string;
  url?: string;
  ip?: string;
  host?: string;
  headers?: Record<string, unknown>;
  socket?: { remoteAddress?: string; remotePort?: number };
};

/**
 * Serializers for every logger: a request is logged with its URL redacted (and never its
 * headers); `url` fields are redacted; errors keep their type and code, their message and
 * stack scrubbed (Fastify and Node quote request URLs in error messages).
 */
const serializers = {
  req: (req: RequestLike) => ({
    method: req.method,
    url: typeof req.url === 'string' ? redactUrl(req.url) : undefined,
    host: req.host,
    remoteAddress: req.ip ?? req.socket?.remoteAddress,
    remotePort: req.socket?.remotePort,
  }),
  url: (u: unknown) => (typeof u === 'string' ? redactUrl(u) : u),
  err: (err: unknown) => {
    if (!(err instanceof Error) && (typeof err !== 'object' || err === null)) return err;
    const out: Record<string, unknown> =
      err instanceof Error ? pino.stdSerializers.err(err) : { ...(err as object) };
    for (const f of ['message', 'stack', 'url'] as const)
      if (typeof out[f] === 'string') out[f] = redactText(out[f]);
    return out;
  },
};

export function createLogger(name: string, level: LogLevel, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      name,
      level,
      redact: { paths: REDACT_PATHS, censor: CENSOR },
      serializers,
      // The message itself: a URL or a credential quoted into it is scrubbed like the fields.
      hooks: {
        logMethod(args, method) {
          const scrubbed = args.map((a) => (typeof a === 'string' ? redactText(a) : a));
          return method.apply(this, scrubbed as Parameters<typeof method>);
        },
      },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}

/** Strips credentials from a URL before it is shown or logged. */
export function safeUrl(raw: string): string {
  try {
    const u = new URL(raw);
    if (u.password) u.password = '***';
    u.search = '';
    return u.toString();
  } catch {
    return '[unparseable url]';
  }
}
