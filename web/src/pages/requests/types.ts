import type { paths } from '../../api/schema';

type Json<T> = T extends { content: { 'application/json': infer B } } ? B : never;

/** A governed request as the API answers it (GET /v1/databases/{name}/requests/{id}). */
export type Request = Json<paths['/v1/databases/{name}/requests/{id}']['get']['responses'][200]>;
/** Execute's answer: the request, and for an access request its credentials, once. */
export type Executed = Json<paths['/v1/databases/{name}/requests/{id}/execute']['post']['responses'][200]>;
export type Preflight = Json<paths['/v1/databases/{name}/requests/preflight']['post']['responses'][200]>;
export type RequestResult = Json<paths['/v1/databases/{name}/requests/{id}/result']['get']['responses'][200]>;
export type Policy = Json<paths['/v1/policy']['get']['responses'][200]>;

export type RequestStatus = Request['status'];
export type Finding = Request['findings'][number];
export type DryRun = NonNullable<Request['dry_run']>;

export const REQUEST_STATUSES: RequestStatus[] = [
  'pending',
  'approved',
  'rejected',
  'cancelled',
  'expired',
  'executing',
  'executed',
  'failed',
];

/** The path of a request's page. */
export function requestHref(r: { database: string; id: string }): string {
  return `/databases/${encodeURIComponent(r.database)}/requests/${r.id}`;
}

/** The event a page sends when it changed a request (the nav's pending count looks again). */
export const REQUESTS_CHANGED = 'bulwark:requests-changed';
