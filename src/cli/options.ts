import { InvalidArgumentError } from 'commander';

export function portOption(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw new InvalidArgumentError('must be a port number (1–65535)');
  return n;
}

export function defaultDataDir(): string {
  return process.env.BULWARK_DATA_DIR || '.bulwark';
}

/** Prints config problems, one per line, and exits 2. */
export function exitWithConfigErrors(what: string, errors: string[]): never {
  process.stderr.write(`${what}: invalid configuration\n${errors.map((e) => `  - ${e}`).join('\n')}\n`);
  process.exit(2);
}

/**
 * Graceful shutdown on SIGINT/SIGTERM (a second signal forces exit), and when the parent
 * that started us over IPC goes away, so no process outlives its supervisor.
 */
export function onShutdown(stop: () => Promise<void>): void {
  let count = 0;
  const handler = () => {
    count += 1;
    if (count > 1) process.exit(130);
    stop()
      .then(() => process.exit(0))
      .catch((err: Error) => {
        process.stderr.write(`shutdown failed: ${err.message}\n`);
        process.exit(1);
      });
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  if (process.send) process.on('disconnect', handler);
}
