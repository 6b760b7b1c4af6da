/**
 * fast-check arbitraries derived from a JSON Schema (the subset zod's `toJSONSchema` writes into
 * the OpenAPI document): `validFrom(schema)` yields values the schema accepts, `invalidFrom(schema)`
 * values it refuses (one violation at a time: a wrong type, a bound crossed, a pattern missed, a
 * required field left out, an unknown field on a closed object). Both are checked against the schema
 * itself by the caller (Ajv): the generator is a helper, the schema is the judge.
 *
 * Vendor keywords honoured (the document states them for what JSON Schema cannot):
 * - `x-after-now: true` on a `date-time`: a valid value lies in the near future.
 */
import fc from 'fast-check';

export type JsonSchema = {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  items?: JsonSchema;
  minItems?: number;
  maxItems?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  format?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
  propertyNames?: JsonSchema;
  default?: unknown;
  description?: string;
  'x-after-now'?: boolean;
};

/**
 * A string's length as the server counts it: UTF-16 code units (JavaScript's `length`; zod's
 * bounds), which docs/api.md states. JSON Schema counts code points, so a character outside the
 * BMP (an emoji) counts one there and two here: generated values keep to the stricter count.
 */
const units = (s: string) => s.length;
const codePoints = (s: string) => [...s].length;

/** Lookaheads fast-check cannot generate from: generate from the rest, keep what the whole accepts. */
function withoutLookaheads(pattern: string): string {
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === '\\') {
      out += pattern.slice(i, i + 2);
      i++;
    } else if (pattern.startsWith('(?!', i) || pattern.startsWith('(?=', i)) {
      let depth = 0;
      for (; i < pattern.length; i++) {
        if (pattern[i] === '\\') i++;
        else if (pattern[i] === '(') depth++;
        else if (pattern[i] === ')' && --depth === 0) break;
      }
    } else out += pattern[i];
  }
  return out;
}

const ISO_NEAR_FUTURE = fc
  .integer({ min: 5 * 60_000, max: 20 * 3_600_000 })
  .map((ms) => new Date(Date.now() + ms).toISOString());
const ISO_ANY = fc
  .date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date('2099-12-31T23:59:59Z'), noInvalidDate: true })
  .map((d) => d.toISOString());

/** Free text with the characters that have broken servers: quotes, separators, escapes, NUL, a lone surrogate, emoji. */
function freeText(min: number, max: number): fc.Arbitrary<string> {
  const unit = fc.constantFrom(
    'a',
    'Z',
    '0',
    '_',
    '-',
    ' ',
    'é',
    '€',
    '😀',
    '"',
    '\\',
    '/',
    '%',
    '?',
    '#',
    '\u0000',
    '\ud800',
    '\n',
  );
  return fc.string({
    unit: fc.oneof(fc.string({ minLength: 1, maxLength: 1 }), unit),
    minLength: min,
    maxLength: Math.min(max, min + 60),
  });
}

/** A string's patterns: its own and those zod writes as `allOf: [{pattern}, …]` when there are several. */
const patternsOf = (s: JsonSchema): string[] =>
  [s.pattern, ...(s.allOf ?? []).map((a) => a.pattern)].filter((p): p is string => p !== undefined);

function validString(s: JsonSchema): fc.Arbitrary<string> {
  const min = s.minLength ?? 0;
  const max = s.maxLength ?? Math.max(min, 40);
  const fits = (v: string) => codePoints(v) >= min && units(v) <= max;
  if (s.format === 'date-time') return s['x-after-now'] ? ISO_NEAR_FUTURE : ISO_ANY;
  if (s.format === 'uuid') return fc.uuid();
  const patterns = patternsOf(s);
  if (patterns.length > 0) {
    // Generated from the anchored pattern when there is one; every pattern must accept the value.
    const lead = patterns.find((p) => p.startsWith('^')) ?? patterns[0]!;
    const all = patterns.map((p) => new RegExp(p, 'u'));
    // The pattern bounds the length when the schema does not: a 40-character default would make a
    // pattern of fixed, longer length (`^[A-Za-z0-9_-]{43}$`) unsatisfiable and the filter spin.
    const patternMax = s.maxLength;
    const fitsPattern = (v: string) =>
      codePoints(v) >= min && (patternMax === undefined || units(v) <= patternMax);
    try {
      return fc
        .stringMatching(
          new RegExp(withoutLookaheads(lead), 'u'),
          patternMax === undefined ? {} : { maxLength: patternMax },
        )
        .filter((v) => all.every((re) => re.test(v)) && fitsPattern(v));
    } catch {
      // A class fast-check cannot enumerate (e.g. a negated Unicode property): free text, filtered.
      return freeText(min, max).filter((v) => all.every((re) => re.test(v)));
    }
  }
  return freeText(min, max).filter(fits);
}

