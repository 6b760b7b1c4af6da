/**
 * The socket of an explorer connection: a `net.Socket` whose incoming bytes are read through a
 * framing filter BEFORE node-postgres parses them, so that no message of unbounded size is ever
 * buffered or turned into a JS string by the agent (FIELD-NOTES: a 600 MB cell throws
 * ERR_STRING_TOO_LONG inside pg's socket handler and a 300 MB one costs ~560 MB of heap).
 *
 * PostgreSQL frames every backend message as a 1-byte code and a 4-byte length, so the filter
 * knows each message's size from its header and decides before the body arrives:
 *
 * - DataRow ('D') of the statement the executor armed a budget for (`limitRows`): passed while it
 *   fits the remaining budget; the first row that does not fit, and every row after it, is
 *   skipped as it streams (never buffered) and `rowsDropped()` turns true — the executor answers
 *   `truncated_by: 'bytes'` with the rows before it. The caller is told (`onDrop`) so that it can
 *   cancel the statement; the cancel's error (57014) then ends the result like a CommandComplete
 *   (pg resolves the query with the rows it has; the transaction is aborted and rolled back).
 * - ErrorResponse/NoticeResponse ('E'/'N') larger than FIELD_MAX: rebuilt from a bounded prefix of
 *   each field (cut on a UTF-8 boundary, marked with …), still well-formed; an error such as
 *   `invalid input syntax for type integer: "<600 MB>"` reaches pg as a few KiB.
 * - Any other message, and DataRows outside a budget (the platform's own small statements), must
 *   be ≤ UNBUDGETED_MAX: a larger one fails the connection (ExplorerStreamError).
 *
 * Bytes are read into one reused buffer (`onread`) and only what passes is copied out, so a skipped
 * 600 MB value allocates nothing. Anything thrown while delivering bytes to pg (a filter error, or
 * pg's own parser) destroys this connection — its queries fail with the error — and never
 * reaches the process.
 * Plain TCP only: under pg's own TLS the filter would see ciphertext. Hosted databases are reached
 * on loopback; an attached database's TLS is negotiated below the filter (explorer-tls-socket.ts).
 */
import net from 'node:net';

const DATA_ROW = 0x44; // 'D'
const ERROR_RESPONSE = 0x45; // 'E'
const NOTICE_RESPONSE = 0x4e; // 'N'
const READY_FOR_QUERY = 0x5a; // 'Z'
const HEADER = 5;

/** Bytes kept of each field of an ErrorResponse/NoticeResponse (the message text included). */
export const FIELD_MAX = 4_096;
/** Fields kept of one ErrorResponse/NoticeResponse (PostgreSQL sends at most ~18 kinds). */
const FIELDS_MAX = 32;
/** The largest message accepted outside a row budget (row descriptions, our own statements). */
export const UNBUDGETED_MAX = 1 << 20;

/** The connection received something it must not hold; the connection is destroyed with it. */
export class ExplorerStreamError extends Error {
  readonly code = 'BULWARK_EXPLORER_STREAM';
}

type Budget = {
  syncsBefore: number;
  left: number;
  dropped: boolean;
  done: boolean;
  onDrop: (() => void) | undefined;
};
type Mode = 'header' | 'pass' | 'skip' | 'fields';
const ELLIPSIS = Buffer.from('…', 'utf8');
const COMMAND_COMPLETE = (() => {
  const tag = Buffer.from('SELECT 0\0', 'latin1');
  const head = Buffer.alloc(HEADER);
  head.write('C', 0, 'latin1');
  head.writeUInt32BE(tag.length + 4, 1);
  return Buffer.concat([head, tag]);
})();

/** Length of `b` without a trailing incomplete UTF-8 sequence. */
function utf8Boundary(b: Buffer): number {
  let p = b.length - 1;
  let back = 0;
  while (p >= 0 && back < 3 && ((b[p] ?? 0) & 0xc0) === 0x80) {
    p--;
    back++;
  }
  if (p < 0) return 0;
  const lead = b[p] ?? 0;
  const want = lead < 0x80 ? 1 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return p + want <= b.length ? b.length : p;
}

/** The socket's one read buffer: bytes are read into it and filtered there (`onread`). */
const READ_BUFFER = 64 * 1024;

