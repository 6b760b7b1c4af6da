/**
 * The rules of the governed-SQL classifier (ADR 0020): which class each parse-tree node gives the
 * statement it sits in. sql-classifier.ts walks the whole tree and keeps the worst class; a node type
 * that ends in `Stmt` and appears in none of these tables is refused (fail closed: a statement the
 * rules do not know is never approvable by class alone).
 */
import { ALLOWED_FUNCTIONS } from './explorer-functions.ts';

export type SqlClass = 'read' | 'write' | 'ddl' | 'destructive' | 'refused';

type Json = null | boolean | number | string | Json[] | JsonObject;
export type JsonObject = { [key: string]: Json };

/** What one node says: a class and why (null: no opinion), and whether its children are judged too. */
export type Judgement = { cls: SqlClass; reason: string } | null;
/**
 * `descend`: judge the children too; `'refusals'`: a stored body (view, rule, policy, function): its
 * children do not run now, so only what would be refused anywhere counts (a view calling
 * pg_read_file is still refused).
 */
export type NodeVerdict = { judgement: Judgement; descend: boolean | 'refusals' };

const words = (s: string): string[] => s.trim().split(/\s+/);

/** Statements that only change data (DML and its relatives). */
const WRITE_STMTS: Readonly<Record<string, string>> = {
  InsertStmt: 'INSERT changes data',
  MergeStmt: 'MERGE changes data',
  CallStmt: 'CALL runs a procedure, which may change anything its owner may',
  LockStmt: 'LOCK takes table locks',
  NotifyStmt: 'NOTIFY sends a message to other sessions of the database at commit',
  RefreshMatViewStmt: 'REFRESH MATERIALIZED VIEW rewrites the view under a lock',
};

/** Schema changes. Their children are judged too (a default or a CTAS query runs at once)... */
const DDL_STMTS: ReadonlySet<string> = new Set(
  words(`
    CreateStmt CreateTableAsStmt AlterTableStmt IndexStmt CreateSeqStmt AlterSeqStmt
    CreateDomainStmt AlterDomainStmt CompositeTypeStmt CreateEnumStmt AlterEnumStmt CreateRangeStmt
    CommentStmt RenameStmt AlterObjectSchemaStmt DefineStmt CreateCastStmt CreateOpClassStmt
    CreateOpFamilyStmt AlterOpFamilyStmt CreateConversionStmt CreateStatsStmt AlterStatsStmt
    AlterTSDictionaryStmt AlterTSConfigurationStmt CreateForeignTableStmt AlterCollationStmt
    CreateTransformStmt AlterOperatorStmt AlterTypeStmt ReindexStmt ClusterStmt AlterObjectDependsStmt
    CreateSchemaStmt
  `),
);

/**
 * ...except these, whose bodies are stored, not run (a view's query, a rule's actions, a policy, a
 * function's body and its `SET search_path = …` clause).
 */
const DDL_STORED_BODY: ReadonlySet<string> = new Set(
  words(
    'ViewStmt RuleStmt CreateTrigStmt CreatePolicyStmt AlterPolicyStmt CreateFunctionStmt AlterFunctionStmt',
  ),
);

