import { createContext, type FormEvent, type ReactNode, useCallback, useContext, useState } from 'react';
import { api, call } from './api/client.ts';
import { ApiError, asApiError } from './api/errors.ts';
import { Dialog } from './components/dialog.tsx';
import { ErrorNotice } from './components/error-notice.tsx';
import { useSession } from './session.tsx';

/**
 * "Confirm it's you": some actions of a signed-in person (TOTP setup, a new API key, new invites,
 * revealing a password) need a recent re-authentication. When the API answers one of them with
 * 403 reauth_required, the person confirms (password, or an authentication code), the session's
 * window opens (POST /v1/auth/reauth), and the action is sent again once.
 */
type Method = 'password' | 'totp' | 'sign_in';
type Pending = { methods: Method[]; done: (confirmed: boolean) => void };
type WithReauth = <T>(action: () => Promise<T>) => Promise<T>;

const Ctx = createContext<WithReauth | null>(null);

/** The code of a refusal the person chose not to answer (not shown as an error). */
export const REAUTH_CANCELLED = 'reauth_cancelled';

function methodsOf(err: unknown): Method[] | null {
  if (!(err instanceof ApiError) || err.code !== 'reauth_required') return null;
  const m = (err.details as { methods?: unknown } | undefined)?.methods;
  const known = Array.isArray(m)
    ? m.filter((x): x is Method => x === 'password' || x === 'totp' || x === 'sign_in')
    : [];
  return known.length ? known : ['password'];
}

function ReauthDialog({ pending, onDone }: { pending: Pending; onDone: (confirmed: boolean) => void }) {
  const { signOut } = useSession();
  const [useTotp, setUseTotp] = useState(false);
  const [secret, setSecret] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = useTotp ? { totp_code: secret.trim() } : { password: secret };
      await call(api.POST('/v1/auth/reauth', { body }));
      onDone(true);
    } catch (err) {
      const a = asApiError(err);
      setError(
        a.code === 'reauth_failed'
          ? new ApiError(a.status, a.code, 'That password or code is not right.', a.requestId)
          : a,
      );
    } finally {
      setBusy(false);
    }
  };
  const signInOnly = pending.methods.includes('sign_in') && !pending.methods.includes('password');
  return (
    <Dialog title="Confirm it's you" onClose={() => onDone(false)}>
      {signInOnly ? (
        <>
          <p>This needs a recent sign-in. Sign in again, then repeat the action.</p>
          <div className="actions">
            <button type="button" className="secondary" onClick={() => onDone(false)}>
              Cancel
            </button>
            <button
              type="button"
              className="primary"
              onClick={() => {
                onDone(false);
                void signOut();
              }}
            >
              Sign in again
            </button>
          </div>
        </>
      ) : (
        <form className="form" onSubmit={submit}>
          <p>This action needs you to confirm your identity (it stays confirmed for five minutes).</p>
          <label>
            <span>{useTotp ? 'Authentication code' : 'Your password'}</span>
            <input
              type={useTotp ? 'text' : 'password'}
              autoComplete={useTotp ? 'one-time-code' : 'current-password'}
              inputMode={useTotp ? 'numeric' : undefined}
              required
              maxLength={useTotp ? 32 : 1024}
              value={secret}
              onChange={(e) => setSecret(e.target.value)}
            />
          </label>
          {pending.methods.includes('totp') ? (
            <button
              type="button"
              className="link"
              onClick={() => {
                setUseTotp((v) => !v);
                setSecret('');
              }}
            >
              {useTotp ? 'Use your password instead' : 'Use an authentication code instead'}
            </button>
          ) : null}
          <ErrorNotice error={error} />
          <div className="actions">
            <button type="button" className="secondary" onClick={() => onDone(false)}>
              Cancel
            </button>
            <button type="submit" className="primary" disabled={busy}>
              Confirm
            </button>
          </div>
        </form>
      )}
    </Dialog>
  );
}

export function ReauthProvider({ children }: { children: ReactNode }) {
  const [pending, setPending] = useState<Pending | null>(null);
  const withReauth = useCallback<WithReauth>(async (action) => {
    try {
      return await action();
    } catch (err) {
      const methods = methodsOf(err);
      if (!methods) throw err;
      const confirmed = await new Promise<boolean>((done) => setPending({ methods, done }));
      if (!confirmed) throw new ApiError(0, REAUTH_CANCELLED, 'Cancelled.', null);
      return await action();
    }
  }, []);
  return (
    <Ctx.Provider value={withReauth}>
      {children}
      {pending ? (
        <ReauthDialog
          pending={pending}
          onDone={(confirmed) => {
            setPending(null);
            pending.done(confirmed);
          }}
        />
      ) : null}
    </Ctx.Provider>
  );
}

export function useReauth(): WithReauth {
  const v = useContext(Ctx);
  if (!v) throw new Error('useReauth outside ReauthProvider');
  return v;
}
