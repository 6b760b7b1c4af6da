/**
 * Execution tokens (issue 14): sign/s and verify/s of the token against raw node:crypto Ed25519
 * sign/verify of the same bytes, in the same run. Goal: ≥ 0.8× raw for both.
 *
 * Variants, interleaved in every round (order rotated), median ops/s over rounds:
 *   raw-sign       crypto.sign(null, signing input, key)
 *   token-sign     signExecutionToken (claims check + JSON + base64url + the same sign)
 *   jose-sign      jose SignJWT … .sign (the alternative not taken; ADR 0019)
 *   raw-verify     crypto.verify(null, signing input, key, signature) of the same tokens
 *   token-verify   verifyExecutionToken in full with an in-memory replay set (no file I/O)
 *   token-verify+file  the same with the agent's replay cache (append + fsync per token)
 *   jose-verify    jose jwtVerify with the algorithm pinned
 *
 *   node bench/execution-token.bench.ts [rounds=7] [n=2000]
 *
 * Needs nothing else; prints per-variant figures and a final JSON line.
 */
import { generateKeyPairSync, randomUUID, sign, verify } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jwtVerify, SignJWT } from 'jose';
import { createReplayCache } from '../src/agent/execution/replay-cache.ts';
import {
  EXECUTION_TOKEN_TYPE,
  type ExecutionClaims,
  jwkThumbprint,
  type ReplayGuard,
  signExecutionToken,
  sqlSha256,
  verifyExecutionToken,
} from '../src/shared/execution-token.ts';

const ROUNDS = Number(process.argv[2] ?? 7);
const N = Number(process.argv[3] ?? 2000);
const SQL = 'UPDATE orders SET status = $1 WHERE id = $2';
const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const kid = jwkThumbprint(publicKey.export({ format: 'jwk' }).x!);
const signer = { kid, privateKey };
const keys = new Map([[kid, publicKey]]);
const dir = mkdtempSync(join(tmpdir(), 'bulwark-bench-xtoken-'));

const claims = (): ExecutionClaims => {
  const iat = Math.floor(Date.now() / 1000);
  return {
    request_id: randomUUID(),
    database: 'shop',
    node: 'node-a',
    capability: 'migrator',
    mode: 'execute',
    sql_sha256: sqlSha256(SQL),
    approved_rows: 1,
    jti: randomUUID(),
    iat,
    exp: iat + 300,
  };
};
const memoryReplay = (): ReplayGuard => {
  const seen = new Set<string>();
  return {
    admit(jti) {
      if (seen.has(jti)) return 'replayed';
      seen.add(jti);
      return 'ok';
    },
  };
};
const verifyOpts = (replay: ReplayGuard) => ({
  keys,
  now: Date.now(),
  maxSkewSeconds: 30,
  expect: { database: 'shop', node: 'node-a', mode: 'execute' as const, sqlSha256: sqlSha256(SQL) },
  allowedCapabilities: ['reader', 'migrator'] as const,
  replay,
});

type Variant = (batch: Batch) => Promise<void> | void;
type Batch = { claims: ExecutionClaims[]; tokens: string[]; inputs: Buffer[]; sigs: Buffer[] };

const makeBatch = (): Batch => {
  const cs = Array.from({ length: N }, claims);
  const tokens = cs.map((c) => signExecutionToken(signer, c));
  return {
    claims: cs,
    tokens,
    inputs: tokens.map((t) => Buffer.from(t.slice(0, t.lastIndexOf('.')), 'latin1')),
    sigs: tokens.map((t) => Buffer.from(t.slice(t.lastIndexOf('.') + 1), 'base64url')),
  };
};

let fileNo = 0;
const variants: Record<string, Variant> = {
  'raw-sign': (b) => {
    for (const input of b.inputs) sign(null, input, privateKey);
  },
  'token-sign': (b) => {
    for (const c of b.claims) signExecutionToken(signer, c);
  },
  'jose-sign': async (b) => {
    for (const c of b.claims)
      await new SignJWT({ ...c })
        .setProtectedHeader({ alg: 'EdDSA', typ: EXECUTION_TOKEN_TYPE, kid })
        .sign(privateKey);
  },
  'raw-verify': (b) => {
    for (let i = 0; i < N; i++)
      if (!verify(null, b.inputs[i]!, publicKey, b.sigs[i]!)) throw new Error('raw');
  },
  'token-verify': (b) => {
    const o = verifyOpts(memoryReplay());
    for (const t of b.tokens) if (!verifyExecutionToken(t, o).ok) throw new Error('token');
  },
  'token-verify+file': (b) => {
    const cache = createReplayCache({ file: join(dir, `replay-${fileNo++}.log`), maxEntries: N + 1 });
    const o = verifyOpts(cache);
    for (const t of b.tokens) if (!verifyExecutionToken(t, o).ok) throw new Error('token+file');
    cache.close();
  },
  'jose-verify': async (b) => {
    for (const t of b.tokens)
      await jwtVerify(t, publicKey, { algorithms: ['EdDSA'], typ: EXECUTION_TOKEN_TYPE });
  },
};

const names = Object.keys(variants);
const rates: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
try {
  for (const n of names) await variants[n]!(makeBatch()); // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    const order = names.map((_, i) => names[(i + r) % names.length]!);
    for (const n of order) {
      const batch = makeBatch();
      const t0 = process.hrtime.bigint();
      await variants[n]!(batch);
      rates[n]!.push(N / (Number(process.hrtime.bigint() - t0) / 1e9));
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const m = Object.fromEntries(names.map((n) => [n, median(rates[n]!)]));
for (const n of names) process.stdout.write(`${n.padEnd(18)} ${Math.round(m[n]!).toLocaleString('en')} /s\n`);
const ratio = (a: string, b: string) => Number((m[a]! / m[b]!).toFixed(3));
const out = {
  bench: 'execution-token',
  rounds: ROUNDS,
  n: N,
  ops_per_s: Object.fromEntries(names.map((n) => [n, Math.round(m[n]!)])),
  sign_ratio: ratio('token-sign', 'raw-sign'),
  verify_ratio: ratio('token-verify', 'raw-verify'),
  verify_with_file_ratio: ratio('token-verify+file', 'raw-verify'),
  jose_sign_ratio: ratio('jose-sign', 'raw-sign'),
  jose_verify_ratio: ratio('jose-verify', 'raw-verify'),
};
process.stdout.write(
  `${JSON.stringify({ ...out, goal_ge_0_8: out.sign_ratio >= 0.8 && out.verify_ratio >= 0.8 })}\n`,
);
