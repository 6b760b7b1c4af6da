/**
 * A governance policy as code (issue 14): the YAML file `bulwark policy apply` sends and the
 * server validates again before it stores a version. Strict — an unknown key, a number out of
 * bounds or an undeclared environment is an error — and every error names its line, column and
 * dotted field (`databases.shop.classes.write.approvals`), so a file can be fixed from the list.
 *
 * ```yaml
 * version: 1
 * defaults:            # over the built-in rules
 *   classes:
 *     write: { approvals: 1 }
 *   approval_lifetime: 24h
 * environments:        # over the defaults
 *   production:
 *     classes:
 *       ddl: { approvals: 2, admin_approvals: 1 }
 * databases:           # over the database's environment
 *   shop:
 *     environment: production
 *     findings: { index_not_concurrent: block }
 * ```
 * The CLI and the server share this one parser, so what validates locally is what applies.
 */
import { isMap, isScalar, LineCounter, type Node, parseDocument } from 'yaml';
import { NAME_PATTERN } from '../identifiers.ts';
import type { FindingCode } from '../sql/sql-findings.ts';
import {
  BUILTIN_RULES,
  type ClassRule,
  type FindingSeverity,
  type GovernancePolicy,
  mergeRules,
  POLICY_CLASSES,
  type PolicyClass,
  type RuleSet,
  type RuleSetPatch,
} from './governance.ts';
import { Checker, MAX_POLICY_ERRORS, nestingProblem, type PolicyFileError } from './policy-file-checker.ts';

export { MAX_POLICY_ERRORS, type PolicyFileError };

export const MAX_POLICY_BYTES = 256 * 1024;

export const POLICY_BOUNDS = {
  approvals: { min: 0, max: 10 },
  lifetime_s: { min: 60, max: 90 * 86_400 },
  max_executions: { min: 1, max: 100 },
  max_access_s: { min: 60, max: 7 * 86_400 },
  environments: 50,
  databases: 1000,
} as const;

export const ENVIRONMENT_LABEL = /^[a-z][a-z0-9_-]{0,31}$/;
/**
 * The review findings a policy may set (sql-findings.ts FindingCode; a test holds the two lists
 * equal). Listed here so that reading a policy does not load the classifier.
 */
export const FINDING_CODES = [
  'missing_where',
  'index_not_concurrent',
  'not_null_without_default',
  'lock_heavy_alter',
  'mixed_ddl_dml',
  'huge_in_list',
  'cascade',
  'concurrently_in_transaction',
] as const satisfies readonly FindingCode[];
const SEVERITIES: readonly FindingSeverity[] = ['warn', 'block', 'off'];
const ROOT_KEYS = ['version', 'defaults', 'environments', 'databases'] as const;
const RULE_SET_KEYS = [
  'classes',
  'request_lifetime',
  'approval_lifetime',
  'max_executions',
  'max_access',
  'findings',
  'break_glass',
] as const;
const CLASS_RULE_KEYS = ['requesters', 'approvals', 'admin_approvals'] as const;

export type PolicyParseResult =
  | { ok: true; policy: GovernancePolicy }
  | { ok: false; errors: PolicyFileError[] };

function classRule(c: Checker, node: Node | null, at: number, field: string): Partial<ClassRule> {
  const rule: Partial<ClassRule> = {};
  for (const e of c.entries(node, at, field, CLASS_RULE_KEYS) ?? []) {
    const f = `${field}.${e.key}`;
    const { min, max } = POLICY_BOUNDS.approvals;
    if (e.key === 'requesters') {
      const roles = c.roles(e, f);
      if (roles) rule.requesters = roles;
    } else {
      const n = c.int(e, f, min, max);
      if (n !== undefined) rule[e.key as 'approvals' | 'admin_approvals'] = n;
    }
  }
  return rule;
}

