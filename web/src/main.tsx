import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './app.tsx';
import { takeInviteFragment, takeOidcFragment } from './lib/invite-fragment.ts';
import { ReauthProvider } from './reauth.tsx';
import { SessionProvider } from './session.tsx';
import './styles/app.css';

takeInviteFragment();
takeOidcFragment();
const root = document.getElementById('root');
if (root)
  createRoot(root).render(
    <StrictMode>
      <SessionProvider>
        <ReauthProvider>
          <App />
        </ReauthProvider>
      </SessionProvider>
    </StrictMode>,
  );
