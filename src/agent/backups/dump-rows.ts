/**
 * Exact row counts read from the `pg_dump --format=custom --compress=0` stream as it passes, so
 * a backup needs no second scan of every table (a `count(*)` beside pg_dump's COPY costs the
 * database host as much CPU again as reading the table once more).
 *
 * The custom archive written to a pipe is: a header, the table of contents (every entry: dump id,
 * type, schema, name, …), then one data block per entry that has data, in the TOC's order:
 *   block type (1 = table data, 3 = large objects) ‖ dump id ‖ chunks (int length ‖ bytes)* ‖ int 0
 * (large objects: per object an oid, then its chunks, then int 0; an oid 0 ends the block).
 * Integers are a sign byte and `intSize` bytes, least significant first; strings an int length
 * (−1 = null) and the bytes. Uncompressed, a table's chunks are its COPY text rows, each ending
 * in a newline (a newline inside a value is escaped as `\n`), so rows = newline bytes — except
 * in the chunk that ends the data, `\.` and newlines (no row can begin with a lone `\.`: COPY
 * writes a backslash in a value as `\\`).
 *
 * Anything this reader does not know (an archive version outside 1.12–1.16, compression, an
 * unknown block) makes `result()` return null with the reason, and the caller counts with SQL in
 * the dump's snapshot instead; the restore's check compares the counts with the restored tables,
 * so a wrong count cannot pass unnoticed.
 */

const BLK_DATA = 1;
const BLK_BLOBS = 3;
/** The table of contents is read from the first bytes; beyond this it is not worth holding. */
const MAX_TOC_BYTES = 64 * 1024 * 1024;

class NeedMore extends Error {}
class Unsupported extends Error {}

/** A cursor over the bytes held for the header and table of contents. */
class HeadReader {
  at = 0;
  intSize = 4;
  private readonly b: Buffer;
  constructor(b: Buffer) {
    this.b = b;
  }
  byte(): number {
    if (this.at >= this.b.length) throw new NeedMore();
    return this.b[this.at++]!;
  }
  skip(n: number): void {
    if (this.at + n > this.b.length) throw new NeedMore();
    this.at += n;
  }
  int(): number {
    const end = this.at + 1 + this.intSize;
    if (end > this.b.length) throw new NeedMore();
    let v = 0;
    for (let i = end - 1; i > this.at; i--) v = v * 256 + this.b[i]!;
    const negative = this.b[this.at] !== 0;
    this.at = end;
    return negative ? -v : v;
  }
  str(): string | null {
    const n = this.skipStr();
    return n < 0 ? null : this.b.toString('utf8', this.at - n, this.at);
  }
  /** Steps over a string without decoding it; its length (−1 = null). */
  skipStr(): number {
    const n = this.int();
    if (n > 0) this.skip(n);
    return n;
  }
}

type Parsed = { tables: Map<number, string>; intSize: number; dataStart: number };

/** Header and table of contents; the dump ids of TABLE DATA entries → `schema\0name`. */
function parseHead(b: Buffer): Parsed {
  const r = new HeadReader(b);
  r.skip(5);
  if (b.toString('latin1', 0, 5) !== 'PGDMP') throw new Unsupported('not a custom-format archive');
  const vmaj = r.byte();
  const vmin = r.byte();
  r.byte(); // revision
  const version = vmaj * 100 + vmin;
  if (vmaj !== 1 || vmin < 12 || vmin > 16) throw new Unsupported(`archive version ${vmaj}.${vmin}`);
  r.intSize = r.byte();
  const offSize = r.byte();
  if (r.intSize < 1 || r.intSize > 6 || offSize < 1 || offSize > 16)
    throw new Unsupported('unexpected integer sizes');
  if (r.byte() !== 1) throw new Unsupported('not the custom format');
  if (version >= 115) {
    if (r.byte() !== 0) throw new Unsupported('a compressed archive');
  } else if (r.int() !== 0) throw new Unsupported('a compressed archive');
  for (let i = 0; i < 7; i++) r.int(); // creation time
  r.skipStr(); // database name
  r.skipStr(); // server version
  r.skipStr(); // pg_dump version
  const count = r.int();
  if (count < 0) throw new Unsupported('negative TOC size');
  const tables = new Map<number, string>();
  for (let i = 0; i < count; i++) {
    const dumpId = r.int();
    r.int(); // had a data dumper
    r.skipStr(); // table oid
    r.skipStr(); // oid
    const tag = r.str();
    const desc = r.str();
    r.int(); // section
    r.skipStr(); // definition
    r.skipStr(); // drop statement
    r.skipStr(); // copy statement
    const schema = r.str();
    r.skipStr(); // tablespace
    if (version >= 114) r.skipStr(); // table access method
    if (version >= 116) r.int(); // relkind
    r.skipStr(); // owner
    r.skipStr(); // "false" (with oids)
    while (r.skipStr() >= 0) {} // dependencies
    r.skip(1 + offSize); // the custom format's data offset (flag, offset)
    if (desc === 'TABLE DATA' && tag !== null && schema !== null) tables.set(dumpId, `${schema}\u0000${tag}`);
  }
  return { tables, intSize: r.intSize, dataStart: r.at };
}

type State = 'type' | 'id' | 'blobOid' | 'len' | 'data';