/** Statements never run through a request, each with the reason. */
const REFUSED_STMTS: Readonly<Record<string, string>> = {
  CreateRoleStmt: 'roles are managed by the platform',
  AlterRoleStmt: 'roles are managed by the platform',
  AlterRoleSetStmt: 'roles are managed by the platform (a role setting applies to every later session)',
  DropRoleStmt: 'roles are managed by the platform',
  GrantStmt: 'privileges are managed by the platform (grants and revokes)',
  GrantRoleStmt: 'role membership is managed by the platform',
  AlterDefaultPrivilegesStmt: 'privileges are managed by the platform',
  AlterOwnerStmt: 'ownership is managed by the platform (an owner holds every privilege)',
  ReassignOwnedStmt: 'ownership is managed by the platform',
  DropOwnedStmt: 'ownership and privileges are managed by the platform',
  CreatedbStmt: 'databases are managed by the platform',
  AlterDatabaseStmt: 'databases are managed by the platform',
  AlterDatabaseSetStmt: 'a database setting applies to every later session, the platform\u2019s included',
  AlterDatabaseRefreshCollStmt: 'databases are managed by the platform',
  DropdbStmt: 'databases are managed by the platform',
  CreateExtensionStmt: 'extensions are installed by the platform (they run code as their installer)',
  AlterExtensionStmt: 'extensions are managed by the platform',
  AlterExtensionContentsStmt: 'extensions are managed by the platform',
  CreatePLangStmt: 'procedural languages are managed by the platform',
  TransactionStmt: 'the executor owns the transaction: a request runs in one, committed or rolled back whole',
  AlterSystemStmt: 'server configuration is managed by the platform',
  VariableSetStmt: 'session settings (timeouts, search_path, role) are pinned by the executor',
  DiscardStmt: 'session state is managed by the executor',
  DoStmt: 'an anonymous code block hides what it runs from review; create a reviewed function instead',
  LoadStmt: 'LOAD loads a shared library into the server',
  ListenStmt: 'LISTEN has no effect in a request: the session ends with it',
  UnlistenStmt: 'LISTEN/UNLISTEN have no effect in a request: the session ends with it',
  CheckPointStmt: 'CHECKPOINT is a server-wide operation',
  CreateTableSpaceStmt: 'tablespaces are server-level storage',
  DropTableSpaceStmt: 'tablespaces are server-level storage',
  AlterTableSpaceOptionsStmt: 'tablespaces are server-level storage',
  AlterTableMoveAllStmt: 'tablespaces are server-level storage',
  CreateFdwStmt: 'foreign-data wrappers reach other servers',
  AlterFdwStmt: 'foreign-data wrappers reach other servers',
  CreateForeignServerStmt: 'foreign servers reach other servers',
  AlterForeignServerStmt: 'foreign servers reach other servers',
  CreateUserMappingStmt: 'user mappings hold credentials for other servers',
  AlterUserMappingStmt: 'user mappings hold credentials for other servers',
  DropUserMappingStmt: 'user mappings hold credentials for other servers',
  ImportForeignSchemaStmt: 'foreign schemas reach other servers',
  CreateSubscriptionStmt: 'replication is managed by the platform',
  AlterSubscriptionStmt: 'replication is managed by the platform',
  DropSubscriptionStmt: 'replication is managed by the platform',
  CreatePublicationStmt: 'replication is managed by the platform',
  AlterPublicationStmt: 'replication is managed by the platform',
  CreateEventTrigStmt: 'event triggers run on every later DDL, the platform\u2019s included',
  AlterEventTrigStmt: 'event triggers run on every later DDL, the platform\u2019s included',
  CreateAmStmt: 'access methods are C code in the server',
  SecLabelStmt: 'security labels are managed by the platform',
  PrepareStmt: 'prepared statements outlive the request on the session and hide what EXECUTE runs',
  ExecuteStmt: 'EXECUTE runs a prepared statement the review cannot see',
  DeallocateStmt: 'prepared statements are not part of a request',
  DeclareCursorStmt: 'results are streamed by the executor; cursors are not part of a request',
  FetchStmt: 'results are streamed by the executor; cursors are not part of a request',
  ClosePortalStmt: 'results are streamed by the executor; cursors are not part of a request',
  ConstraintsSetStmt: 'SET CONSTRAINTS changes the transaction the executor owns',
};

/** DROP of these object types is refused rather than destructive (the platform manages them). */
const REFUSED_DROPS: Readonly<Record<string, string>> = {
  OBJECT_EXTENSION: 'extensions are managed by the platform',
  OBJECT_LANGUAGE: 'procedural languages are managed by the platform',
  OBJECT_EVENT_TRIGGER: 'event triggers are managed by the platform',
  OBJECT_FDW: 'foreign-data wrappers are managed by the platform',
  OBJECT_FOREIGN_SERVER: 'foreign servers are managed by the platform',
  OBJECT_PUBLICATION: 'replication is managed by the platform',
  OBJECT_ACCESS_METHOD: 'access methods are managed by the platform',
};

/** Languages whose functions run inside the database's own rules (trusted). Others are refused. */
const TRUSTED_LANGUAGES: ReadonlySet<string> = new Set(['sql', 'plpgsql']);

