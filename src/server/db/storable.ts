/**
 * What PostgreSQL's text and jsonb cannot hold — a NUL character, a UTF-16 surrogate not in a
 * pair — replaced by U+FFFD, so that a value a client sent is stored (and audited) instead of
 * failing the statement. U+FFFD keeps a string's length: a value that fitted its bound still does.
 * (Bytes that are not UTF-8 never get this far: Node decodes them to U+FFFD on the way in.)
 */

const NUL = /\u0000/g;

/** `s` with every NUL and lone surrogate replaced by U+FFFD (the same string when there is none). */
export function storableText(s: string): string {
  if (s.isWellFormed() && !s.includes('\u0000')) return s;
  return s.toWellFormed().replace(NUL, '\uFFFD');
}

/**
 * A JSON value with every string, object keys included, made storable; other values as they are.
 * Two keys that differ only in an unstorable character stay two keys (the later one gets a
 * U+FFFD more): nothing is dropped. Non-plain objects (Date, Buffer…) are returned unchanged.
 */
export function storableJson(v: unknown): unknown {
  if (typeof v === 'string') return storableText(v);
  if (v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map(storableJson);
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return v;
  const out: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(v)) {
    let key = storableText(k);
    while (Object.hasOwn(out, key)) key += '\uFFFD';
    // defineProperty: a key named `__proto__` (JSON.parse makes one) stays a plain key.
    Object.defineProperty(out, key, {
      value: storableJson(val),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}
