import type { paths } from '../../api/schema';

type Base = paths['/v1/databases/{name}']['get']['responses'][200]['content']['application/json'];
/** A database as the list and detail show it (the sampled fields are null until the agent's first sample). */
export type Database = Base & {
  size_bytes?: number | null;
  connections?: number | null;
  sampled_at?: string | null;
  allowlist_count?: number;
};
