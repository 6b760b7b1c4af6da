import { readFileSync } from 'node:fs';
import type { z } from 'zod';

/** How one config key can be given in the environment. */
export type EnvBinding = { env: string; secret?: boolean; list?: boolean };

const PLACEHOLDERS = new Set([
  'changeme',
  'change-me',
  'secret',
  'password',
  'example',
  'xxx',
  'todo',
  'placeholder',
]);

export type ConfigResult<T> = { ok: true; config: Readonly<T> } | { ok: false; errors: string[] };

/**
 * Builds a config object from (lowest first) a JSON file, the environment and explicit
 * overrides, validates it with one schema, and reports every problem at once. A secret
 * may come from `NAME_FILE`; a secret that looks like a placeholder is refused.
 */
export function loadConfig<S extends z.ZodType>(
  schema: S,
  bindings: Record<string, EnvBinding>,
  sources: { env: NodeJS.ProcessEnv; file?: string | undefined; overrides?: Record<string, unknown> },
): ConfigResult<z.infer<S>> {
  const errors: string[] = [];
  let raw: Record<string, unknown> = {};
  if (sources.file) {
    try {
      const parsed: unknown = JSON.parse(readFileSync(sources.file, 'utf8'));
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
        errors.push(`config file ${sources.file}: must hold a JSON object`);
      } else raw = { ...(parsed as Record<string, unknown>) };
    } catch (err) {
      errors.push(`config file ${sources.file}: ${(err as Error).message}`);
    }
  }
  for (const [key, b] of Object.entries(bindings)) {
    const direct = sources.env[b.env];
    const fileVar = sources.env[`${b.env}_FILE`];
    if (direct !== undefined && fileVar !== undefined) {
      errors.push(`${b.env} and ${b.env}_FILE are both set; set only one`);
      continue;
    }
    let value: string | undefined = direct;
    if (fileVar !== undefined) {
      try {
        value = readFileSync(fileVar, 'utf8').trim();
      } catch (err) {
        errors.push(
          `${b.env}_FILE: cannot read ${fileVar} (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
        );
        continue;
      }
    }
    if (value === undefined || value === '') continue;
    raw[key] = b.list
      ? value
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
      : value;
  }
  Object.assign(
    raw,
    Object.fromEntries(Object.entries(sources.overrides ?? {}).filter(([, v]) => v !== undefined)),
  );
  for (const [key, b] of Object.entries(bindings)) {
    const v = raw[key];
    if (b.secret && typeof v === 'string' && looksLikePlaceholder(v)) {
      errors.push(`${key} (${b.env}): looks like a placeholder value; set a real secret`);
    }
  }
  const result = schema.safeParse(raw);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const key = issue.path.join('.');
      const env = bindings[String(issue.path[0])]?.env;
      errors.push(`${key || '(root)'}${env ? ` (${env})` : ''}: ${issue.message}`);
    }
  }
  if (errors.length > 0 || !result.success) return { ok: false, errors };
  return { ok: true, config: Object.freeze(result.data) };
}

function looksLikePlaceholder(v: string): boolean {
  const lower = v.toLowerCase();
  if (PLACEHOLDERS.has(lower)) return true;
  try {
    const u = new URL(v);
    return PLACEHOLDERS.has(decodeURIComponent(u.password).toLowerCase());
  } catch {
    return false;
  }
}
