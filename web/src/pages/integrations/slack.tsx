import { type FormEvent, useEffect, useState } from 'react';
import { api, call } from '../../api/client.ts';
import { ConfirmDialog } from '../../components/dialog.tsx';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Loading, Page } from '../../components/page.tsx';
import { dateTime } from '../../lib/format.ts';
import { useAction, useApi } from '../../lib/use-api.ts';
import { useReauth } from '../../reauth.tsx';
import { useMe } from '../../session.tsx';

const SLACK_ID = /^[A-Z0-9]{1,32}$/;

/**
 * The account's Slack app (owners and admins): the workspace, the channel new requests are posted
 * to, and the bot token and signing secret — write-only: the page says whether each is set, never
 * what it is. A new secret, token or workspace needs "Confirm it's you" (whoever holds the signing
 * secret can approve as anyone linked), and a new secret or workspace unlinks everyone.
 */
export default function SlackSettings() {
  const { account, role } = useMe();
  const withReauth = useReauth();
  const admin = role === 'owner' || role === 'admin';
  const settings = useApi(
    () => (admin ? call(api.GET('/v1/integrations/slack')) : Promise.resolve(undefined)),
    `${account}|${admin}`,
  );
  const [enabled, setEnabled] = useState(false);
  const [team, setTeam] = useState('');
  const [channel, setChannel] = useState('');
  const [token, setToken] = useState('');
  const [secret, setSecret] = useState('');
  const [saved, setSaved] = useState(false);
  const [removing, setRemoving] = useState(false);
  const s = settings.data;
  useEffect(() => {
    if (!s) return;
    setEnabled(s.enabled);
    setTeam(s.team_id ?? '');
    setChannel(s.channel_id ?? '');
  }, [s]);
  const save = useAction(async () => {
    const body = {
      enabled,
      team_id: team.trim() || null,
      channel_id: channel.trim() || null,
      ...(token.trim() ? { bot_token: token.trim() } : {}),
      ...(secret.trim() ? { signing_secret: secret.trim() } : {}),
    };
    settings.setData(await withReauth(() => call(api.PUT('/v1/integrations/slack', { body }))));
    setToken('');
    setSecret('');
    setSaved(true);
  });
  const remove = useAction(async () => {
    await call(api.DELETE('/v1/integrations/slack'));
    setRemoving(false);
    settings.reload();
  });
  const badTeam = team.trim() !== '' && !SLACK_ID.test(team.trim());
  const badChannel = channel.trim() !== '' && !SLACK_ID.test(channel.trim());
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setSaved(false);
    if (badTeam || badChannel) return;
    void save.run();
  };
  if (!admin)
    return (
      <Page title="Slack">
        <p>
          Only owners and admins of the account set up Slack. You can link your own Slack identity in Account
          security.
        </p>
      </Page>
    );
  return (
    <Page title="Slack">
      <p>
        New requests that need approval are posted to a Slack channel with their SQL (literals hidden), class,
        findings and Approve / Reject buttons. People approve from Slack as themselves once they have linked
        their Slack identity (Account security → Link Slack); the same rules apply as in Bulwark, and
        break-glass is never possible from Slack.
      </p>
      <ErrorNotice error={settings.error} title="Could not read the Slack settings" />
      {!s && settings.loading ? <Loading what="the Slack settings" /> : null}
      {s ? (
        <form className="card form" onSubmit={submit} aria-labelledby="slack-h">
          <h2 id="slack-h">Slack app</h2>
          <p className="muted small">
            {s.updated_at ? `Last changed ${dateTime(s.updated_at)}.` : 'Not set up yet.'} Request URLs for
            the Slack app: <code>/v1/integrations/slack/interactions</code> and{' '}
            <code>/v1/integrations/slack/commands</code> on this server.
          </p>
          <label className="inline">
            <input type="checkbox" checked={enabled} onChange={(e) => setEnabled(e.target.checked)} />
            <span>Post requests to Slack and accept approvals from it</span>
          </label>
          <div className="grid2">
            <div className="field">
              <label>
                <span>Workspace (team) ID</span>
                <input
                  className="mono"
                  maxLength={32}
                  placeholder="T0123ABCD"
                  aria-invalid={badTeam}
                  aria-describedby="team-hint"
                  value={team}
                  onChange={(e) => setTeam(e.target.value)}
                />
              </label>
              <span id="team-hint" className={badTeam ? 'hint hint-bad' : 'hint'}>
                {badTeam ? 'Upper-case letters and digits only' : 'One Bulwark account per Slack workspace'}
              </span>
            </div>
            <div className="field">
              <label>
                <span>Channel ID</span>
                <input
                  className="mono"
                  maxLength={32}
                  placeholder="C0123ABCD"
                  aria-invalid={badChannel}
                  aria-describedby="channel-hint"
                  value={channel}
                  onChange={(e) => setChannel(e.target.value)}
                />
              </label>
              <span id="channel-hint" className={badChannel ? 'hint hint-bad' : 'hint'}>
                {badChannel ? 'Upper-case letters and digits only' : 'Invite the app to this channel'}
              </span>
            </div>
          </div>
          <div className="grid2">
            <label>
              <span>Bot token {s.bot_token_set ? '(set: leave empty to keep it)' : '(not set)'}</span>
              <input
                type="password"
                autoComplete="off"
                maxLength={512}
                placeholder="xoxb-…"
                value={token}
                onChange={(e) => setToken(e.target.value)}
              />
            </label>
            <label>
              <span>
                Signing secret {s.signing_secret_set ? '(set: leave empty to keep it)' : '(not set)'}
              </span>
              <input
                type="password"
                autoComplete="off"
                maxLength={128}
                value={secret}
                onChange={(e) => setSecret(e.target.value)}
              />
            </label>
          </div>
          <p className="muted small">
            Whoever holds the signing secret can approve as anyone linked: a new signing secret, bot token or
            workspace asks you to confirm it's you, and a new signing secret or workspace unlinks everyone
            (people link again from Account security).
          </p>
          <div className="actions">
            <button type="submit" className="primary" disabled={save.busy}>
              Save Slack settings
            </button>
            {s.updated_at ? (
              <button type="button" className="secondary" onClick={() => setRemoving(true)}>
                Remove Slack
              </button>
            ) : null}
          </div>
          {saved ? (
            <p role="status" className="ok">
              Saved.{' '}
              {s.bot_token_set && s.signing_secret_set ? '' : 'Set the bot token and the signing secret too.'}
            </p>
          ) : null}
          <ErrorNotice error={save.error} />
        </form>
      ) : null}
      {removing ? (
        <ConfirmDialog
          title="Remove Slack?"
          action="Remove Slack"
          danger
          busy={remove.busy}
          onConfirm={() => void remove.run()}
          onClose={() => setRemoving(false)}
        >
          <p>Nothing more is posted and Slack's buttons stop working. Linked people stay linked.</p>
          <ErrorNotice error={remove.error} />
        </ConfirmDialog>
      ) : null}
    </Page>
  );
}