function ruleSet(c: Checker, node: Node | null, at: number, field: string, keys: readonly string[]) {
  const patch: RuleSetPatch & { environment?: string } = {};
  const { lifetime_s, max_executions, max_access_s } = POLICY_BOUNDS;
  for (const e of c.entries(node, at, field, keys) ?? []) {
    const f = `${field}.${e.key}`;
    switch (e.key) {
      case 'classes': {
        const classes: NonNullable<RuleSetPatch['classes']> = {};
        for (const ce of c.entries(e.value, e.at, f, POLICY_CLASSES) ?? [])
          classes[ce.key as PolicyClass] = classRule(c, ce.value, ce.at, `${f}.${ce.key}`);
        patch.classes = classes;
        break;
      }
      case 'request_lifetime':
      case 'approval_lifetime': {
        const s = c.duration(e, f, lifetime_s.min, lifetime_s.max);
        if (s !== undefined) patch[`${e.key}_s`] = s;
        break;
      }
      case 'max_executions': {
        const n = c.int(e, f, max_executions.min, max_executions.max);
        if (n !== undefined) patch.max_executions = n;
        break;
      }
      case 'max_access': {
        const s = c.duration(e, f, max_access_s.min, max_access_s.max);
        if (s !== undefined) patch.max_access_s = s;
        break;
      }
      case 'findings': {
        const findings: NonNullable<RuleSetPatch['findings']> = {};
        for (const fe of c.entries(e.value, e.at, f, FINDING_CODES) ?? []) {
          const sev = c.oneOf(fe, `${f}.${fe.key}`, SEVERITIES);
          if (sev) findings[fe.key as FindingCode] = sev;
        }
        patch.findings = findings;
        break;
      }
      case 'break_glass': {
        const roles = c.roles(e, f);
        if (roles) patch.break_glass = roles;
        break;
      }
      case 'environment': {
        const v = isScalar(e.value) ? e.value.value : undefined;
        if (typeof v !== 'string' || !ENVIRONMENT_LABEL.test(v))
          c.fail(e.at, f, 'must be an environment label: a lowercase letter, then up to 31 of a-z 0-9 _ -');
        else patch.environment = v;
        break;
      }
    }
  }
  return patch;
}

/** A class rule whose effective admin_approvals exceed its approvals, reported where it was set. */
function checkApprovals(c: Checker, level: string, rules: RuleSet, patch: RuleSetPatch | undefined): void {
  for (const cls of Object.keys(patch?.classes ?? {}) as PolicyClass[]) {
    const { approvals, admin_approvals } = rules.classes[cls];
    if (admin_approvals <= approvals) continue;
    const base = `${level}.classes.${cls}`;
    const set = patch?.classes?.[cls] ?? {};
    const field = set.admin_approvals !== undefined ? `${base}.admin_approvals` : `${base}.approvals`;
    const inherited = set.admin_approvals === undefined || set.approvals === undefined;
    c.fail(
      c.marks.get(field) ?? c.marks.get(base) ?? 0,
      field,
      `admin_approvals (${admin_approvals}) cannot exceed approvals (${approvals})${
        inherited ? '; one of them is inherited from a wider level, so set both here' : ''
      }`,
    );
  }
}

/** The dotted path of the deepest mapping key around an offset (to name a syntax error's field). */
function fieldAt(node: unknown, offset: number, prefix: string): string {
  if (!isMap(node)) return prefix;
  for (const pair of node.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : '?';
    const path = prefix ? `${prefix}.${key}` : key;
    const k = (pair.key as Node | null)?.range;
    if (k && offset >= k[0] && offset < k[2]) return path;
    const v = (pair.value as Node | null)?.range;
    if (v && offset >= v[0] && offset < v[2]) return fieldAt(pair.value, offset, path);
  }
  return prefix;
}

