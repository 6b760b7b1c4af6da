import { InvalidArgumentError } from 'commander';
import { NAME_PATTERN } from '../shared/identifiers.ts';
import { cliSetting } from './settings.ts';

export function portOption(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw new InvalidArgumentError('must be a port number (1–65535)');
  return n;
}

/** A database name as the API takes it (checked before any request). */
export function databaseNameArg(v: string): string {
  if (!NAME_PATTERN.test(v)) {
    throw new InvalidArgumentError('must be 1–63 characters a-z, 0-9 and _, starting with a letter');
  }
  return v;
}

/** An option parser for a whole number from `min` to `max` (`unit` names it in the message). */
export function intInRange(min: number, max: number, unit: string): (v: string) => number {
  return (v) => {
    const n = /^\d{1,9}$/.test(v) ? Number(v) : Number.NaN;
    if (!(n >= min && n <= max)) throw new InvalidArgumentError(`must be ${min}–${max} ${unit}`);
    return n;
  };
}

export function defaultDataDir(): string {
  return cliSetting('dataDir');
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
