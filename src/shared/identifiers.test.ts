import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  assertValidName,
  isReservedDatabaseName,
  isValidName,
  NAME_PATTERN,
  NEW_DATABASE_NAME_PATTERN,
  quoteIdent,
  quoteLiteral,
  RESERVED_DATABASE_NAMES,
  roleNames,
} from './identifiers.ts';

const NAME_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789_';

function randomName(prefix: string, length: number): string {
  let s = prefix;
  const bytes = randomBytes(length);
  for (let i = 0; s.length < length; i++) s += NAME_CHARS[bytes[i]! % NAME_CHARS.length];
  return s;
}

describe('names', () => {
  it('accepts valid names', () => {
    for (const s of ['a', 'shop', 'shop_2024', 'a_b_c', 'x'.repeat(63), 'a0', 'a_']) {
      assert.ok(isValidName(s), s);
      assert.equal(assertValidName(s), s);
    }
  });

  it('rejects invalid names and non-strings', () => {
    const bad: unknown[] = [
      '',
      '_a',
      '1a',
      'A',
      'aB',
      'a-b',
      'a b',
      'a.b',
      'a"b',
      "a'b",
      'a;drop',
      'é',
      'x'.repeat(64),
      'a\n',
      'a\0',
      null,
      undefined,
      42,
      ['a'],
    ];
    for (const s of bad) {
      assert.equal(isValidName(s), false, String(s));
      assert.throws(() => assertValidName(s), TypeError);
    }
  });

  it('assertValidName explains what was wrong', () => {
    assert.throws(() => assertValidName('Bad-Name', 'database name'), {
      name: 'TypeError',
      message: /invalid database name "Bad-Name": must start with a lowercase letter/,
    });
    assert.throws(() => assertValidName(7), { message: /invalid name number/ });
    assert.throws(
      () => assertValidName('x'.repeat(1000)),
      (e: Error) => e.message.length < 300,
    );
  });

  it('reserved database names', () => {
    for (const n of RESERVED_DATABASE_NAMES) assert.ok(isReservedDatabaseName(n), n);
    for (const n of ['pg_stat', 'pg_x', 'bulwark_audit', 'bulwark_']) assert.ok(isReservedDatabaseName(n), n);
    for (const n of ['shop', 'pgx', 'pg', 'bulwarkx', 'my_postgres', 'template2x']) {
      assert.equal(isReservedDatabaseName(n), false, n);
    }
  });
  it('NEW_DATABASE_NAME_PATTERN (published in the API document) is a valid name that is not reserved', () => {
    const samples = [
      ...RESERVED_DATABASE_NAMES,
      'pg_x',
      'pg_',
      'pg',
      'pgbouncer2',
      'bulwark_',
      'bulwark_x',
      'bulwark2',
      'bulwarkx',
      'postgres_app',
      'template',
      'template01',
      'shop',
      'A',
      '',
      'x'.repeat(63),
      'x'.repeat(64),
    ];
    for (let i = 0; i < 2000; i++)
      samples.push(randomName(['', 'pg', 'pg_', 'bulwark', 'bulwark_', 'p'][i % 6]!, 1 + (i % 70)));
    for (const n of samples) {
      const expected = isValidName(n) && !isReservedDatabaseName(n);
      assert.equal(NEW_DATABASE_NAME_PATTERN.test(n), expected, n);
    }
  });
});