export function parsePolicyFile(source: string): PolicyParseResult {
  const bytes = new TextEncoder().encode(source).length;
  if (bytes > MAX_POLICY_BYTES)
    return {
      ok: false,
      errors: [
        { line: 1, column: 1, field: '', message: `the file is ${bytes} bytes; at most ${MAX_POLICY_BYTES}` },
      ],
    };
  const deep = nestingProblem(source);
  if (deep) return { ok: false, errors: [deep] };
  const lines = new LineCounter();
  const doc = parseDocument(source, {
    lineCounter: lines,
    prettyErrors: false,
    uniqueKeys: true,
  });
  const c = new Checker(doc, lines);
  for (const e of [...doc.errors, ...doc.warnings])
    c.fail(e.pos[0], fieldAt(doc.contents, e.pos[0], ''), e.message.split('\n')[0] ?? e.message);
  if (c.errors.length > 0) return { ok: false, errors: c.errors };

  const root = c.resolve(doc.contents);
  if (!root)
    return {
      ok: false,
      errors: [
        {
          line: 1,
          column: 1,
          field: 'version',
          message: 'the file is empty; it needs at least `version: 1`',
        },
      ],
    };
  const policy: GovernancePolicy = { version: 1 };
  let sawVersion = false;
  const envKeys = new Set<string>();
  for (const e of c.entries(root, 0, '', ROOT_KEYS) ?? []) {
    if (e.key === 'version') {
      sawVersion = true;
      if (!isScalar(e.value) || e.value.value !== 1)
        c.fail(e.at, 'version', 'must be 1 (the only policy file format)');
    } else if (e.key === 'defaults') {
      policy.defaults = ruleSet(c, e.value, e.at, 'defaults', RULE_SET_KEYS);
    } else if (e.key === 'environments') {
      const envs: NonNullable<GovernancePolicy['environments']> = {};
      const entries =
        c.entries(e.value, e.at, 'environments', (k) =>
          ENVIRONMENT_LABEL.test(k)
            ? null
            : 'an environment label is a lowercase letter, then up to 31 of a-z 0-9 _ -',
        ) ?? [];
      if (entries.length > POLICY_BOUNDS.environments)
        c.fail(e.at, 'environments', `at most ${POLICY_BOUNDS.environments} environments`);
      for (const ee of entries) {
        envKeys.add(ee.key);
        envs[ee.key] =
          ee.value === null ? {} : ruleSet(c, ee.value, ee.at, `environments.${ee.key}`, RULE_SET_KEYS);
      }
      policy.environments = envs;
    } else {
      const dbs: NonNullable<GovernancePolicy['databases']> = {};
      const entries =
        c.entries(e.value, e.at, 'databases', (k) =>
          NAME_PATTERN.test(k) ? null : 'a database name is a lowercase letter, then up to 62 of a-z 0-9 _',
        ) ?? [];
      if (entries.length > POLICY_BOUNDS.databases)
        c.fail(e.at, 'databases', `at most ${POLICY_BOUNDS.databases} databases`);
      for (const de of entries)
        dbs[de.key] =
          de.value === null
            ? {}
            : ruleSet(c, de.value, de.at, `databases.${de.key}`, [...RULE_SET_KEYS, 'environment']);
      policy.databases = dbs;
    }
  }
  if (!sawVersion && isMap(root)) c.fail(root.range?.[0] ?? 0, 'version', 'is required: `version: 1`');

  // Cross-field rules, on the effective rule set of every level.
  const defaults = mergeRules(BUILTIN_RULES, policy.defaults);
  checkApprovals(c, 'defaults', defaults, policy.defaults);
  const envRules = new Map<string, RuleSet>();
  for (const [label, patch] of Object.entries(policy.environments ?? {})) {
    const rules = mergeRules(defaults, patch);
    envRules.set(label, rules);
    checkApprovals(c, `environments.${label}`, rules, patch);
  }
  for (const [name, patch] of Object.entries(policy.databases ?? {})) {
    const env = patch.environment;
    if (env !== undefined && !envKeys.has(env))
      c.fail(
        c.marks.get(`databases.${name}.environment`) ?? 0,
        `databases.${name}.environment`,
        `environment "${env}" is not declared under environments (declare it, even empty: \`${env}: {}\`)`,
      );
    const base = env !== undefined ? (envRules.get(env) ?? defaults) : defaults;
    checkApprovals(c, `databases.${name}`, mergeRules(base, patch), patch);
  }

  if (c.errors.length > 0) {
    c.errors.sort((a, b) => a.line - b.line || a.column - b.column);
    return { ok: false, errors: c.errors };
  }
  return { ok: true, policy };
}

/** `file:line:column field: message`, one line per error (what `bulwark policy apply` prints). */
export function formatPolicyErrors(file: string, errors: readonly PolicyFileError[]): string {
  return errors
    .map((e) => `${file}:${e.line}:${e.column} ${e.field ? `${e.field}: ` : ''}${e.message}`)
    .join('\n');
}
