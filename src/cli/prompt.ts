/**
 * Secrets typed by a person: read from the terminal without echo, or (not a terminal: scripts and
 * tests) one per line from stdin. Never echoed, never logged.
 */
import { readFileSync } from 'node:fs';
import { CliError, EXIT } from './api-client.ts';

/** A line typed on the terminal with echo off (Ctrl-C cancels, backspace edits). */
function promptHidden(question: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(question);
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    let buf = '';
    const cleanup = () => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
    };
    function onData(chunk: string) {
      for (const c of chunk) {
        if (c === '\r' || c === '\n' || c === '\u0004') {
          cleanup();
          resolve(buf);
          return;
        }
        if (c === '\u0003') {
          cleanup();
          reject(new CliError('cancelled', EXIT.error));
          return;
        }
        if (c === '\u007f' || c === '\b') buf = buf.slice(0, -1);
        else if (buf.length < 4096) buf += c;
      }
    }
    stdin.on('data', onData);
  });
}

/**
 * Asks for secrets in order. On a terminal each question is a hidden prompt; otherwise stdin is
 * read once and each call takes its next line (a missing line is a usage error).
 */
export function createSecretReader(): { next(question: string, what: string): Promise<string> } {
  const tty = Boolean(process.stdin.isTTY);
  let lines: string[] | null = null;
  return {
    async next(question, what) {
      if (tty) return promptHidden(question);
      lines ??= readFileSync(0, 'utf8').split(/\r?\n/);
      const line = lines.shift();
      if (line === undefined || line === '')
        throw new CliError(`no ${what} on stdin (one secret per line)`, EXIT.usage);
      return line;
    },
  };
}
