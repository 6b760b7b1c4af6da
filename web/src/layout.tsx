import type { ReactNode } from 'react';
import { Link, useLocation } from 'wouter';
import { canAdminister, useMe, useSession } from './session.tsx';

function NavLink({ href, children }: { href: string; children: ReactNode }) {
  const [location] = useLocation();
  const current = location === href || location.startsWith(`${href}/`);
  return (
    <Link href={href} aria-current={current ? 'page' : undefined}>
      {children}
    </Link>
  );
}

export function Layout({ children }: { children: ReactNode }) {
  const { signOut, chooseAccount } = useSession();
  const { me, account, role } = useMe();
  const [, navigate] = useLocation();
  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="top">
        <Link href="/" className="brand">
          Bulwark
        </Link>
        <nav aria-label="Main" className="nav">
          <NavLink href="/databases">Databases</NavLink>
          <NavLink href="/keys">API keys</NavLink>
          {/* As the API's policy: the audit log is read by owners and admins of the account; people and
              invites are managed by them and by platform admins. */}
          {role === 'owner' || role === 'admin' ? <NavLink href="/audit">Audit log</NavLink> : null}
          {canAdminister(me, role) ? <NavLink href="/admin">Admin</NavLink> : null}
          <NavLink href="/account/security">Account security</NavLink>
        </nav>
        <div className="who">
          {me.memberships.length > 1 ? (
            <label className="inline">
              <span>Account</span>
              <select
                value={account ?? ''}
                onChange={(e) => {
                  chooseAccount(e.target.value);
                  navigate('/databases');
                }}
              >
                {me.memberships.map((m) => (
                  <option key={m.account} value={m.account}>
                    {m.account} ({m.role})
                  </option>
                ))}
              </select>
            </label>
          ) : account ? (
            <span className="muted small">{account}</span>
          ) : null}
          <span className="small">{me.user.username ?? 'signed in'}</span>
          <button type="button" className="secondary" onClick={() => void signOut()}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {children}
      </main>
    </>
  );
}