export class ExplorerSocket extends net.Socket {
  #mode: Mode = 'header';
  #head = Buffer.alloc(HEADER);
  #headLen = 0;
  #code = 0;
  /** Body bytes of the current message still to come. */
  #left = 0;
  #budget: Budget | null = null;
  #failed = false;
  // ErrorResponse/NoticeResponse being rebuilt.
  #fields: Buffer[] = [];
  #field: Buffer[] = [];
  #fieldKept = 0;
  #fieldCut = false;
  #inField = false;
  #fieldCount = 0;
  #fieldsEnded = false;
  #sqlstate = '';

  constructor() {
    // Reads land in one reused buffer (no allocation per read, so skipped bytes cost no garbage);
    // only what passes the filter is copied out to pg, as 'data'.
    const self: { socket?: ExplorerSocket } = {};
    const opts = {
      onread: {
        buffer: Buffer.allocUnsafe(READ_BUFFER),
        callback: (n: number, buf: Uint8Array) =>
          self.socket?.receive(Buffer.from(buf.buffer, buf.byteOffset, n)),
      },
    };
    super(opts as net.SocketConstructorOpts);
    self.socket = this;
  }

  /**
   * Arms a byte budget for the DataRows of one statement: the one whose answer follows
   * `syncsBefore` ReadyForQuery messages from now (the pipelined prelude's). Its rows pass while
   * their wire size fits `bytes`; the budget ends with that statement's ReadyForQuery.
   */
  limitRows(bytes: number, syncsBefore: number, onDrop?: () => void): void {
    this.#budget = { syncsBefore, left: bytes, dropped: false, done: false, onDrop };
  }

  /** True when the last armed statement had a row skipped for the budget. */
  rowsDropped(): boolean {
    return this.#budget?.dropped ?? false;
  }

  /** Bytes of the last budget still unused (tests, diagnostics). */
  budgetLeft(): number | null {
    return this.#budget?.left ?? null;
  }

