import { type ReactNode, useEffect, useState } from 'react';
import { Link, useLocation } from 'wouter';
import { api } from './api/client.ts';
import { canAdminister, useMe, useSession } from './session.tsx';

/**
 * How many pending requests await the signed-in person's approval (the nav's badge): read on
 * every page change, when a page changed a request, and when the tab becomes visible again (no timer: an idle page asks nothing);
 * "100+" past one page. A failed look keeps the last count.
 */
function usePendingApprovals(account: string | null): string | null {
  const [location] = useLocation();
  const [count, setCount] = useState<string | null>(null);
  // biome-ignore lint/correctness/useExhaustiveDependencies: a page change is a reason to look again
  useEffect(() => {
    // A platform admin outside any account has no requests to approve (and nothing to ask).
    if (!account) return;
    let live = true;
    const look = () => {
      if (document.visibilityState === 'hidden') return;
      api
        .GET('/v1/requests', { params: { query: { awaiting: 'me', status: 'pending', limit: 100 } } })
        .then((r) => {
          if (!live || !r.data) return;
          const n = r.data.items.length;
          setCount(n === 0 ? null : r.data.next_cursor ? '100+' : String(n));
        })
        .catch(() => {});
    };
    look();
    document.addEventListener('visibilitychange', look);
    // A page that approved, rejected or ran a request says so (pages/requests/types.ts).
    window.addEventListener('bulwark:requests-changed', look);
    return () => {
      live = false;
      document.removeEventListener('visibilitychange', look);
      window.removeEventListener('bulwark:requests-changed', look);
    };
  }, [account, location]);
  return count;
}

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
  const pending = usePendingApprovals(account);
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
          <NavLink href="/requests">
            Approvals
            {pending ? (
              <span className="nav-count">
                {pending}
                <span className="sr-only"> awaiting your approval</span>
              </span>
            ) : null}
          </NavLink>
          <NavLink href="/policy">Policy</NavLink>
          <NavLink href="/keys">API keys</NavLink>
          {/* As the API's policy: the audit log is read by owners and admins of the account; people and
              invites are managed by them and by platform admins. */}
          {role === 'owner' || role === 'admin' ? <NavLink href="/audit">Audit log</NavLink> : null}
          {/* Webhooks are read by members too (their URLs may carry tokens: not viewers); Slack is set up by owners and admins. */}
          {role && role !== 'viewer' ? <NavLink href="/webhooks">Webhooks</NavLink> : null}
          {role === 'owner' || role === 'admin' ? <NavLink href="/integrations/slack">Slack</NavLink> : null}
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