describe('quoteIdent', () => {
  it('quotes like Postgres', () => {
    assert.equal(quoteIdent('shop'), '"shop"');
    assert.equal(quoteIdent('Mixed Case'), '"Mixed Case"');
    assert.equal(quoteIdent('a"b'), '"a""b"');
    assert.equal(quoteIdent('"'), '""""');
    assert.equal(quoteIdent('x"; DROP TABLE t; --'), '"x""; DROP TABLE t; --"');
    assert.equal(quoteIdent("it's"), `"it's"`);
  });

  it('refuses NUL, empty and > 63 bytes (multi-byte aware)', () => {
    assert.throws(() => quoteIdent('a\0b'), /NUL/);
    assert.throws(() => quoteIdent(''), /empty/);
    assert.equal(quoteIdent('x'.repeat(63)), `"${'x'.repeat(63)}"`);
    assert.throws(() => quoteIdent('x'.repeat(64)), /63 bytes/);
    assert.equal(quoteIdent('é'.repeat(31)), `"${'é'.repeat(31)}"`); // 62 bytes
    assert.throws(() => quoteIdent('é'.repeat(32)), /63 bytes/); // 64 bytes, 32 chars
    assert.throws(() => quoteIdent(1 as unknown as string), TypeError);
  });

  it('the quoted result always parses back to the original identifier', () => {
    const alphabet = ['a', '"', ' ', ';', "'", '\\', 'é', '$', '-'];
    for (let i = 0; i < 500; i++) {
      let s = '';
      const n = 1 + (i % 20);
      for (let j = 0; j < n; j++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
      const q = quoteIdent(s);
      assert.ok(q.startsWith('"') && q.endsWith('"'));
      const inner = q.slice(1, -1);
      // every double quote inside is paired, so the identifier cannot end early
      assert.doesNotMatch(inner.replaceAll('""', ''), /"/);
      assert.equal(inner.replaceAll('""', '"'), s);
    }
  });
});

describe('quoteLiteral', () => {
  it('doubles single quotes, leaves backslashes (standard_conforming_strings)', () => {
    assert.equal(quoteLiteral(''), "''");
    assert.equal(quoteLiteral('secret'), "'secret'");
    assert.equal(quoteLiteral("o'brien"), "'o''brien'");
    assert.equal(quoteLiteral("'; DROP ROLE x; --"), "'''; DROP ROLE x; --'");
    assert.equal(quoteLiteral('a\\b'), "'a\\b'");
    assert.equal(quoteLiteral('$$'), "'$$'");
  });

  it('refuses NUL without echoing the value', () => {
    assert.throws(
      () => quoteLiteral('hunter2\0'),
      (e: Error) => e instanceof TypeError && /NUL/.test(e.message) && !e.message.includes('hunter2'),
    );
    assert.throws(() => quoteLiteral(undefined as unknown as string), TypeError);
  });
});

describe('roleNames', () => {
  it('short names get plain suffixes', () => {
    assert.deepEqual(roleNames('shop'), {
      owner: 'shop_owner',
      reader: 'shop_reader',
      migrator: 'shop_migrator',
      explorer: 'shop_explorer',
      steward: 'shop_steward',
    });
  });

  it('rejects invalid database names', () => {
    assert.throws(() => roleNames('Shop'), TypeError);
    assert.throws(() => roleNames(''), TypeError);
    assert.throws(() => roleNames('a"b'), TypeError);
  });

  it('long names are truncated with a stable hash tag and always fit', () => {
    const db = 'a'.repeat(63);
    const tag = createHash('sha256').update(db).digest('hex').slice(0, 16);
    const r = roleNames(db);
    assert.deepEqual(roleNames(db), r); // stable
    for (const [kind, role] of Object.entries(r)) {
      assert.equal(role.length, 63, kind);
      assert.ok(role.endsWith(`_${tag}_${kind}`), role);
      assert.match(role, NAME_PATTERN);
    }
    assert.equal(r.owner, `${'a'.repeat(40)}_${tag}_owner`);
    assert.equal(r.explorer, `${'a'.repeat(37)}_${tag}_explorer`);
    assert.equal(r.steward, `${'a'.repeat(38)}_${tag}_steward`);
  });

  it('boundary: untruncated role names are at most 62 chars, truncated exactly 63', () => {
    const suffixes = {
      owner: '_owner',
      reader: '_reader',
      migrator: '_migrator',
      explorer: '_explorer',
      steward: '_steward',
    };
    for (let len = 1; len <= 63; len++) {
      const db = randomName('d', len);
      const r = roleNames(db);
      for (const [kind, suffix] of Object.entries(suffixes)) {
        const role = r[kind as keyof typeof r];
        assert.match(role, NAME_PATTERN);
        if (len + suffix.length <= 62) assert.equal(role, db + suffix);
        else assert.equal(role.length, 63);
      }
    }
    assert.equal(roleNames('x'.repeat(56)).owner, `${'x'.repeat(56)}_owner`); // 62 chars
    assert.equal(roleNames('x'.repeat(57)).owner.length, 63); // untagged would be exactly 63 → tagged
    assert.notEqual(roleNames('x'.repeat(57)).owner, `${'x'.repeat(57)}_owner`);
  });

  it('a db name crafted to look like another one’s truncated form does not collide', () => {
    const victim = randomName('victim_', 63);
    const tag = createHash('sha256').update(victim).digest('hex').slice(0, 16);
    const victimRoles = roleNames(victim);
    // For each suffix, build the db name whose untagged role would equal the victim's role.
    for (const [kind, role] of Object.entries(victimRoles)) {
      const crafted = role.slice(0, role.length - kind.length - 1);
      assert.ok(crafted.endsWith(`_${tag}`));
      assert.match(crafted, NAME_PATTERN);
      const craftedRoles = Object.values(roleNames(crafted));
      for (const v of Object.values(victimRoles)) assert.ok(!craftedRoles.includes(v), `${kind}: ${v}`);
    }
  });

  it('never collides for 5,000 random long names sharing a prefix (across all kinds)', () => {
    const prefix = 'tenant_shared_prefix_for_collision_testing_abcdefgh_'; // 52 chars
    const seen = new Map<string, string>();
    const dbs = new Set<string>();
    while (dbs.size < 5000) dbs.add(randomName(prefix, 53 + Math.floor(Math.random() * 11)));
    // plus every length around the truncation boundary, including the exact-63 edge
    for (let len = 45; len <= 63; len++) dbs.add(randomName(prefix.slice(0, 40), len));
    for (const db of dbs) {
      for (const role of Object.values(roleNames(db))) {
        assert.ok(role.length <= 63 && NAME_PATTERN.test(role), role);
        const prev = seen.get(role);
        assert.ok(prev === undefined, `${role} from ${db} and ${prev}`);
        seen.set(role, db);
      }
    }
    assert.equal(seen.size, dbs.size * 5);
  });
});
