/**
 * Off-site copies in S3-compatible object storage (issue 15; ADR 0022 "Off-site copies").
 *
 * The object key is an optional operator prefix plus the contract's storage key
 * (`<database id>/<backup id>.bulwark-backup`: two uuids, never a name). An upload goes through
 * lib-storage's `Upload` (multipart for anything over one part): an object becomes visible only
 * when the upload completes, and a failed or aborted upload is aborted on the server (its parts
 * dropped) and, should the object have appeared anyway, deleted — a failure leaves no object.
 * Reads stream the object (`GetObject`, pinned to the ETag the open saw: a replaced object fails
 * the later passes instead of mixing two archives); what is read is verified like a local archive.
 */
import { createHash } from 'node:crypto';
import { PassThrough, type Readable, Transform } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { backupStorageKey } from '../../shared/contracts/backups.ts';
import { S3_PREFIX_PATTERN } from '../config.ts';
import type { ArchiveRef, BackupStorage, PendingArchive } from './backup-storage.ts';

export type S3StorageOptions = {
  /** An S3-compatible endpoint (https://…); absent: AWS S3 of `region`. */
  endpoint?: string | undefined;
  region: string;
  bucket: string;
  /** Prepended to every key as given (e.g. `bulwark/`); validated by the agent's config. */
  prefix?: string | undefined;
  /** Path-style URLs (`<endpoint>/<bucket>/<key>`), which most S3-compatible servers need. */
  forcePathStyle: boolean;
  credentials: { accessKeyId: string; secretAccessKey: string };
  /** Bytes per multipart part (default 8 MiB; S3's minimum is 5 MiB). */
  partSize?: number;
};

export type S3Storage = BackupStorage & {
  /** The object key of an archive (prefix + storage key). */
  keyOf(ref: ArchiveRef): string;
  /** Reaches the bucket (HeadBucket); throws with the store's reason. */
  check(): Promise<void>;
  /** Closes the client's sockets. */
  destroy(): void;
};

const PART_SIZE = 8 * 1024 * 1024;

export function createS3Client(opts: S3StorageOptions): S3Client {
  return new S3Client({
    region: opts.region,
    ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
    forcePathStyle: opts.forcePathStyle,
    credentials: opts.credentials,
    // Only what S3 requires: several S3-compatible servers reject the newer default checksums.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 3,
    requestHandler: { connectionTimeout: 10_000, requestTimeout: 300_000 },
  });
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e?.name === 'NotFound' || e?.name === 'NoSuchKey' || e?.$metadata?.httpStatusCode === 404;
}

export function createS3Storage(opts: S3StorageOptions, client = createS3Client(opts)): S3Storage {
  const prefix = opts.prefix ?? '';
  if (!S3_PREFIX_PATTERN.test(prefix)) throw new Error('invalid S3 key prefix');
  const Bucket = opts.bucket;
  const keyOf = (ref: ArchiveRef) => `${prefix}${backupStorageKey(ref.databaseId, ref.backupId)}`;

  const head = async (Key: string) => {
    try {
      return await client.send(new HeadObjectCommand({ Bucket, Key }));
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  };

  return {
    tag: createHash('sha256')
      .update(`s3:${opts.endpoint ?? ''}/${Bucket}/${prefix}`)
      .digest('hex')
      .slice(0, 8),
    keyOf,
    pathOf: (ref) => `s3://${Bucket}/${keyOf(ref)}`,
    destroy: () => client.destroy(),
    async check() {
      await client.send(new HeadBucketCommand({ Bucket }));
    },

    async create(ref, expectedBytes): Promise<PendingArchive> {
      const Key = keyOf(ref);
      if (await head(Key)) throw new Error('an archive of this backup already exists off-site');
      const body = new PassThrough({ highWaterMark: 1024 * 1024 });
      const upload = new Upload({
        client,
        params: { Bucket, Key, Body: body, ContentType: 'application/octet-stream' },
        // S3 allows 10,000 parts: a large archive gets larger parts (8 MiB covers 80 GB).
        partSize: Math.max(opts.partSize ?? PART_SIZE, Math.ceil((expectedBytes ?? 0) / 9_000)),
        queueSize: 2,
        leavePartsOnError: false,
      });
      // The upload reads `body` as it comes; a failed upload ends the writer's pipeline at once.
      const done = upload.done();
      done.catch((err: unknown) => {
        if (!body.destroyed) body.destroy(err as Error);
      });
      let bytes = 0;
      const writer = new Transform({
        transform(chunk: Buffer, _e, cb) {
          bytes += chunk.length;
          cb(null, chunk);
        },
      });
      writer.pipe(body);
      writer.on('error', (err) => {
        if (!body.destroyed) body.destroy(err);
      });
      body.on('error', (err) => {
        if (!writer.destroyed) writer.destroy(err);
      });
      let finished = false;
      /** Makes sure no object and no multipart upload is left of this attempt. */
      const cleanUp = async () => {
        if (upload.uploadId)
          await client
            .send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId: upload.uploadId }))
            .catch(() => {});
        await client.send(new DeleteObjectCommand({ Bucket, Key })).catch(() => {});
      };
      return {
        stream: writer,
        async commit() {
          if (finished) throw new Error('archive already finished');
          finished = true;
          try {
            await done;
            const h = await head(Key);
            if (!h || h.ContentLength !== bytes)
              throw new Error('the off-site object does not hold what was uploaded');
            return { sizeBytes: bytes };
          } catch (err) {
            await cleanUp();
            throw err;
          }
        },
        async abort() {
          if (finished) return;
          finished = true;
          const reason = new Error('upload abandoned');
          if (!writer.destroyed) writer.destroy(reason);
          if (!body.destroyed) body.destroy(reason);
          await done.catch(() => {});
          await cleanUp();
        },
      };
    },

    async open(ref) {
      const Key = keyOf(ref);
      const h = await head(Key);
      if (!h) throw Object.assign(new Error('no such archive off-site'), { code: 'ENOENT' });
      const size = h.ContentLength ?? 0;
      const etag = h.ETag;
      const inflight = new Set<AbortController>();
      return {
        size,
        stream(start = 0): Readable {
          const out = new PassThrough({ highWaterMark: 1024 * 1024 });
          const ac = new AbortController();
          inflight.add(ac);
          out.on('close', () => {
            inflight.delete(ac);
            ac.abort();
          });
          client
            .send(
              new GetObjectCommand({
                Bucket,
                Key,
                ...(etag ? { IfMatch: etag } : {}),
                ...(start > 0 ? { Range: `bytes=${start}-` } : {}),
              }),
              { abortSignal: ac.signal },
            )
            .then((r) => {
              const src = r.Body as Readable | undefined;
              if (!src) throw new Error('the off-site object has no body');
              src.on('error', (e) => out.destroy(e));
              out.on('close', () => src.destroy());
              src.pipe(out);
            })
            .catch((err: Error) => out.destroy(err));
          return out;
        },
        async close() {
          for (const ac of inflight) ac.abort();
          inflight.clear();
        },
      };
    },

    exists: async (ref) => (await head(keyOf(ref))) !== null,

    async remove(ref) {
      const Key = keyOf(ref);
      const had = (await head(Key)) !== null;
      await client.send(new DeleteObjectCommand({ Bucket, Key }));
      return had;
    },

    // Nothing partial is ever visible in a bucket; an incomplete multipart upload of a crashed
    // agent is dropped by the bucket's lifecycle rule (docs/operations.md), not here: another
    // agent may share the bucket and be uploading right now.
    sweepPartials: async () => 0,
  };
}
