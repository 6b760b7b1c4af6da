import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createMetricsRegistry } from './registry.ts';

test('counters render in the Prometheus text format with escaped labels', async () => {
  const r = createMetricsRegistry();
  const c = r.counter('x_total', 'Things\nseen', ['route']);
  c.inc({ route: '/a/"b"\\c\nd' });
  c.inc({ route: '/a/"b"\\c\nd' }, 2);
  c.inc({ route: '/z', ignored: 'label' });
  c.inc({ route: '/z' }, -5); // counters never go down
  r.counter('x_total', 'same name, same labels: the same series', ['route']).inc({ route: '/z' });
  const text = await r.render();
  assert.equal(
    text,
    '# HELP x_total Things\\nseen\n# TYPE x_total counter\n' +
      'x_total{route="/a/\\"b\\"\\\\c\\nd"} 3\nx_total{route="/z"} 2\n',
  );
  assert.throws(() => r.counter('x_total', 'h', ['other']), /already registered/);
  assert.throws(() => r.counter('bad-name', 'h'), /not valid/);
});

test('a failing collector is skipped and reported; the others still render', async () => {
  const r = createMetricsRegistry();
  r.collect(async () => {
    throw new Error('db down');
  });
  r.collect(async () => [{ name: 'g', help: 'h', type: 'gauge', samples: [{ value: 1.5 }] }]);
  const errors: unknown[] = [];
  const text = await r.render((e) => errors.push(e));
  assert.equal(text, '# HELP g h\n# TYPE g gauge\ng 1.5\n');
  assert.equal(errors.length, 1);
});
