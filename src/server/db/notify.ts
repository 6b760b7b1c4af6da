/**
 * PostgreSQL's NOTIFY / LISTEN, in one place: services say what to wake, not how. Channel names
 * are our own constants (never user input); payloads are parameters.
 */
import type { Queryable } from './pool.ts';

/** Sends `payload` on `channel`; inside a transaction it is delivered when that transaction commits. */
export async function notify(db: Queryable, channel: string, payload: string): Promise<void> {
  await db.query('SELECT pg_notify($1, $2)', [channel, payload]);
}

/** Starts listening on `channel` on this (dedicated, not pooled-and-returned) connection. */
export async function listen(client: Queryable, channel: string): Promise<void> {
  await client.query(`LISTEN ${channel}`);
}

export async function unlisten(client: Queryable, channel: string): Promise<void> {
  await client.query(`UNLISTEN ${channel}`);
}
