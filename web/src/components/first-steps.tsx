import { Link } from 'wouter';

/** What a newcomer does first, before signing in (the invite) and after (the three steps). */
export function FirstStepsSignedOut() {
  return (
    <section className="card" aria-labelledby="first-steps">
      <h2 id="first-steps">First steps</h2>
      <ol className="steps">
        <li>
          Open the one-time invite link that <code>bulwark up</code> printed in its terminal (or ask your
          operator for one: <code>bulwark admin invite</code>). It brings you to{' '}
          <Link href="/invite">Redeem an invite</Link> with the code filled in.
        </li>
        <li>
          Choose a username and a password of at least 12 characters, then set up two-factor authentication.
        </li>
        <li>Create your first database, allow your address, and copy its connection string.</li>
      </ol>
    </section>
  );
}

export function FirstSteps({ totpDone, hasDatabase }: { totpDone: boolean; hasDatabase: boolean }) {
  return (
    <section className="card" aria-labelledby="first-steps">
      <h2 id="first-steps">First steps</h2>
      <ol className="steps">
        <li className={totpDone ? 'done' : undefined}>
          <Link href="/account/security">Set up two-factor authentication</Link>
          <span className="muted">
            {' '}
            — an authenticator app protects your sign-in.{totpDone ? ' Done.' : ''}
          </span>
        </li>
        <li className={hasDatabase ? 'done' : undefined}>
          <Link href="/databases/new">Create a database</Link>
          <span className="muted"> — ready in a few seconds.{hasDatabase ? ' Done.' : ''}</span>
        </li>
        <li>
          <Link href="/databases">Allow your address and connect</Link>
          <span className="muted">
            {' '}
            — open the database, add your IP on its Network tab, then copy the URI on its Connect tab.
          </span>
        </li>
      </ol>
    </section>
  );
}
