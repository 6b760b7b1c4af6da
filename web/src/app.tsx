import { lazy, Suspense } from 'react';
import { Redirect, Route, Switch, useLocation } from 'wouter';
import { Loading } from './components/page.tsx';
import { Layout } from './layout.tsx';
import { useSession } from './session.tsx';

// Every page is its own chunk: the first load carries only the shell and the page it shows.
const SignIn = lazy(() => import('./pages/sign-in.tsx'));
const Invite = lazy(() => import('./pages/invite.tsx'));
const Home = lazy(() => import('./pages/home.tsx'));
const Security = lazy(() => import('./pages/account-security.tsx'));
const Databases = lazy(() => import('./pages/databases/list.tsx'));
const CreateDatabase = lazy(() => import('./pages/databases/create.tsx'));
const DatabaseDetail = lazy(() => import('./pages/databases/detail.tsx'));
const Keys = lazy(() => import('./pages/keys.tsx'));
const Audit = lazy(() => import('./pages/audit.tsx'));
const RequestDetail = lazy(() => import('./pages/requests/detail.tsx'));
const Approvals = lazy(() => import('./pages/requests/inbox.tsx'));
const Policy = lazy(() => import('./pages/requests/policy.tsx'));
const Admin = lazy(() => import('./pages/admin/admin.tsx'));
const Webhooks = lazy(() => import('./pages/webhooks/list.tsx'));
const WebhookDetail = lazy(() => import('./pages/webhooks/detail.tsx'));
const SlackSettings = lazy(() => import('./pages/integrations/slack.tsx'));
const NotFound = lazy(() => import('./pages/not-found.tsx'));

const PUBLIC = ['/sign-in', '/invite'];

function safeNext(raw: string | null): string {
  return raw && /^\/(?!\/)[\w\-./?=&%]*$/.test(raw) && !PUBLIC.includes(raw) ? raw : '/';
}

export function App() {
  const { state } = useSession();
  const [location] = useLocation();
  if (state.status === 'loading') return <Loading what="Bulwark" />;
  const isPublic = PUBLIC.includes(location);

  if (state.status === 'signed-out') {
    if (!isPublic) {
      // After a session ended on its own, sign-in brings the person back where they were.
      const keep = location !== '/' && state.reason !== 'signed-out';
      const next = keep ? `?next=${encodeURIComponent(location + window.location.search)}` : '';
      return <Redirect to={`/sign-in${next}`} replace />;
    }
    return (
      <>
        <header className="top">
          <span className="brand">Bulwark</span>
          <span className="muted small">Self-hosted, security-first PostgreSQL</span>
        </header>
        <main id="main" className="public">
          <Suspense fallback={<Loading what="the page" />}>
            <Switch>
              <Route path="/sign-in">{() => <SignIn ended={state.reason === 'ended'} />}</Route>
              <Route path="/invite" component={Invite} />
            </Switch>
          </Suspense>
        </main>
      </>
    );
  }

  if (location === '/sign-in')
    return <Redirect to={safeNext(new URLSearchParams(window.location.search).get('next'))} replace />;
  return (
    <Layout>
      <Suspense fallback={<Loading what="the page" />}>
        <Switch>
          <Route path="/" component={Home} />
          <Route path="/invite" component={Invite} />
          <Route path="/account/security" component={Security} />
          <Route path="/databases" component={Databases} />
          <Route path="/databases/new" component={CreateDatabase} />
          <Route path="/databases/:name/requests/:id">
            {(p) => <RequestDetail name={p.name} id={p.id} />}
          </Route>
          <Route path="/databases/:name/:tab?">
            {(p) => <DatabaseDetail name={p.name} tab={p.tab ?? 'connect'} />}
          </Route>
          <Route path="/requests" component={Approvals} />
          <Route path="/policy" component={Policy} />
          <Route path="/keys" component={Keys} />
          <Route path="/audit" component={Audit} />
          <Route path="/webhooks" component={Webhooks} />
          <Route path="/webhooks/:id">{(p) => <WebhookDetail id={p.id} />}</Route>
          <Route path="/integrations/slack" component={SlackSettings} />
          <Route path="/admin">
            <Redirect to="/admin/users" replace />
          </Route>
          <Route path="/admin/:section">{(p) => <Admin section={p.section} />}</Route>
          <Route component={NotFound} />
        </Switch>
      </Suspense>
    </Layout>
  );
}
