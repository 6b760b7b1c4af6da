import { createContext, type ReactNode, useCallback, useContext, useEffect, useMemo, useState } from 'react';
import { api, call, session } from './api/client.ts';
import type { paths } from './api/schema';

export type Me = paths['/v1/me']['get']['responses'][200]['content']['application/json'];
export type Role = 'owner' | 'admin' | 'member' | 'viewer';

type State =
  | { status: 'loading' }
  | { status: 'signed-out'; reason: 'none' | 'ended' | 'signed-out' }
  | { status: 'signed-in'; me: Me; account: string | null };

type SessionApi = {
  state: State;
  /** After sign-in (or a change of the user): reads /v1/me again. */
  reload: (opts?: { afterSignIn?: boolean }) => Promise<void>;
  signOut: () => Promise<void>;
  chooseAccount: (name: string) => void;
};

const Ctx = createContext<SessionApi | null>(null);
const ACCOUNT_KEY = 'bulwark.account';

/** Fields cookie sessions add to /v1/me (read defensively: older servers lack them). */
type MeExtras = { csrf_token?: unknown; client_ip?: unknown };

export function clientIp(me: Me): string | null {
  const ip = (me as MeExtras).client_ip;
  return typeof ip === 'string' && ip ? ip : null;
}

/**
 * The server sets a non-secret marker cookie next to the (HttpOnly) session cookies and clears it
 * with them: without it there is no session to ask about, and a signed-out visit makes no request
 * that could only answer 401.
 */
const SIGNED_IN_MARKER = '__Host-bulwark_signed_in=';

function mayBeSignedIn(): boolean {
  return document.cookie.split(/;\s*/).some((c) => c.startsWith(SIGNED_IN_MARKER));
}

function pickAccount(me: Me): string | null {
  const names = me.memberships.map((m) => m.account);
  const saved = localStorage.getItem(ACCOUNT_KEY);
  if (saved && names.includes(saved)) return saved;
  return names[0] ?? null;
}

export function SessionProvider({ children }: { children: ReactNode }) {
  const [state, setState] = useState<State>({ status: 'loading' });

  const reload = useCallback(async (opts?: { afterSignIn?: boolean }) => {
    if (!opts?.afterSignIn && !mayBeSignedIn()) {
      session.setCsrfToken(null);
      setState({ status: 'signed-out', reason: 'none' });
      return;
    }
    try {
      const me = await call(api.GET('/v1/me'));
      const token = (me as MeExtras).csrf_token;
      if (typeof token === 'string') session.setCsrfToken(token);
      const account = pickAccount(me);
      session.setAccount(account);
      setState({ status: 'signed-in', me, account });
    } catch {
      session.setCsrfToken(null);
      setState({ status: 'signed-out', reason: 'none' });
    }
  }, []);

  useEffect(() => {
    session.onEnded(() => {
      session.setCsrfToken(null);
      setState((s) => (s.status === 'signed-in' ? { status: 'signed-out', reason: 'ended' } : s));
    });
    void reload();
  }, [reload]);

  const signOut = useCallback(async () => {
    await api.POST('/v1/auth/logout').catch(() => undefined);
    session.setCsrfToken(null);
    setState({ status: 'signed-out', reason: 'signed-out' });
  }, []);

  const chooseAccount = useCallback((name: string) => {
    localStorage.setItem(ACCOUNT_KEY, name);
    session.setAccount(name);
    setState((s) => (s.status === 'signed-in' ? { ...s, account: name } : s));
  }, []);

  const value = useMemo(
    () => ({ state, reload, signOut, chooseAccount }),
    [state, reload, signOut, chooseAccount],
  );
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}

export function useSession(): SessionApi {
  const v = useContext(Ctx);
  if (!v) throw new Error('useSession outside SessionProvider');
  return v;
}

/** The signed-in user (pages under the signed-in layout only). */
export function useMe(): { me: Me; account: string | null; role: Role | null } {
  const { state } = useSession();
  if (state.status !== 'signed-in') throw new Error('useMe while signed out');
  const role = state.me.memberships.find((m) => m.account === state.account)?.role ?? null;
  return { me: state.me, account: state.account, role };
}

export function canAdminister(me: Me, role: Role | null): boolean {
  return me.user.platform_admin || role === 'owner' || role === 'admin';
}