function validNumber(s: JsonSchema, integer: boolean): fc.Arbitrary<number> {
  const lo =
    s.minimum ?? (s.exclusiveMinimum !== undefined ? s.exclusiveMinimum + (integer ? 1 : 1e-6) : -1e6);
  const hi =
    s.maximum ?? (s.exclusiveMaximum !== undefined ? s.exclusiveMaximum - (integer ? 1 : 1e-6) : 1e6);
  if (integer) {
    const min = Math.max(Math.ceil(lo), Number.MIN_SAFE_INTEGER);
    const max = Math.min(Math.floor(hi), Number.MAX_SAFE_INTEGER);
    return fc.oneof(fc.integer({ min, max }), fc.constantFrom(min, max));
  }
  return fc.double({ min: lo, max: hi, noNaN: true, noDefaultInfinity: true });
}

/** Values the schema accepts. */
export function validFrom(s: JsonSchema, depth = 0): fc.Arbitrary<unknown> {
  if (s.const !== undefined) return fc.constant(s.const);
  if (s.enum) return fc.constantFrom(...s.enum);
  const alternatives = s.anyOf ?? s.oneOf;
  if (alternatives) return fc.oneof(...alternatives.map((a) => validFrom(a, depth + 1)));
  if (s.allOf && s.allOf.length === 1) return validFrom(s.allOf[0]!, depth);
  const type = Array.isArray(s.type) ? s.type : s.type === undefined ? undefined : [s.type];
  if (type && type.length > 1) return fc.oneof(...type.map((t) => validFrom({ ...s, type: t }, depth + 1)));
  switch (type?.[0]) {
    case 'string':
      return validString(s);
    case 'integer':
      return validNumber(s, true);
    case 'number':
      return validNumber(s, false);
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    case 'array':
      return fc.array(validFrom(s.items ?? {}, depth + 1), {
        minLength: s.minItems ?? 0,
        maxLength: Math.min(s.maxItems ?? 5, (s.minItems ?? 0) + 5),
      });
    case 'object':
      return validObject(s, depth);
    default:
      // No type: anything JSON (kept shallow), without the keys every JSON body refuses (docs/api.md).
      return depth > 2 ? fc.constant(null) : fc.jsonValue({ maxDepth: 2 }).filter(noPoisonKeys);
  }
}

/** JSON bodies never hold a `__proto__` or `constructor` key (Fastify refuses them: docs/api.md). */
const POISON_KEYS = new Set(['__proto__', 'constructor']);
function noPoisonKeys(v: unknown): boolean {
  if (v === null || typeof v !== 'object') return true;
  if (Array.isArray(v)) return v.every(noPoisonKeys);
  return Object.entries(v).every(([k, x]) => !POISON_KEYS.has(k) && noPoisonKeys(x));
}

function validObject(s: JsonSchema, depth: number): fc.Arbitrary<Record<string, unknown>> {
  const props = s.properties ?? {};
  if (Object.keys(props).length === 0 && s.additionalProperties !== false) {
    const values =
      typeof s.additionalProperties === 'object'
        ? validFrom(s.additionalProperties, depth + 1)
        : fc.jsonValue({ maxDepth: 1 }).filter(noPoisonKeys);
    const keys = (
      s.propertyNames
        ? (validFrom(s.propertyNames, depth + 1) as fc.Arbitrary<string>)
        : fc.string({ minLength: 1, maxLength: 12 })
    ).filter((k) => !POISON_KEYS.has(k));
    return fc.dictionary(keys, values, { maxKeys: 4 });
  }
  const record: Record<string, fc.Arbitrary<unknown>> = {};
  for (const [k, v] of Object.entries(props)) record[k] = validFrom(v, depth + 1);
  return fc.record(record, { requiredKeys: (s.required ?? []).filter((k) => k in props) }) as fc.Arbitrary<
    Record<string, unknown>
  >;
}

