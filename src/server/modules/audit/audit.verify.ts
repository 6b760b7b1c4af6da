/**
 * Whole-log verification, shared by the database and an export file:
 *   1. every checkpoint and anchor must carry a valid signature from a known public key;
 *   2. the chain is checked from the newest anchor (or genesis) in seq order, in batches, over
 *      the stored canonical text (verifyChain), comparing every checkpoint on the way;
 *   3. a checkpoint beyond the last event, or a head row ahead of it, means the tail was deleted.
 * The database check also compares each row's columns with its canonical text (a field edited in
 * a column only would otherwise mislead every reader of the API).
 */
import {
  type AuditCheckpoint,
  type ChainRow,
  type CheckpointRef,
  canonicalEncode,
  verifyChain,
  verifyCheckpoint,
} from './audit-chain.ts';

export type VerifyFailureReason =
  | 'hash_mismatch'
  | 'gap'
  | 'reorder'
  | 'seq_mismatch'
  | 'anchor_mismatch'
  | 'checkpoint_mismatch'
  | 'tail_truncated'
  | 'content_mismatch'
  | 'bad_signature'
  | 'head_mismatch';

export type VerifyReport = {
  ok: boolean;
  /** Events whose hash was recomputed. */
  events: number;
  /** The anchor verification started from (0: genesis). */
  anchor_seq: number;
  head_seq: number;
  checkpoints_checked: number;
  /** Committed events not chained yet (database only; normally 0 or a few). */
  pending: number;
  failure: { reason: VerifyFailureReason; seq: number; expected_seq: number; detail: string } | null;
  /** Key ids whose signatures were relied on: compare them with the keys you trust. */
  key_ids: string[];
};

export type SignedCheckpoint = AuditCheckpoint & { kind: 'checkpoint' | 'anchor' };

/** A row as verification sees it; `event` lets the caller compare columns with the canonical text. */
export type VerifyRow = ChainRow & { seq: number; canonical: string; check?: () => boolean };

type Failure = NonNullable<VerifyReport['failure']>;

const describe: Record<VerifyFailureReason, string> = {
  hash_mismatch: 'the event content or its stored hash was altered',
  gap: 'events are missing before this one',
  reorder: 'events are out of order',
  seq_mismatch: "the row's seq does not match its content",
  anchor_mismatch: 'the chain does not continue from the signed anchor',
  checkpoint_mismatch: 'the chain differs from a signed checkpoint (rewritten history)',
  tail_truncated: 'events after this point were deleted (a signed checkpoint or the head names them)',
  content_mismatch: "the event's columns differ from the hashed record",
  bad_signature: 'a checkpoint or anchor signature does not verify with any known public key',
  head_mismatch: 'the chain head row does not match the last event',
};

function failure(reason: VerifyFailureReason, seq: number, expected: number): Failure {
  return { reason, seq, expected_seq: expected, detail: describe[reason] };
}

/**
 * Verifies `batches` (seq order, each batch non-empty) against the signed checkpoints.
 * `head`: the recorded head (database), checked against the last event; omit for a file.
 */
export async function verifyLog(input: {
  checkpoints: readonly SignedCheckpoint[];
  publicKeys: Map<string, string>;
  batches: AsyncIterable<VerifyRow[]>;
  head?: { seq: number; hash: Buffer };
  pending?: number;
  /** Account exports: events are a subset, so only each event's own link can be checked. */
}): Promise<VerifyReport> {
  const report: VerifyReport = {
    ok: false,
    events: 0,
    anchor_seq: 0,
    head_seq: 0,
    checkpoints_checked: 0,
    pending: input.pending ?? 0,
    failure: null,
    key_ids: [],
  };
  const keyIds = new Set<string>();
  for (const cp of input.checkpoints) {
    if (!verifyCheckpoint(cp, input.publicKeys)) {
      report.failure = { ...failure('bad_signature', Number(cp.seq), Number(cp.seq)) };
      return report;
    }
    keyIds.add(cp.keyId);
  }
  report.key_ids = [...keyIds].sort();
  const anchors = input.checkpoints.filter((c) => c.kind === 'anchor');
  const anchor = anchors.reduce<SignedCheckpoint | null>(
    (best, c) => (best === null || Number(c.seq) > Number(best.seq) ? c : best),
    null,
  );
  const anchorSeq = anchor ? Number(anchor.seq) : 0;
  report.anchor_seq = anchorSeq;
  const cps: CheckpointRef[] = input.checkpoints
    .filter((c) => c.kind === 'checkpoint' && Number(c.seq) > anchorSeq)
    .map((c) => ({ seq: c.seq, hash: c.hash }))
    .sort((a, b) => Number(a.seq) - Number(b.seq));

  let prev: { seq: number; hash: Buffer | string } = {
    seq: anchorSeq,
    hash: anchor ? anchor.hash : Buffer.alloc(32),
  };
  let cpIdx = 0;
  for await (const rows of input.batches) {
    const last = rows.at(-1);
    if (!last) continue;
    // Checkpoints this batch reaches; later ones wait for later batches.
    const inBatch: CheckpointRef[] = [];
    while (cpIdx < cps.length && Number(cps[cpIdx]!.seq) <= last.seq) inBatch.push(cps[cpIdx++]!);
    const r = verifyChain(rows, prev, { checkpoints: inBatch });
    let contentAt = -1;
    for (const row of rows) {
      if (!r.ok && row.seq >= Number(r.brokenAtSeq)) break;
      if (row.check && !row.check()) {
        contentAt = row.seq;
        break;
      }
    }
    if (contentAt >= 0) {
      report.failure = failure('content_mismatch', contentAt, contentAt);
      return report;
    }
    if (!r.ok) {
      report.failure = failure(r.reason, Number(r.brokenAtSeq), Number(r.expectedSeq));
      return report;
    }
    report.events += r.count;
    report.checkpoints_checked += r.checkpointsChecked;
    prev = { seq: Number(r.headSeq), hash: r.headHash };
  }
  report.head_seq = prev.seq;
  if (cpIdx < cps.length) {
    report.failure = failure('tail_truncated', prev.seq + 1, prev.seq + 1);
    return report;
  }
  if (input.head) {
    const headHash = typeof prev.hash === 'string' ? Buffer.from(prev.hash, 'hex') : prev.hash;
    if (input.head.seq > prev.seq) {
      report.failure = failure('tail_truncated', prev.seq + 1, prev.seq + 1);
      return report;
    }
    if (input.head.seq < prev.seq || !input.head.hash.equals(headHash)) {
      report.failure = failure('head_mismatch', input.head.seq, prev.seq);
      return report;
    }
  }
  report.ok = true;
  return report;
}

/** Whether a row's columns encode to its stored canonical text (database verification). */
export function columnsMatch(
  seq: number,
  event: Parameters<typeof canonicalEncode>[1],
  canonical: string,
): boolean {
  try {
    return canonicalEncode(seq, event) === canonical;
  } catch {
    return false;
  }
}
