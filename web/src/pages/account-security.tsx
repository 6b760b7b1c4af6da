import { type FormEvent, useMemo, useState } from 'react';
import { renderSVG } from 'uqr';
import { Link } from 'wouter';
import { api, call } from '../api/client.ts';
import { CopyButton } from '../components/copy-button.tsx';
import { ErrorNotice } from '../components/error-notice.tsx';
import { Page } from '../components/page.tsx';
import { SlackLink } from '../components/slack-link.tsx';
import { useAction } from '../lib/use-api.ts';
import { useReauth } from '../reauth.tsx';
import { useMe, useSession } from '../session.tsx';

type Enrolment = { secret: string; otpauth_uri: string };

/** The otpauth URI as a QR code: an SVG in a data: URL (img-src allows data:; no inline markup). */
function QrCode({ uri }: { uri: string }) {
  const src = useMemo(
    () => `data:image/svg+xml;charset=utf-8,${encodeURIComponent(renderSVG(uri, { ecc: 'M', border: 2 }))}`,
    [uri],
  );
  return <img className="qr" src={src} alt="QR code for your authenticator app" width={220} height={220} />;
}

export default function AccountSecurity() {
  const { me } = useMe();
  const { reload } = useSession();
  const [enrolment, setEnrolment] = useState<Enrolment | null>(null);
  const [code, setCode] = useState('');
  const [recovery, setRecovery] = useState<string[] | null>(null);
  const withReauth = useReauth();
  const start = useAction(async () => setEnrolment(await withReauth(() => call(api.POST('/v1/me/totp')))));
  const confirm = useAction(async () => {
    const out = await call(api.POST('/v1/me/totp/confirm', { body: { code: code.trim() } }));
    setRecovery(out.recovery_codes);
    setEnrolment(null);
    await reload({ afterSignIn: true });
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void confirm.run();
  };
  const enabled = me.user.totp_enabled;
  return (
    <Page title="Account security">
      <section className="card" aria-labelledby="totp-h">
        <h2 id="totp-h">Two-factor authentication</h2>
        {enabled ? (
          <p role="status" className="ok">
            Two-factor authentication is on. Signing in asks for a code from your authenticator app.
          </p>
        ) : null}
        {recovery ? (
          <div>
            <h2>Recovery codes</h2>
            <p>
              Each code signs you in once if you lose your phone. Store them somewhere safe now: they are not
              shown again.
            </p>
            <ul className="codes">
              {recovery.map((c) => (
                <li key={c}>
                  <code>{c}</code>
                </li>
              ))}
            </ul>
            <CopyButton text={recovery.join('\n')} label="Copy recovery codes" />
            <p>
              <Link href="/databases">Continue to databases</Link>
            </p>
          </div>
        ) : null}
        {!enabled && !enrolment && !recovery ? (
          <>
            <p>
              Protect your sign-in with an authenticator app (any TOTP app). After this, signing in asks for a
              6-digit code as well as your password.
            </p>
            <button type="button" className="primary" disabled={start.busy} onClick={() => void start.run()}>
              Set up two-factor authentication
            </button>
            <p>
              <Link href="/databases">Skip for now</Link>
            </p>
          </>
        ) : null}
        {enrolment ? (
          <form className="form" onSubmit={submit} aria-label="Confirm two-factor authentication">
            <ol className="steps">
              <li>Scan this QR code with your authenticator app:</li>
            </ol>
            <QrCode uri={enrolment.otpauth_uri} />
            <label>
              <span>Secret key</span>
              <input
                readOnly
                className="mono"
                value={enrolment.secret}
                aria-describedby="secret-hint"
                onFocus={(e) => e.target.select()}
              />
            </label>
            <span id="secret-hint" className="hint">
              Can't scan? Type this key into the app instead.
            </span>
            <label>
              <span>Authentication code</span>
              <input
                name="totp"
                autoComplete="one-time-code"
                inputMode="numeric"
                required
                maxLength={32}
                value={code}
                onChange={(e) => setCode(e.target.value)}
              />
            </label>
            <button type="submit" className="primary" disabled={confirm.busy}>
              Confirm
            </button>
          </form>
        ) : null}
        <ErrorNotice error={start.error ?? confirm.error} />
      </section>
      <SlackLink />
    </Page>
  );
}
