import { NEW_DATABASE_NAME_PATTERN } from '../../api/rules.generated.ts';

/** The API's rule for names (and the SQL identifier rule): checked as the person types. */
const NAME_RULE = /^[a-z][a-z0-9_]{0,62}$/;

export function nameProblem(name: string): string | null {
  if (name === '') return 'Start with a lowercase letter.';
  if (name.length > 63) return `Too long: ${name.length} of at most 63 characters.`;
  if (!/^[a-z]/.test(name)) return 'The first character must be a lowercase letter (a–z).';
  const bad = [...new Set(name.replace(/[a-z0-9_]/g, ''))];
  if (bad.length) return `Not allowed: ${bad.map((c) => JSON.stringify(c)).join(' ')}. Use a–z, 0–9 and _.`;
  if (!NAME_RULE.test(name)) return 'Use a–z, 0–9 and _ only.';
  if (!NEW_DATABASE_NAME_PATTERN.test(name))
    return 'This name is reserved (postgres, template0/1, pgbouncer, bulwark…, and names starting with pg_ or bulwark_).';
  return null;
}