/** Strings no pattern, format or enum of ours accepts (control characters, spaces, shouting). */
const GARBAGE = fc.constantFrom(
  '',
  ' ',
  'NOT VALID',
  '\u0000',
  'a b',
  '../..',
  '%zz',
  '🙂🙂',
  'Ünïcode',
  '-1',
  '1.5e400',
);

/**
 * Values the schema refuses: each breaks one rule of one place in the value (the rest valid).
 * Returns null when the schema accepts everything (nothing to break).
 */
export function invalidFrom(s: JsonSchema, depth = 0): fc.Arbitrary<unknown> | null {
  if (depth > 4) return null;
  const out: fc.Arbitrary<unknown>[] = [];
  const type = Array.isArray(s.type) ? s.type : s.type === undefined ? undefined : [s.type];
  if (s.enum || s.const !== undefined) out.push(GARBAGE, fc.constant(12345));
  const alternatives = s.anyOf ?? s.oneOf;
  if (alternatives) {
    const types = new Set(
      alternatives.flatMap((a) => (Array.isArray(a.type) ? a.type : a.type ? [a.type] : ['?'])),
    );
    if (!types.has('?') && !types.has('object')) out.push(fc.constant({ not: 'this' }));
  }
  if (type) {
    // The wrong JSON type altogether (a number for a string, a string for an object…).
    if (!type.includes('string')) out.push(fc.constant('text'));
    if (!type.includes('number') && !type.includes('integer')) out.push(fc.constant(7));
    if (!type.includes('object') && !type.includes('array')) out.push(fc.constant([1, 2]));
    if (!type.includes('null') && depth > 0) out.push(fc.constant(null));
  }
  if (type?.includes('string')) {
    if (s.maxLength !== undefined) out.push(fc.constant('a'.repeat(s.maxLength + 1)));
    if (s.minLength !== undefined && s.minLength > 0) out.push(fc.constant(''));
    const patterns = patternsOf(s).map((p) => new RegExp(p, 'u'));
    if (patterns.length > 0 || s.format !== undefined) {
      out.push(
        GARBAGE.filter(
          (v) =>
            !patterns.every((re) => re.test(v)) && (s.minLength === undefined || v.length >= s.minLength),
        ),
      );
    }
  }
  if (type?.includes('integer') || type?.includes('number')) {
    if (s.maximum !== undefined) out.push(fc.constant(s.maximum + 1));
    if (s.minimum !== undefined) out.push(fc.constant(s.minimum - 1));
    if (type.includes('integer') && !type.includes('number')) out.push(fc.constant(1.5));
  }
  if (type?.includes('array')) {
    if (s.maxItems !== undefined)
      out.push(
        fc.array(validFrom(s.items ?? {}, depth + 1), {
          minLength: s.maxItems + 1,
          maxLength: s.maxItems + 1,
        }),
      );
    const bad = s.items ? invalidFrom(s.items, depth + 1) : null;
    if (bad) out.push(bad.map((v) => [v]));
  }
  if (type?.includes('object')) {
    const props = s.properties ?? {};
    const required = (s.required ?? []).filter((k) => k in props);
    const base = validObject(s, depth);
    for (const k of required)
      out.push(base.map((o) => Object.fromEntries(Object.entries(o).filter(([key]) => key !== k))));
    if (s.additionalProperties === false) out.push(base.map((o) => ({ ...o, unexpected_field: 1 })));
    for (const [k, v] of Object.entries(props)) {
      const bad = invalidFrom(v, depth + 1);
      if (bad) out.push(fc.tuple(base, bad).map(([o, b]) => ({ ...o, [k]: b })));
    }
  }
  return out.length === 0 ? null : fc.oneof(...out);
}
