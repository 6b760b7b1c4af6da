/**
 * Hosted and attached databases (migration 0033, ADR 0031). An attached database is one an agent's
 * own config file lists: Bulwark explores it, runs governed SQL on it and audits both, but did not
 * make it and holds no credential for it, so every route that would manage it (delete, allowlist,
 * limits, connection info, credentials, backups, restores, moves, just-in-time access) refuses it
 * with a 409 that says so.
 */
import { AppError } from '../../../shared/errors.ts';

export type DatabaseKind = 'hosted' | 'attached';

/** Throws 409 `conflict` when the database is attached; `what` completes "Bulwark does not …". */
export function requireHosted(row: { kind: DatabaseKind; name: string }, what: string): void {
  if (row.kind === 'attached')
    throw new AppError(
      'conflict',
      `${row.name} is an attached database: Bulwark does not ${what} it (its agent's own configuration lists it)`,
      { kind: 'attached' },
    );
}
