import { type FormEvent, useEffect, useState } from 'react';
import { Link } from 'wouter';
import { api, call, session } from '../api/client.ts';
import { ErrorNotice } from '../components/error-notice.tsx';
import { FirstStepsSignedOut } from '../components/first-steps.tsx';
import { Page } from '../components/page.tsx';
import { takenOidcError } from '../lib/invite-fragment.ts';
import { useAction } from '../lib/use-api.ts';
import { useSession } from '../session.tsx';

type Providers = { local: boolean; oidc: { enabled: boolean; label: string | null } };

/** Which sign-in methods the server offers (public; absent on older servers: local only). */
function useProviders(): Providers {
  const [p, setP] = useState<Providers>({ local: true, oidc: { enabled: false, label: null } });
  useEffect(() => {
    fetch('/v1/auth/providers')
      .then((r) => (r.ok ? r.json() : null))
      .then((body: Providers | null) => {
        if (body && typeof body.local === 'boolean' && body.oidc) setP(body);
      })
      .catch(() => {});
  }, []);
  return p;
}

export default function SignIn({ ended }: { ended: boolean }) {
  const { reload } = useSession();
  const providers = useProviders();
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [code, setCode] = useState('');
  const [needTotp, setNeedTotp] = useState(false);
  const login = useAction(async () => {
    const body = {
      username,
      password,
      ...(needTotp ? { totp_code: code.trim() } : {}),
      session: 'cookie' as const,
    };
    try {
      const out = await call(api.POST('/v1/auth/login', { body }));
      const token = (out as { csrf_token?: unknown }).csrf_token;
      if (typeof token === 'string') session.setCsrfToken(token);
    } catch (err) {
      if ((err as { code?: string }).code === 'totp_required') {
        setNeedTotp(true);
        return;
      }
      throw err;
    }
    await reload({ afterSignIn: true });
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void login.run();
  };
  const next = new URLSearchParams(window.location.search).get('next') ?? '/';
  const oidcLabel = providers.oidc.label ?? 'SSO';
  const oidcError = takenOidcError();
  return (
    <Page title="Sign in">
      <div className="narrow">
        {ended ? (
          <p className="notice" role="status">
            Your session ended. Sign in again to continue.
          </p>
        ) : null}
        {oidcError ? <ErrorNotice error={oidcError} title="Single sign-on failed" /> : null}
        {providers.oidc.enabled ? (
          <p>
            <a
              className="button primary"
              href={`/v1/auth/oidc/start?session=cookie&redirect=${encodeURIComponent(next)}`}
            >
              Sign in with {oidcLabel}
            </a>
          </p>
        ) : null}
        {providers.local ? (
          <form className="card form" onSubmit={submit} aria-label="Local sign-in">
            {!needTotp ? (
              <>
                <label>
                  <span>Username</span>
                  <input
                    name="username"
                    autoComplete="username"
                    required
                    maxLength={64}
                    value={username}
                    onChange={(e) => setUsername(e.target.value)}
                  />
                </label>
                <label>
                  <span>Password</span>
                  <input
                    name="password"
                    type="password"
                    autoComplete="current-password"
                    required
                    maxLength={1024}
                    value={password}
                    onChange={(e) => setPassword(e.target.value)}
                  />
                </label>
                <button type="submit" className="primary" disabled={login.busy}>
                  Sign in
                </button>
              </>
            ) : (
              <>
                <p id="totp-help">Enter the 6-digit code from your authenticator app, or a recovery code.</p>
                <label>
                  <span>Authentication code</span>
                  <input
                    name="totp"
                    autoComplete="one-time-code"
                    inputMode="numeric"
                    required
                    maxLength={32}
                    aria-describedby="totp-help"
                    // biome-ignore lint/a11y/noAutofocus: the next thing to type, right after the password step
                    autoFocus
                    value={code}
                    onChange={(e) => setCode(e.target.value)}
                  />
                </label>
                <div className="actions">
                  <button
                    type="button"
                    className="secondary"
                    onClick={() => {
                      setNeedTotp(false);
                      setCode('');
                    }}
                  >
                    Back
                  </button>
                  <button type="submit" className="primary" disabled={login.busy}>
                    Verify
                  </button>
                </div>
              </>
            )}
            <ErrorNotice error={login.error} />
          </form>
        ) : null}
        <p>
          New here? <Link href="/invite">Redeem an invite</Link>
        </p>
        <FirstStepsSignedOut />
      </div>
    </Page>
  );
}
