// Review probes (issue 15): a tenant owner plants code in its database that a backup or a restore
// runs (real PostgreSQL, real pg_dump/pg_restore, real PgBouncer, the agent's own job handlers).
// Each test asserts the SAFE behaviour; a probe that shows a vulnerability is marked `todo`.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { type BackupKit, startBackupKit } from './helpers/backup-kit.ts';

let kit: BackupKit;
before(async () => {
  kit = await startBackupKit();
});
after(async () => {
  await kit?.close();
});

/**
 * A CHECK constraint whose function, when the restore's COPY evaluates it, says `RESET ROLE`
 * (pg_restore --role=<owner> is a SET ROLE over the restore's login) and, as whatever role that
 * reaches, tries what only the database's owner or the owner role could do; any success fails the
 * restore with `escalated`.
 */
const PLANT = `
  CREATE FUNCTION public.rba_probe(v int) RETURNS boolean LANGUAGE plpgsql AS $f$
  DECLARE cur text := current_user; me text; got text := '';
  BEGIN
    BEGIN
      EXECUTE 'RESET ROLE';
      me := current_user;
    EXCEPTION WHEN others THEN me := cur;
    END;
    IF me <> cur THEN
      BEGIN
        EXECUTE format('ALTER DATABASE %I SET work_mem = %L', current_database(), '77kB');
        got := got || ' alter-database';
      EXCEPTION WHEN others THEN NULL;
      END;
      BEGIN
        EXECUTE 'CREATE TABLE public.rba_mine (x int)';
        got := got || ' create-in-public';
      EXCEPTION WHEN others THEN NULL;
      END;
      BEGIN
        PERFORM count(*) FROM pg_catalog.pg_db_role_setting;
        PERFORM count(*) FROM public.rba_probed;
        got := got || ' read-tenant-table';
      EXCEPTION WHEN others THEN NULL;
      END;
      BEGIN
        EXECUTE 'SET ROLE NONE';
        EXECUTE format('SET ROLE %I', (SELECT r.rolname FROM pg_catalog.pg_database d
          JOIN pg_catalog.pg_roles r ON r.oid = d.datdba WHERE d.datname = current_database()));
        got := got || ' set-role-steward';
      EXCEPTION WHEN others THEN NULL;
      END;
      EXECUTE format('SET ROLE %I', cur);
      IF got <> '' THEN
        RAISE EXCEPTION 'escalated from % to %:%', cur, me, got;
      END IF;
    END IF;
    RETURN true;
  END $f$;
  CREATE TABLE public.rba_probed (v int CHECK (public.rba_probe(v)));
  INSERT INTO public.rba_probed VALUES (1), (2);
`;

test('a restore runs tenant CHECK code with nothing more than the owner: RESET ROLE reaches a role that can do nothing', async () => {
  const source = await kit.tenants.create('rba');
  const c = await kit.tenants.loginOwner(source);
  try {
    await c.query(PLANT);
  } finally {
    await c.end();
  }
  const b = await kit.backup(source);
  assert.equal(b.result.verified, true);
  const outcome = await kit.restoreNew(source, b).then(
    (t) => `restored ${t.name}`,
    (err: Error) => `failed: ${err.message}`,
  );
  assert.doesNotMatch(outcome, /escalated/, outcome);
  assert.match(outcome, /^restored /, outcome);
});

test('a backup runs no tenant code as the steward (a planted view, a function in a default)', async () => {
  const source = await kit.tenants.create('rbb');
  const c = await kit.tenants.loginOwner(source);
  try {
    await c.query(`
      CREATE TABLE public.rbb_log (who text);
      CREATE FUNCTION public.rbb_who() RETURNS text LANGUAGE plpgsql AS $f$
      BEGIN INSERT INTO public.rbb_log VALUES (session_user || '/' || current_user); RETURN 'x'; END $f$;
      CREATE VIEW public.rbb_v AS SELECT public.rbb_who() AS w;
      CREATE TABLE public.rbb_t (a int, b text DEFAULT public.rbb_who());
      INSERT INTO public.rbb_t (a) VALUES (1);
      DELETE FROM public.rbb_log;
    `);
  } finally {
    await c.end();
  }
  const b = await kit.backup(source);
  assert.equal(b.result.verified, true);
  const after = await kit.tenants.loginOwner(source);
  try {
    const r = await after.query('SELECT who FROM public.rbb_log');
    assert.deepEqual(r.rows, [], 'the backup ran tenant code');
  } finally {
    await after.end();
  }
});

