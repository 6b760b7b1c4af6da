import { dateTime } from '../../lib/format.ts';
import type { Request } from './types.ts';

type Event = { at: string; text: string };

const EXECUTION = {
  executed: 'Executed',
  failed: 'Execution failed',
  refused: 'Execution refused by the node',
};
const rows = (n: number) => `${n} ${n === 1 ? 'row' : 'rows'}`;

/** What happened to a request, oldest first, from the fields the API keeps. */
function eventsOf(r: Request): Event[] {
  const events: Event[] = [{ at: r.created_at, text: `Requested by ${r.requester.name}` }];
  if (r.dry_run) events.push({ at: r.dry_run.ran_at, text: `Dry run: ${rows(r.dry_run.affected_rows)}` });
  for (const a of r.approvals)
    events.push({ at: a.created_at, text: `Approved by ${a.name}${a.counts ? '' : ' (does not count)'}` });
  if (r.rejection) events.push({ at: r.rejection.created_at, text: `Rejected by ${r.rejection.name}` });
  if (r.break_glass) events.push({ at: r.break_glass.at, text: `Break glass by ${r.break_glass.name}` });
  const e = r.last_execution;
  if (e)
    events.push({
      at: e.at,
      text: `${EXECUTION[e.status]}${e.affected_rows !== null ? `: ${rows(e.affected_rows)} affected` : ''}`,
    });
  if (r.status === 'cancelled' || r.status === 'expired')
    events.push({ at: r.updated_at, text: r.status === 'cancelled' ? 'Cancelled' : 'Expired' });
  return events.sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
}

export function Timeline({ r }: { r: Request }) {
  const events = eventsOf(r);
  const ends =
    r.status === 'pending'
      ? `Expires ${dateTime(r.expires_at)} unless approved.`
      : r.status === 'approved' && r.approval_expires_at
        ? `Executable until ${dateTime(r.approval_expires_at)}.`
        : null;
  return (
    <section aria-labelledby="timeline-h">
      <h2 id="timeline-h">Timeline</h2>
      <ol className="timeline">
        {events.map((e, i) => (
          // biome-ignore lint/suspicious/noArrayIndexKey: events are positional
          <li key={i}>
            <time dateTime={e.at}>{dateTime(e.at)}</time> <bdi>{e.text}</bdi>
          </li>
        ))}
      </ol>
      {ends ? <p className="muted small">{ends}</p> : null}
    </section>
  );
}