/**
 * Functions refused wherever they are called (any schema): they reach beyond the transaction — the
 * server's files, processes, configuration, replication, other servers — or change the session the
 * executor pinned (set_config can set `role`).
 */
const REFUSED_FUNCTIONS: Readonly<Record<string, string>> = {
  set_config: 'changes session settings, the role included',
  pg_terminate_backend: 'ends other sessions',
  pg_cancel_backend: 'cancels other sessions',
  pg_reload_conf: 'reloads the server configuration',
  pg_rotate_logfile: 'rotates the server log',
  pg_promote: 'promotes a standby',
  pg_switch_wal: 'forces a WAL switch',
  pg_create_restore_point: 'writes to the WAL stream',
  pg_backup_start: 'server backups are managed by the platform',
  pg_backup_stop: 'server backups are managed by the platform',
  lo_import: 'reads a server file',
  lo_export: 'writes a server file',
  pg_read_file: 'reads a server file',
  pg_read_binary_file: 'reads a server file',
  pg_stat_file: 'reads server file metadata',
  pg_file_write: 'writes a server file',
  pg_advisory_lock: 'a session-level lock outlives the request on the connection',
  pg_advisory_lock_shared: 'a session-level lock outlives the request on the connection',
  pg_try_advisory_lock: 'a session-level lock outlives the request on the connection',
  pg_try_advisory_lock_shared: 'a session-level lock outlives the request on the connection',
  pg_drop_replication_slot: 'replication is managed by the platform',
};

const REFUSED_FUNCTION_PREFIXES: Readonly<Record<string, string>> = {
  pg_ls_: 'lists server directories',
  dblink: 'connects to other servers',
  pg_create_logical_replication_slot: 'replication is managed by the platform',
  pg_create_physical_replication_slot: 'replication is managed by the platform',
  pg_replication_origin_: 'replication is managed by the platform',
  pg_logical_: 'replication is managed by the platform',
  pg_wal_replay_: 'controls recovery',
};

/** Functions the explorer allowlist holds that still write (they assign a transaction id). */
const WRITING_ALLOWED: ReadonlySet<string> = new Set(['txid_current', 'pg_current_xact_id']);

export function asObject(v: Json | undefined): JsonObject | null {
  return v !== null && v !== undefined && typeof v === 'object' && !Array.isArray(v) ? v : null;
}

/** Reads a list of String nodes as plain strings. */
export function names(list: Json | undefined): string[] {
  if (!Array.isArray(list)) return [];
  return list.map((item) => {
    const v = asObject(asObject(item)?.['String'])?.['sval'];
    return typeof v === 'string' ? v : '';
  });
}

function judgeFunction(body: JsonObject): Judgement {
  const n = names(body['funcname']);
  const name = n[n.length - 1] ?? '';
  const shown = `${n.join('.')}()`;
  if (Object.hasOwn(REFUSED_FUNCTIONS, name))
    return { cls: 'refused', reason: `${shown} ${REFUSED_FUNCTIONS[name]}` };
  for (const [prefix, why] of Object.entries(REFUSED_FUNCTION_PREFIXES)) {
    if (name.startsWith(prefix)) return { cls: 'refused', reason: `${shown} ${why}` };
  }
  const builtin = n.length === 1 || (n.length === 2 && n[0] === 'pg_catalog');
  if (builtin && ALLOWED_FUNCTIONS.has(name) && !WRITING_ALLOWED.has(name)) return null;
  return { cls: 'write', reason: `calls ${shown}, which is not known to be read-only` };
}

function explainAnalyzes(options: Json | undefined): boolean {
  if (!Array.isArray(options)) return false;
  return options.some((item) => {
    const def = asObject(asObject(item)?.['DefElem']);
    if (def?.['defname'] !== 'analyze') return false;
    const arg = asObject(def['arg']);
    if (!arg) return true;
    const s = asObject(arg['String'])?.['sval'];
    if (typeof s === 'string') return !['false', 'off', '0', 'no'].includes(s.toLowerCase());
    const i = asObject(arg['Integer']);
    if (i) return (i['ival'] ?? 0) !== 0;
    const b = asObject(arg['Boolean']);
    return b ? b['boolval'] === true : true;
  });
}