test("a restore's tenant code cannot set the steward's password (a platform login) and log in with it", async () => {
  const source = await kit.tenants.create('rbp');
  const c = await kit.tenants.loginOwner(source);
  try {
    await c.query(`
        CREATE FUNCTION public.rbp_probe(v int) RETURNS boolean LANGUAGE plpgsql AS $f$
        DECLARE cur text := current_user;
        BEGIN
          BEGIN
            EXECUTE 'RESET ROLE';
            IF current_user <> cur THEN
              EXECUTE format('ALTER ROLE %I PASSWORD %L', current_user, 'rbp-known-password-1');
            END IF;
            EXECUTE format('SET ROLE %I', cur);
          EXCEPTION WHEN others THEN RAISE WARNING 'rbp: %', SQLERRM;
          END;
          RETURN true;
        END $f$;
        CREATE TABLE public.rbp_probed (v int CHECK (public.rbp_probe(v)));
        INSERT INTO public.rbp_probed VALUES (1);
      `);
  } finally {
    await c.end();
  }
  const b = await kit.backup(source);
  const outcome = await kit.restoreNew(source, b).then(
    async (t) => {
      const o = await kit.tenants.loginOwner(t);
      let steward: string;
      try {
        steward = (
          await o.query(
            'SELECT r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = current_database()',
          )
        ).rows[0].rolname;
      } finally {
        await o.end();
      }
      return kit.tenants
        .loginOwner({ name: t.name, user: steward, password: 'rbp-known-password-1' })
        .then(async (x) => {
          const who = (await x.query('SELECT current_user AS u')).rows[0].u;
          await x.end();
          return `logged in as ${who}`;
        })
        .catch((err: Error) => `restored; steward login refused: ${err.message}`);
    },
    (err: Error) => `restore failed: ${err.message}`,
  );
  console.error('RBP-OUTCOME', outcome);
  assert.doesNotMatch(outcome, /logged in as/, outcome);
});

test('a restore leaves no function owned by the steward that a tenant can call afterwards', async () => {
  const source = await kit.tenants.create('rbd');
  const c = await kit.tenants.loginOwner(source);
  try {
    await c.query(`
        CREATE FUNCTION public.rbd_probe(v int) RETURNS boolean LANGUAGE plpgsql AS $f$
        DECLARE cur text := current_user;
        BEGIN
          BEGIN
            EXECUTE 'RESET ROLE';
            IF current_user <> cur AND to_regproc('public.rbd_door') IS NULL THEN
              EXECUTE $d$CREATE FUNCTION public.rbd_door() RETURNS text LANGUAGE sql SECURITY DEFINER
                         AS 'SELECT current_user::text'$d$;
            END IF;
            EXECUTE format('SET ROLE %I', cur);
          EXCEPTION WHEN others THEN NULL;
          END;
          RETURN true;
        END $f$;
        CREATE TABLE public.rbd_probed (v int CHECK (public.rbd_probe(v)));
        INSERT INTO public.rbd_probed VALUES (1);
      `);
  } finally {
    await c.end();
  }
  const b = await kit.backup(source);
  const outcome = await kit.restoreNew(source, b).then(
    async (t) => {
      const o = await kit.tenants.loginOwner(t);
      try {
        const r = await o
          .query('SELECT public.rbd_door() AS who')
          .then((x) => `door runs as ${x.rows[0].who}`)
          .catch((err: Error) => `no door: ${err.message}`);
        return r;
      } finally {
        await o.end();
      }
    },
    (err: Error) => `restore failed: ${err.message}`,
  );
  console.error('RBD-OUTCOME', outcome);
  assert.doesNotMatch(outcome, /door runs as .*steward|door runs as bulwark_/, outcome);
});
