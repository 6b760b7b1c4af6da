/** The small page at `/` until the dashboard replaces it. No scripts, no external assets. */
export function homePage(info: { version: string; poolerPort: number | null }): string {
  const pooler = info.poolerPort ? `<li>Databases: through PgBouncer on port ${info.poolerPort}</li>` : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bulwark</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:42rem;margin:3rem auto;padding:0 1rem;color:#1b1f24}code{background:#f0f2f4;padding:.1em .3em;border-radius:3px}</style>
</head><body>
<h1>Bulwark ${info.version}</h1>
<p>Self-hosted, security-first PostgreSQL. This server is running.</p>
<ul>
<li>API reference: <a href="/docs">/docs</a> (OpenAPI document at <a href="/v1/openapi.json">/v1/openapi.json</a>)</li>
<li>Health: <a href="/health">/health</a>, readiness: <a href="/ready">/ready</a></li>
${pooler}
<li>Operator key: <code>bulwark admin create-key --account NAME</code> on the server host</li>
<li>Invited? The code is the part of this page's address after <code>#invite=</code>; sign up with <code>POST /v1/auth/invites/redeem {"code", "username", "password"}</code> (a password of 12 or more characters), then sign in</li>
</ul>
</body></html>`;
}