function judgeAlterTable(body: JsonObject): Judgement {
  let worst: Judgement = { cls: 'ddl', reason: 'ALTER changes the schema' };
  for (const item of Array.isArray(body['cmds']) ? body['cmds'] : []) {
    const sub = asObject(asObject(item)?.['AlterTableCmd'])?.['subtype'];
    if (sub === 'AT_ChangeOwner') return { cls: 'refused', reason: REFUSED_STMTS['AlterOwnerStmt'] ?? '' };
    if (sub === 'AT_SetTableSpace') return { cls: 'refused', reason: 'tablespaces are server-level storage' };
    if (sub === 'AT_DropColumn') worst = { cls: 'destructive', reason: 'DROP COLUMN deletes its data' };
    if (sub === 'AT_AlterColumnType' && worst.cls !== 'destructive') {
      worst = { cls: 'destructive', reason: 'ALTER COLUMN TYPE rewrites (and may truncate) its data' };
    }
  }
  return worst;
}

function judgeSetting(body: JsonObject): Judgement {
  const name = String(body['name'] ?? '');
  if (name === 'role' || name === 'session_authorization') {
    return { cls: 'refused', reason: 'SET ROLE / SESSION AUTHORIZATION changes who runs the request' };
  }
  if (/^(transaction|session characteristics)/i.test(name))
    return { cls: 'refused', reason: REFUSED_STMTS['TransactionStmt'] ?? '' };
  return { cls: 'refused', reason: REFUSED_STMTS['VariableSetStmt'] ?? '' };
}

function languageOf(body: JsonObject): string {
  for (const item of Array.isArray(body['options']) ? body['options'] : []) {
    const def = asObject(asObject(item)?.['DefElem']);
    if (def?.['defname'] === 'language')
      return String(asObject(asObject(def['arg'])?.['String'])?.['sval'] ?? '');
  }
  return 'sql';
}

const LABELS: Readonly<Record<string, string>> = {
  CreateStmt: 'CREATE TABLE',
  CreateTableAsStmt: 'CREATE TABLE AS',
  IndexStmt: 'CREATE INDEX',
  ViewStmt: 'CREATE VIEW',
  CreateTrigStmt: 'CREATE TRIGGER',
  RenameStmt: 'RENAME',
  CommentStmt: 'COMMENT',
  AlterObjectSchemaStmt: 'SET SCHEMA',
  CreateSeqStmt: 'CREATE SEQUENCE',
  AlterSeqStmt: 'ALTER SEQUENCE',
  CreateEnumStmt: 'CREATE TYPE',
  CompositeTypeStmt: 'CREATE TYPE',
  CreateRangeStmt: 'CREATE TYPE',
  AlterEnumStmt: 'ALTER TYPE',
  CreateDomainStmt: 'CREATE DOMAIN',
  AlterDomainStmt: 'ALTER DOMAIN',
  CreatePolicyStmt: 'CREATE POLICY',
  AlterPolicyStmt: 'ALTER POLICY',
  RuleStmt: 'CREATE RULE',
  ReindexStmt: 'REINDEX',
  ClusterStmt: 'CLUSTER',
  CreateStatsStmt: 'CREATE STATISTICS',
};
const label = (type: string): string => LABELS[type] ?? type.replace(/Stmt$/, '');

const refused = (reason: string): NodeVerdict => ({ judgement: { cls: 'refused', reason }, descend: false });
const is = (cls: SqlClass, reason: string, descend: boolean | 'refusals' = true): NodeVerdict => ({
  judgement: { cls, reason },
  descend,
});

