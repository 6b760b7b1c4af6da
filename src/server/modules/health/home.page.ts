/**
 * The plain page at `/` when the dashboard has not been built (web/dist missing). No scripts, no
 * styles, no external assets: it is served under the strictest CSP.
 */
export function homePage(info: { version: string; poolerPort: number | null }): string {
  const pooler = info.poolerPort ? `<li>Databases: through PgBouncer on port ${info.poolerPort}</li>` : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bulwark</title></head><body>
<h1>Bulwark ${info.version}</h1>
<p>Self-hosted, security-first PostgreSQL. This server is running, but its dashboard has not been built.</p>
<p>Build it with <code>npm run build:web</code> (or start with <code>npm start</code>, which builds it), then reload this page.
The server serves the build from <code>web/dist</code> (or <code>BULWARK_DASHBOARD_DIR</code>).</p>
<ul>
<li>API reference: <a href="/docs">/docs</a> (OpenAPI document at <a href="/v1/openapi.json">/v1/openapi.json</a>)</li>
<li>Health: <a href="/health">/health</a>, readiness: <a href="/ready">/ready</a></li>
${pooler}
<li>Operator key: <code>bulwark admin create-key --account NAME</code> on the server host</li>
<li>Invited? The code is the part of this page's address after <code>#invite=</code>; sign up with <code>POST /v1/auth/invites/redeem {"code", "username", "password"}</code> (a password of 12 or more characters), then sign in</li>
</ul>
</body></html>`;
}
