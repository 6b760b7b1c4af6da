/**
 * Results of the just-in-time credential jobs (`access.grant`, `access.revoke`), apart from
 * execution.ts (which re-exports them) so that jobs.ts can list them in `jobResultSchemas`
 * without an import cycle.
 */
import { z } from 'zod';

/** A just-in-time login's name (the server picks `<db>_jit_<8 hex>`); validated as an identifier. */
export const accessLoginSchema = z.string().regex(/^[a-z][a-z0-9_]{0,62}$/);

export const grantAccessResultSchema = z.object({
  login: accessLoginSchema,
  valid_until: z.iso.datetime({ offset: true }),
});

export const revokeAccessResultSchema = z.object({
  dropped: z.boolean(),
  terminated_sessions: z.number().int().min(0),
  /** The login owns objects or holds privileges: left NOLOGIN, not dropped (nothing reassigned). */
  owns_objects: z.boolean().optional(),
});