  /**
   * Filters bytes read from the server (the socket's read callback; tests call it directly).
   * `chunk` may be reused once this returns: whatever passes is copied. Returns false once failed.
   */
  receive(chunk: Buffer): boolean {
    if (this.#failed) return false;
    try {
      this.#filter(chunk);
    } catch (err) {
      this.#failed = true;
      this.destroy(
        err instanceof Error
          ? err
          : new ExplorerStreamError('explorer connection: reading the result failed'),
      );
      return false;
    }
    return true;
  }

  #deliver(b: Buffer): void {
    if (b.length > 0 && !this.#failed) this.emit('data', Buffer.from(b));
  }

  #filter(buf: Buffer): void {
    let i = 0;
    let passFrom = 0;
    const flush = (to: number) => {
      if (to > passFrom) this.#deliver(buf.subarray(passFrom, to));
      passFrom = to;
    };
    while (i < buf.length) {
      if (this.#mode === 'header') {
        const start = i;
        const stashed = this.#headLen > 0;
        const take = Math.min(HEADER - this.#headLen, buf.length - i);
        buf.copy(this.#head, this.#headLen, i, i + take);
        this.#headLen += take;
        i += take;
        if (this.#headLen < HEADER) {
          // The header continues in the next chunk: hold its bytes back until it is decided.
          flush(start);
          passFrom = buf.length;
          return;
        }
        this.#headLen = 0;
        this.#code = this.#head[0] ?? 0;
        const length = this.#head.readUInt32BE(1);
        if (length < 4)
          throw new ExplorerStreamError('explorer connection: malformed message from the server');
        this.#left = length - 4;
        this.#mode = this.#decide(this.#code, this.#left);
        if (this.#mode === 'pass') {
          if (stashed) {
            // The bytes of this header that came earlier were held back: deliver the whole header.
            flush(start);
            this.#deliver(Buffer.from(this.#head));
            passFrom = i;
          }
        } else {
          flush(start);
          passFrom = i;
          if (this.#mode === 'fields') this.#startFields();
        }
        if (this.#left === 0) this.#endMessage();
        continue;
      }
      const take = Math.min(this.#left, buf.length - i);
      if (this.#mode === 'fields') this.#readFields(buf, i, i + take);
      i += take;
      this.#left -= take;
      if (this.#mode !== 'pass') passFrom = i;
      if (this.#left === 0) this.#endMessage();
    }
    flush(buf.length);
  }

  #decide(code: number, body: number): Mode {
    const b = this.#budget;
    if (code === READY_FOR_QUERY) {
      if (b && !b.done) {
        if (b.syncsBefore > 0) b.syncsBefore--;
        else b.done = true;
      }
      return 'pass';
    }
    if (code === DATA_ROW && b && !b.done && b.syncsBefore === 0) {
      if (b.dropped || body > b.left) {
        if (!b.dropped) {
          b.dropped = true;
          // The caller may cancel the statement: the rest of its rows would only be skipped.
          const onDrop = b.onDrop;
          if (onDrop) queueMicrotask(onDrop);
        }
        return 'skip';
      }
      b.left -= body;
      return 'pass';
    }
    // Past the budget, the statement's error is read too: a cancel (57014) ends a truncated result.
    if (code === ERROR_RESPONSE && b?.dropped && !b.done && b.syncsBefore === 0) return 'fields';
    if ((code === ERROR_RESPONSE || code === NOTICE_RESPONSE) && body > FIELD_MAX) return 'fields';
    if (body > UNBUDGETED_MAX) {
      throw new ExplorerStreamError(
        `explorer connection: a ${body}-byte message from the server exceeds the ${UNBUDGETED_MAX}-byte limit`,
      );
    }
    return 'pass';
  }

  #endMessage(): void {
    if (this.#mode === 'fields') this.#deliver(this.#finishFields());
    this.#mode = 'header';
  }

  #startFields(): void {
    this.#fields = [];
    this.#field = [];
    this.#fieldKept = 0;
    this.#fieldCut = false;
    this.#inField = false;
    this.#fieldCount = 0;
    this.#fieldsEnded = false;
    this.#sqlstate = '';
  }

  /** Reads body bytes [from, to) of an ErrorResponse/NoticeResponse: (type byte, C string)* then 0. */
  #readFields(buf: Buffer, from: number, to: number): void {
    let j = from;
    while (j < to && !this.#fieldsEnded) {
      if (!this.#inField) {
        const type = buf[j++] ?? 0;
        if (type === 0) {
          this.#fieldsEnded = true;
          break;
        }
        this.#fieldCount++;
        this.#inField = true;
        this.#fieldKept = 0;
        this.#fieldCut = false;
        this.#field = this.#fieldCount <= FIELDS_MAX ? [Buffer.from([type])] : [];
        continue;
      }
      const nul = buf.indexOf(0, j);
      const end = nul === -1 || nul >= to ? to : nul;
      const keep = this.#fieldCount <= FIELDS_MAX ? Math.min(end - j, FIELD_MAX - this.#fieldKept) : 0;
      if (keep > 0) this.#field.push(Buffer.from(buf.subarray(j, j + keep)));
      if (keep < end - j) this.#fieldCut = true;
      this.#fieldKept += keep;
      j = end;
      if (end < to) {
        j++; // the terminating NUL
        this.#endField();
      }
    }
  }

  #endField(): void {
    this.#inField = false;
    if (this.#fieldCount > FIELDS_MAX) return;
    const [type, ...value] = this.#field;
    if (!type) return;
    let v = Buffer.concat(value);
    if (type[0] === 0x43) this.#sqlstate = v.toString('latin1'); // 'C': the SQLSTATE
    if (this.#fieldCut) v = Buffer.concat([v.subarray(0, utf8Boundary(v)), ELLIPSIS]);
    this.#fields.push(type, v, Buffer.from([0]));
  }

  #finishFields(): Buffer {
    if (this.#inField) this.#endField();
    const b = this.#budget;
    if (this.#code === ERROR_RESPONSE && this.#sqlstate === '57014' && b?.dropped && !b.done) {
      // The statement was cancelled (or timed out) after its result was already cut: what came
      // before is the truncated result, so it ends like a result (CommandComplete) for pg.
      this.#fields = [];
      return COMMAND_COMPLETE;
    }
    const body = Buffer.concat([...this.#fields, Buffer.from([0])]);
    this.#fields = [];
    this.#field = [];
    const head = Buffer.alloc(HEADER);
    head[0] = this.#code;
    head.writeUInt32BE(body.length + 4, 1);
    return Buffer.concat([head, body]);
  }
}

/** The filtered socket of a client of an explorer pool (throws if it has none: fail closed). */
export function explorerSocket(c: unknown): ExplorerSocket {
  const stream = (c as { connection?: { stream?: unknown } }).connection?.stream;
  if (!(stream instanceof ExplorerSocket)) throw new Error('explorer connection without its result filter');
  return stream;
}
