import { Link } from 'wouter';
import { Page } from '../components/page.tsx';

export default function NotFound() {
  return (
    <Page title="Page not found">
      <p>
        Nothing lives at this address. Go to <Link href="/databases">your databases</Link> or the{' '}
        <Link href="/">start page</Link>.
      </p>
    </Page>
  );
}
