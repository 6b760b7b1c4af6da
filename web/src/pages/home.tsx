import { api, call } from '../api/client.ts';
import { FirstSteps } from '../components/first-steps.tsx';
import { Page } from '../components/page.tsx';
import { useApi } from '../lib/use-api.ts';
import { useMe } from '../session.tsx';

export default function Home() {
  const { me, account } = useMe();
  const dbs = useApi(
    () => call(api.GET('/v1/databases', { params: { query: { limit: 1 } } })),
    account ?? '',
  );
  return (
    <Page title="Welcome to Bulwark">
      <p>
        Bulwark runs PostgreSQL databases for your team: each with its own credentials, an address allowlist
        at the pooler, a read-only SQL explorer, and every action in a tamper-evident audit log.
      </p>
      <FirstSteps totpDone={me.user.totp_enabled} hasDatabase={(dbs.data?.items.length ?? 0) > 0} />
      <p className="muted small">
        The API is documented at <a href="/docs">/docs</a>; the same actions are in the <code>bulwark</code>{' '}
        CLI.
      </p>
    </Page>
  );
}