/** The verdict of one node of the tree (statements, function calls); other nodes: no opinion. */
export function judgeNode(type: string, body: JsonObject): NodeVerdict {
  if (type === 'FuncCall') return { judgement: judgeFunction(body), descend: true };
  if (Object.hasOwn(REFUSED_STMTS, type)) {
    return type === 'VariableSetStmt'
      ? { judgement: judgeSetting(body), descend: false }
      : refused(REFUSED_STMTS[type] ?? '');
  }
  if (Object.hasOwn(WRITE_STMTS, type)) return is('write', WRITE_STMTS[type] ?? '');
  switch (type) {
    case 'SelectStmt':
      if (asObject(body['intoClause'])) return is('ddl', 'SELECT INTO creates a table');
      if (Array.isArray(body['lockingClause'])) return is('write', 'FOR UPDATE/SHARE takes row locks');
      return is('read', 'SELECT reads');
    case 'VariableShowStmt':
      return is('read', 'SHOW reads a setting', false);
    case 'ExplainStmt':
      return explainAnalyzes(body['options'])
        ? { judgement: null, descend: true } // it runs the statement: the inner statement decides
        : is('read', 'EXPLAIN without ANALYZE only plans', false);
    case 'UpdateStmt':
    case 'DeleteStmt': {
      const verb = type === 'UpdateStmt' ? 'UPDATE' : 'DELETE';
      if (body['whereClause'] === undefined)
        return is('destructive', `${verb} without WHERE affects every row`);
      return is('write', `${verb} changes data`);
    }
    case 'CopyStmt':
      if (body['is_program'] === true) return refused('COPY … PROGRAM runs a shell command on the server');
      if (typeof body['filename'] === 'string')
        return refused('COPY to or from a file reads or writes server files');
      if (body['is_from'] === true) return refused('COPY FROM STDIN: a request has no data stream');
      return is('read', 'COPY TO STDOUT reads');
    case 'VacuumStmt':
      if (body['is_vacuumcmd'] === true)
        return refused('VACUUM cannot run inside the request\u2019s transaction');
      return is('write', 'ANALYZE updates planner statistics');
    case 'DropStmt': {
      const why = REFUSED_DROPS[String(body['removeType'])];
      return why ? refused(why) : is('destructive', 'DROP deletes objects and their data');
    }
    case 'TruncateStmt':
      return is('destructive', 'TRUNCATE deletes every row');
    case 'AlterTableStmt':
      return { judgement: judgeAlterTable(body), descend: true };
    case 'CreateFunctionStmt': {
      const lang = languageOf(body); // exact: a quoted "SQL" is another language
      if (!TRUSTED_LANGUAGES.has(lang))
        return refused(`language ${lang} is not trusted (runs outside SQL's rules)`);
      return is('ddl', 'CREATE FUNCTION/PROCEDURE changes the schema', 'refusals');
    }
    case 'CreateSchemaStmt':
      if (asObject(body['authrole'])) return refused(REFUSED_STMTS['AlterOwnerStmt'] ?? '');
      return is('ddl', 'CREATE SCHEMA changes the schema');
  }
  if (DDL_STMTS.has(type)) return is('ddl', `${label(type)} changes the schema`);
  if (DDL_STORED_BODY.has(type)) return is('ddl', `${label(type)} changes the schema`, 'refusals');
  if (type.endsWith('Stmt')) return refused(`${type} is not known to the classifier`);
  return { judgement: null, descend: true };
}

/** Statements that change the schema, for the mixed-DDL-and-DML finding (TRUNCATE counts as DML). */
export function isSchemaChange(type: string): boolean {
  return DDL_STMTS.has(type) || DDL_STORED_BODY.has(type) || ['DropStmt', 'AlterTableStmt'].includes(type);
}

function isNodeKey(key: string): boolean {
  const c = key.charCodeAt(0);
  return c >= 65 && c <= 90;
}

type Visit = (type: string, body: JsonObject) => boolean;

/**
 * Calls `visit` on every wrapped node (`{Type: {...}}`) below `value`; bare structs (e.g.
 * `InsertStmt.relation`, `SelectStmt.intoClause`) are walked through like any object. `visit`
 * returns whether to go below the node.
 */
export function walkTree(value: unknown, visit: Visit): void {
  if (value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    for (const item of value) walkTree(item, visit);
    return;
  }
  const obj = value as JsonObject;
  const keys = Object.keys(obj);
  const only = keys.length === 1 ? keys[0] : undefined;
  const inner = only === undefined ? null : obj[only];
  if (
    only !== undefined &&
    isNodeKey(only) &&
    inner !== null &&
    typeof inner === 'object' &&
    !Array.isArray(inner)
  ) {
    if (visit(only, inner)) for (const k in inner) walkTree(inner[k], visit);
    return;
  }
  for (const k of keys) walkTree(obj[k], visit);
}
