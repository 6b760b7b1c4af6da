import assert from 'node:assert/strict';
import { test } from 'node:test';
import { filterToc } from './restore-pipeline.ts';

/** A real `pg_restore --list` of a tenant database (made from the tenant template), trimmed. */
const TOC = `;
; Archive created at 2026-12-02 09:40:00 UTC
;
7; 2615 2200 SCHEMA - public t_owner
3452; 0 0 ACL - SCHEMA public t_owner
8; 2615 19932 SCHEMA - s2 t_owner
2; 3079 19895 EXTENSION - pgcrypto 
3453; 0 0 COMMENT - EXTENSION pgcrypto 
218; 1259 19887 TABLE public a t_owner
3517; 0 0 COMMENT public TABLE a t_owner
3518; 0 0 ACL public TABLE a t_owner
219; 1259 19933 VIEW s2 v t_migrator
3443; 0 19887 TABLE DATA public a t_owner
3440; 6104 19937 PUBLICATION - p t_owner
3445; 0 0 ACL pg_catalog TABLE pg_db_role_setting bulwark_admin
3398; 0 0 ACL pg_catalog FUNCTION pg_stat_get_backend_activity(integer) bulwark_admin
2129; 826 19885 DEFAULT ACL public DEFAULT PRIVILEGES FOR SEQUENCES t_migrator
2127; 826 19883 DEFAULT ACL public DEFAULT PRIVILEGES FOR TABLES t_owner
3293; 3466 17462 EVENT TRIGGER - bulwark_extension_guard bulwark_admin
3294; 0 0 DATABASE - t t_steward
a line that is not an entry
`;

test('the restore list keeps what the tenant owns and drops platform objects', () => {
  const { list, dropped } = filterToc(TOC, {
    tenantRoles: new Set(['t_owner', 't_migrator']),
    restoringRole: 't_owner',
  });
  const kept = list
    .split('\n')
    .filter((l) => /^\d+;/.test(l))
    .map((l) => l.split(';')[0]);
  assert.deepEqual(kept, ['3452', '8', '2', '3453', '218', '3517', '3518', '219', '3443', '3440', '2127']);
  const gone = dropped.map((l) => l.split(';')[0]);
  assert.deepEqual(gone, ['7', '3445', '3398', '2129', '3293', '3294', 'a line that is not an entry']);
  // Comments of the archive stay (pg_restore ignores them).
  assert.ok(list.startsWith(';\n; Archive created'));
});
