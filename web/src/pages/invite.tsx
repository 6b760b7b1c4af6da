import { type FormEvent, useState } from 'react';
import { Link, useLocation } from 'wouter';
import { api, call, session } from '../api/client.ts';
import { ErrorNotice } from '../components/error-notice.tsx';
import { Page } from '../components/page.tsx';
import { pendingInviteCode } from '../lib/invite-fragment.ts';
import { useAction } from '../lib/use-api.ts';
import { useSession } from '../session.tsx';

const USERNAME = /^[a-z][a-z0-9._-]{1,62}$/;

export default function Invite() {
  const { reload } = useSession();
  const [, navigate] = useLocation();
  const [code, setCode] = useState(pendingInviteCode);
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [confirm, setConfirm] = useState('');
  const mismatch = confirm.length > 0 && confirm !== password;
  const short = password.length > 0 && password.length < 12;
  const redeem = useAction(async () => {
    const body = { code: code.trim(), username, password, session: 'cookie' as const };
    const out = await call(api.POST('/v1/auth/invites/redeem', { body }));
    const token = (out as { csrf_token?: unknown }).csrf_token;
    if (typeof token === 'string') session.setCsrfToken(token);
    await reload({ afterSignIn: true });
    navigate('/account/security');
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (mismatch || short) return;
    void redeem.run();
  };
  return (
    <Page title="Redeem your invite">
      <div className="narrow">
        <p>Your invite makes you an account. It works once; choose the name you will sign in with.</p>
        <form className="card form" onSubmit={submit} aria-label="Redeem an invite">
          <label>
            <span>Invite code</span>
            <input
              name="code"
              required
              maxLength={200}
              autoComplete="off"
              spellCheck={false}
              value={code}
              onChange={(e) => setCode(e.target.value)}
            />
          </label>
          <label>
            <span>Username</span>
            <input
              name="username"
              autoComplete="username"
              required
              maxLength={63}
              aria-describedby="username-hint"
              value={username}
              onChange={(e) => setUsername(e.target.value.toLowerCase())}
            />
          </label>
          <span id="username-hint" className="hint">
            {username && !USERNAME.test(username)
              ? 'Use 2–63 lowercase letters, digits, dots, dashes or underscores, starting with a letter.'
              : 'Lowercase letters, digits, dots, dashes, underscores.'}
          </span>
          <label>
            <span>Password</span>
            <input
              name="new-password"
              type="password"
              autoComplete="new-password"
              required
              minLength={12}
              maxLength={1024}
              aria-describedby="password-hint"
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
          </label>
          <span id="password-hint" className={short ? 'hint hint-bad' : 'hint'}>
            At least 12 characters; common passwords are refused.
          </span>
          <label>
            <span>Confirm password</span>
            <input
              name="confirm-password"
              type="password"
              autoComplete="new-password"
              required
              maxLength={1024}
              aria-invalid={mismatch}
              aria-describedby="confirm-hint"
              value={confirm}
              onChange={(e) => setConfirm(e.target.value)}
            />
          </label>
          <span id="confirm-hint" className={mismatch ? 'hint hint-bad' : 'hint'}>
            {mismatch ? 'The passwords differ.' : 'Type it again.'}
          </span>
          <button type="submit" className="primary" disabled={redeem.busy || mismatch || short}>
            Create account
          </button>
          <ErrorNotice error={redeem.error} />
        </form>
        <p>
          Already have an account? <Link href="/sign-in">Sign in</Link>
        </p>
      </div>
    </Page>
  );
}
