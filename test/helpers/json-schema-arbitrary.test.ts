import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import fc from 'fast-check';
import { z } from 'zod';
import { NEW_DATABASE_NAME_PATTERN } from '../../src/shared/identifiers.ts';
import { invalidFrom, type JsonSchema, validFrom } from './json-schema-arbitrary.ts';

// The OpenAPI fuzz's generator against the judge it is used with (Ajv): what it calls valid is, and
// what it calls invalid is not, for the kinds of schema zod writes into the document.

const ajv = new Ajv2020({ strict: false });
addFormats.default(ajv);

const schemas: Record<string, JsonSchema> = Object.fromEntries(
  Object.entries({
    name: z.string().min(1).max(63).regex(NEW_DATABASE_NAME_PATTERN),
    blankless: z
      .string()
      .regex(/\S/)
      .trim()
      .min(1)
      .max(100)
      .regex(/^[^\p{Cc}]+$/u),
    body: z
      .object({
        cidr: z
          .string()
          .min(3)
          .max(64)
          .regex(/^(?:\d{1,3}\.){3}\d{1,3}\/\d{1,2}$/),
        at: z.iso.datetime({ offset: true }).max(40).optional(),
        n: z.number().int().min(1).max(10),
        tags: z.array(z.enum(['a', 'b'])).max(3),
        extra: z.record(z.string().max(10), z.unknown()).optional(),
      })
      .strict(),
    nullable: z.string().max(5).nullable(),
  }).map(([k, v]) => [k, z.toJSONSchema(v, { target: 'draft-2020-12', io: 'input' }) as JsonSchema]),
);

for (const [name, schema] of Object.entries(schemas)) {
  test(`${name}: generated valid values pass the schema, invalid ones do not`, () => {
    const check = ajv.compile(schema);
    for (const v of fc.sample(validFrom(schema), { seed: 19, numRuns: 300 }))
      assert.ok(check(v), `valid? ${JSON.stringify(v)}: ${ajv.errorsText(check.errors)}`);
    const bad = invalidFrom(schema);
    assert.ok(bad, 'something to break');
    let refused = 0;
    const samples = fc.sample(bad, { seed: 19, numRuns: 300 });
    for (const v of samples) if (!check(v)) refused++;
    // The fuzz drops an "invalid" value the schema accepts; most must be refused, or it tests little.
    assert.ok(refused >= samples.length * 0.8, `${refused} of ${samples.length} refused`);
  });
}
