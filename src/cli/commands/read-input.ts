/**
 * Text from a file or stdin (`-`), read with a bound: a file larger than `maxBytes` is refused
 * after reading at most one byte more, never loaded whole.
 */
import { open } from 'node:fs/promises';
import { CliError } from '../api-client.ts';

export async function readBoundedText(from: string, maxBytes: number, what: string): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  if (from === '-') {
    for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      size += chunk.length;
      if (size > maxBytes) break;
    }
  } else {
    let fh: Awaited<ReturnType<typeof open>>;
    try {
      fh = await open(from, 'r');
    } catch (err) {
      throw new CliError(
        `cannot read ${from}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    try {
      const buf = Buffer.alloc(maxBytes + 1);
      for (;;) {
        const { bytesRead } = await fh.read(buf, size, buf.length - size, null);
        size += bytesRead;
        if (bytesRead === 0 || size >= buf.length) break;
      }
      chunks.push(buf.subarray(0, size));
    } finally {
      await fh.close();
    }
  }
  if (size > maxBytes) throw new CliError(`${what} is larger than ${maxBytes} bytes`);
  return Buffer.concat(chunks).toString('utf8');
}
