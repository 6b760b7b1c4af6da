/**
 * What makes a built-in function safe for the SQL explorer: the rules from which
 * scripts/explorer-allowlist.ts derives explorer-functions.generated.ts out of a real PostgreSQL's
 * pg_proc (ADR 0012), and the reviewed exceptions to them. Nothing here is a list of names that are
 * allowed: a name is allowed when every function of that name in pg_catalog is of the safe kind
 * (the validator sees names, not argument types, so one risky overload refuses the name), and it is
 * not on the deny list below.
 *
 * A function is of the safe kind when:
 *   - it is an ordinary, aggregate or window function (prokind f/a/w; not a procedure);
 *   - it is IMMUTABLE or STABLE: it cannot change anything (a VOLATILE one may: sequences, locks,
 *     large objects, notifications, settings, signals, files), unless listed in JUSTIFIED_VOLATILE;
 *   - it is not SECURITY DEFINER, and its language is `internal` or `sql` (no C from a library);
 *   - no argument or result is of a pseudo-type other than the polymorphic ones (`internal`,
 *     `cstring`, `trigger`, `void`, handlers: plumbing and side effects) or of a type whose value
 *     names a catalog object (CATALOG_TYPES: their input looks roles, relations, functions up —
 *     roles cluster-wide — or exposes server internals);
 *   - when STABLE, no argument is an `oid` (or `oid[]`, `oidvector`): a stable function given an
 *     oid looks a catalog object up (an immutable one should not: `max(oid)` only compares numbers;
 *     the one that does anyway is denied below).
 *
 * The catalog cannot know the rest: which stable functions read other sessions, other databases,
 * server files or settings. Those are DENIED_FUNCTIONS / DENIED_PREFIXES, each with its reason; the
 * validator refuses them whatever the catalog says, with that reason.
 */

export type Reasons = Readonly<Record<string, string>>;

/** Polymorphic pseudo-types: a function taking them computes on its arguments, nothing more. */
export const SAFE_PSEUDO_TYPES: readonly string[] = [
  'any',
  'anyarray',
  'anycompatible',
  'anycompatiblearray',
  'anycompatiblemultirange',
  'anycompatiblenonarray',
  'anycompatiblerange',
  'anyelement',
  'anyenum',
  'anymultirange',
  'anynonarray',
  'anyrange',
  'record',
];

/**
 * Types whose values name catalog objects or expose server internals (and arrays of them).
 * `regconfig` (a text-search configuration of the tenant's own database) is not among them:
 * `to_tsvector('english', body)` needs it.
 */
export const CATALOG_TYPES: Reasons = {
  regclass: 'a relation looked up by name',
  regproc: 'a function looked up by name',
  regprocedure: 'a function looked up by signature',
  regoper: 'an operator looked up by name',
  regoperator: 'an operator looked up by signature',
  regtype: 'a type looked up by name',
  regrole: 'a role looked up by name, cluster-wide: tells whether another tenant exists',
  regnamespace: 'a schema looked up by name',
  regcollation: 'a collation looked up by name',
  regdictionary: 'a text-search dictionary looked up by name',
  aclitem: 'privileges naming roles, looked up cluster-wide',
  pg_node_tree: 'internal planner trees from the catalogs',
  pg_ndistinct: 'planner statistics',
  pg_dependencies: 'planner statistics',
  pg_mcv_list: 'planner statistics (sample values of other relations)',
  txid_snapshot: "snapshots: other sessions' transactions",
  pg_snapshot: "snapshots: other sessions' transactions",
  refcursor: 'cursors of the pooled session',
  xml: 'the XML parser (the explorer refuses XML)',
};

/** VOLATILE functions allowed anyway: each reads a clock or a random source and changes nothing. */
export const JUSTIFIED_VOLATILE: Reasons = {
  random: 'a pseudo-random number; changes nothing but its own generator',
  clock_timestamp: 'the wall clock',
  timeofday: 'the wall clock, as text',
  gen_random_uuid: 'a random UUID',
};

/**
 * Overloads that fail the rules but do not refuse their name, because the risk the rule guards
 * against cannot happen through them (signature as `regprocedure` prints it).
 */
export const HARMLESS_OVERLOADS: Reasons = {
  'text(xml)': 'prints a stored xml value without parsing it; the explorer cannot make an xml value',
};