export class DumpRowCounter {
  private head: Buffer[] = [];
  private headLength = 0;
  /** The head is parsed again only once it doubled since the last try (linear, not quadratic). */
  private nextTry = 0;
  private parsed: Parsed | null = null;
  private failure: string | null = null;
  private state: State = 'type';
  private field: number[] = [];
  private blockType = 0;
  private blockId = 0;
  private inBlob = false;
  private remaining = 0;
  /** The current chunk: its first bytes (up to 3) and its newlines so far. */
  private chunkHead: number[] = [];
  private chunkRows = 0;
  private counts = new Map<number, number>();

  /** Feeds the next bytes of the dump (in order). Never throws. */
  push(chunk: Buffer): void {
    if (this.failure !== null) return;
    if (this.parsed) {
      this.guarded(() => this.data(chunk, 0));
      return;
    }
    this.head.push(chunk);
    this.headLength += chunk.length;
    if (this.headLength >= this.nextTry) this.guarded(() => this.readHead(false));
  }

  /** Parses the held head; once it is whole, reads the data bytes held after it. */
  private readHead(ended: boolean): void {
    const all = this.head.length === 1 ? this.head[0]! : Buffer.concat(this.head, this.headLength);
    this.head = [all];
    try {
      this.parsed = parseHead(all);
    } catch (err) {
      if (!(err instanceof NeedMore) || ended) throw err;
      if (this.headLength > MAX_TOC_BYTES) throw new Unsupported('table of contents too large');
      this.nextTry = Math.min(2 * this.headLength, MAX_TOC_BYTES + 1);
      return;
    }
    this.head = [];
    this.data(all, this.parsed.dataStart);
  }

  private guarded(read: () => void): void {
    try {
      read();
    } catch (err) {
      this.failure =
        err instanceof NeedMore
          ? 'the dump ended inside its table of contents'
          : err instanceof Unsupported
            ? err.message
            : `unreadable dump: ${(err as Error).message}`;
      this.head = [];
    }
  }

  /** Reads one integer field across chunk boundaries; null until it is complete. */
  private int(b: Buffer, at: number): { v: number; at: number } | null {
    const size = 1 + this.parsed!.intSize;
    while (this.field.length < size && at < b.length) this.field.push(b[at++]!);
    if (this.field.length < size) return null;
    let v = 0;
    for (let i = 1; i < size; i++) v += this.field[i]! * 2 ** (8 * (i - 1));
    const negative = this.field[0] !== 0;
    this.field = [];
    return { v: negative ? -v : v, at };
  }

  private data(b: Buffer, start: number): void {
    let at = start;
    while (at < b.length) {
      if (this.state === 'data') {
        const end = Math.min(b.length, at + this.remaining);
        if (this.blockType === BLK_DATA) {
          for (let i = at; i < end && this.chunkHead.length < 3; i++) this.chunkHead.push(b[i]!);
          for (let i = b.indexOf(10, at); i !== -1 && i < end; i = b.indexOf(10, i + 1)) this.chunkRows++;
        }
        this.remaining -= end - at;
        at = end;
        if (this.remaining === 0) {
          const h = this.chunkHead;
          const endMarker = h[0] === 0x5c && h[1] === 0x2e && (h[2] === 10 || h[2] === 13);
          if (this.blockType === BLK_DATA && !endMarker)
            this.counts.set(this.blockId, (this.counts.get(this.blockId) ?? 0) + this.chunkRows);
          this.state = 'len';
        }
        continue;
      }
      if (this.state === 'type') {
        this.blockType = b[at++]!;
        if (this.blockType !== BLK_DATA && this.blockType !== BLK_BLOBS)
          throw new Unsupported(`unknown data block type ${this.blockType}`);
        this.state = 'id';
        continue;
      }
      const got = this.int(b, at);
      if (!got) return;
      at = got.at;
      if (this.state === 'id') {
        this.blockId = got.v;
        if (this.blockType === BLK_DATA) {
          this.counts.set(this.blockId, this.counts.get(this.blockId) ?? 0);
          this.inBlob = false;
          this.state = 'len';
        } else this.state = 'blobOid';
      } else if (this.state === 'blobOid') {
        if (got.v === 0) this.state = 'type';
        else {
          this.inBlob = true;
          this.state = 'len';
        }
      } else {
        // 'len': a chunk, or 0 at the end of the table's (or the large object's) data.
        if (got.v < 0) throw new Error('negative chunk length');
        if (got.v > 0) {
          this.remaining = got.v;
          this.chunkHead = [];
          this.chunkRows = 0;
          this.state = 'data';
        } else this.state = this.inBlob ? 'blobOid' : 'type';
      }
    }
  }

  /**
   * After the whole dump: rows per table (`schema\0name`) of every table whose data it holds, or
   * the reason it could not be read.
   */
  result(): { rows: Map<string, number> } | { unsupported: string } {
    if (!this.parsed && this.failure === null) this.guarded(() => this.readHead(true));
    if (this.failure !== null) return { unsupported: this.failure };
    if (!this.parsed) return { unsupported: 'the dump ended inside its table of contents' };
    if (this.state !== 'type' || this.field.length > 0)
      return { unsupported: 'the dump ended inside a data block' };
    const rows = new Map<string, number>();
    for (const [id, n] of this.counts) {
      const table = this.parsed.tables.get(id);
      if (table !== undefined) rows.set(table, n);
    }
    return { rows };
  }
}

/** The key `DumpRowCounter` reports a table under. */
export const tableKey = (schema: string, name: string) => `${schema}\u0000${name}`;
