import { Link } from 'wouter';
import { Page } from '../../components/page.tsx';
import { canAdminister, useMe } from '../../session.tsx';
import { InvitesSection } from './invites.tsx';
import { NodesSection } from './nodes.tsx';
import { UsersSection } from './users.tsx';

const SECTIONS = [
  ['users', 'Users'],
  ['invites', 'Invites'],
  ['nodes', 'Nodes'],
] as const;

export default function Admin({ section }: { section: string }) {
  const { me, role } = useMe();
  if (!canAdminister(me, role))
    return (
      <Page title="Admin">
        <p>Only account owners and admins (and platform admins) manage people. Ask one of them for access.</p>
      </Page>
    );
  return (
    <Page title="Admin">
      <nav aria-label="Admin sections" className="tabs">
        {SECTIONS.map(([id, label]) => (
          <Link key={id} href={`/admin/${id}`} aria-current={id === section ? 'page' : undefined}>
            {label}
          </Link>
        ))}
      </nav>
      {section === 'users' ? <UsersSection /> : null}
      {section === 'invites' ? <InvitesSection /> : null}
      {section === 'nodes' ? <NodesSection /> : null}
      {!SECTIONS.some(([id]) => id === section) ? <p>No such section: choose one above.</p> : null}
    </Page>
  );
}