/**
 * Functions the catalog marks IMMUTABLE or STABLE (so the rules alone would allow them) that reach
 * beyond the tenant's own data. Refused by the validator with this reason.
 */
export const DENIED_FUNCTIONS: Reasons = {
  current_setting: 'reads server settings (file paths, and any custom setting, which may hold a secret)',
  pg_settings_get_flags: 'reads server settings',
  pg_show_all_settings: 'reads server settings',
  current_user: "names the platform's login role",
  session_user: "names the platform's login role",
  getpgusername: "names the platform's login role",
  pg_has_role: 'looks roles up cluster-wide: tells whether another tenant exists',
  has_any_column_privilege: 'looks roles up cluster-wide: tells whether another tenant exists',
  has_column_privilege: 'looks roles up cluster-wide: tells whether another tenant exists',
  has_database_privilege: 'looks databases and roles up cluster-wide: tells whether another tenant exists',
  has_foreign_data_wrapper_privilege: 'looks roles up cluster-wide: tells whether another tenant exists',
  has_function_privilege: 'looks roles up cluster-wide: tells whether another tenant exists',
  has_language_privilege: 'looks roles up cluster-wide: tells whether another tenant exists',
  has_parameter_privilege: 'looks roles up cluster-wide: tells whether another tenant exists',
  has_schema_privilege: 'looks roles up cluster-wide: tells whether another tenant exists',
  has_sequence_privilege: 'looks roles up cluster-wide: tells whether another tenant exists',
  has_server_privilege: 'looks roles up cluster-wide: tells whether another tenant exists',
  has_table_privilege: 'looks roles up cluster-wide: tells whether another tenant exists',
  has_tablespace_privilege: 'looks tablespaces and roles up cluster-wide',
  has_type_privilege: 'looks roles up cluster-wide: tells whether another tenant exists',
  inet_client_addr: "the pooler's network address",
  inet_client_port: "the pooler's network port",
  inet_server_addr: "the server's network address",
  inet_server_port: "the server's network port",
  pg_available_extensions: "reads the server's extension files",
  pg_available_extension_versions: "reads the server's extension files",
  pg_extension_update_paths: "reads the server's extension files",
  pg_config: "the server's build configuration and file paths",
  pg_backend_pid: 'the server process of the pooled session (a target for signals)',
  pg_conf_load_time: "the server's state, not the tenant's data",
  pg_postmaster_start_time: "the server's state, not the tenant's data",
  pg_cursor: 'state of the pooled session, which other requests share',
  pg_listening_channels: 'state of the pooled session, which other requests share',
  pg_event_trigger_table_rewrite_reason: 'event-trigger internals',
  pg_get_serial_sequence: 'catalog introspection (the schema endpoint serves the schema)',
  pg_get_viewdef: 'catalog introspection (the schema endpoint serves the schema)',
  row_security_active: 'catalog introspection (the schema endpoint serves the schema)',
  satisfies_hash_partition: 'opens a relation by oid, although marked IMMUTABLE',
  pg_replication_origin_oid: 'looks replication origins up, cluster-wide',
  mxid_age: "the server's multixact counter (other tenants' activity)",
  pg_walfile_name: "the server's WAL file names",
  pg_walfile_name_offset: "the server's WAL file names",
  txid_current: 'assigns a transaction id: a write, even in a READ ONLY transaction',
  txid_current_if_assigned: "the server's transaction ids",
  pg_current_xact_id: 'assigns a transaction id: a write, even in a READ ONLY transaction',
  pg_current_xact_id_if_assigned: "the server's transaction ids",
  xml_is_well_formed: 'the XML parser (the explorer refuses XML)',
  xml_is_well_formed_content: 'the XML parser (the explorer refuses XML)',
  xml_is_well_formed_document: 'the XML parser (the explorer refuses XML)',
};

/** Families denied by prefix, for the same reasons. */
export const DENIED_PREFIXES: Reasons = {
  pg_stat_get_: 'statistics of other sessions and other databases (activity, queries, client addresses)',
  pg_stat_clear_: 'resets statistics',
  pg_stat_reset: 'resets statistics',
};

/** The reason a name is denied, or null. */
export function deniedReason(name: string): string | null {
  if (Object.hasOwn(DENIED_FUNCTIONS, name)) return DENIED_FUNCTIONS[name] ?? null;
  for (const [prefix, reason] of Object.entries(DENIED_PREFIXES)) if (name.startsWith(prefix)) return reason;
  return null;
}
