import { useState } from 'react';
import { api, call } from '../api/client.ts';
import { dateTime } from '../lib/format.ts';
import { useAction, useApi } from '../lib/use-api.ts';
import { CopyButton } from './copy-button.tsx';
import { ErrorNotice } from './error-notice.tsx';

/**
 * "Link Slack": a single-use code (10 minutes) the person sends as `/bulwark link <code>` in the
 * account's Slack workspace; from then on their Slack approvals are theirs.
 */
export function SlackLink() {
  const link = useApi(() => call(api.GET('/v1/me/slack-link')), 'slack-link');
  const [code, setCode] = useState<{ code: string; expires_at: string } | null>(null);
  const newCode = useAction(async () => setCode(await call(api.POST('/v1/me/slack-link'))));
  const unlink = useAction(async () => {
    await call(api.DELETE('/v1/me/slack-link'));
    setCode(null);
    link.reload();
  });
  const l = link.data;
  return (
    <section className="card" aria-labelledby="slack-link-h">
      <h2 id="slack-link-h">Slack</h2>
      <ErrorNotice error={link.error} title="Could not read your Slack link" />
      {l?.linked ? (
        <p role="status" className="ok">
          Linked to Slack user <code>{l.slack_user_id}</code> in workspace <code>{l.team_id}</code>: your
          approvals from Slack are yours.
        </p>
      ) : l ? (
        <p>Link your Slack identity to approve requests from Slack as yourself.</p>
      ) : null}
      {code ? (
        <div>
          <p>
            In Slack, send this command (the code works once, until {dateTime(code.expires_at)}), then reload
            this page:
          </p>
          <div className="field-row">
            <label className="grow">
              <span>Command</span>
              <input
                readOnly
                className="mono"
                value={`/bulwark link ${code.code}`}
                onFocus={(e) => e.target.select()}
              />
            </label>
            <CopyButton text={`/bulwark link ${code.code}`} label="Copy command" />
          </div>
        </div>
      ) : null}
      <div className="actions">
        <button
          type="button"
          className="secondary"
          disabled={newCode.busy}
          onClick={() => void newCode.run()}
        >
          {l?.linked ? 'Link another Slack identity' : 'Link Slack'}
        </button>
        {l?.linked ? (
          <button
            type="button"
            className="secondary"
            disabled={unlink.busy}
            onClick={() => void unlink.run()}
          >
            Unlink Slack
          </button>
        ) : null}
      </div>
      <ErrorNotice error={newCode.error ?? unlink.error} />
    </section>
  );
}
