/**
 * How a `bulwark request` command ends: its body returns the exit code the request's status
 * means (request-view.ts), and errors are recoded so that 2 and 3 keep their meaning there — a
 * usage error or a 400 exits 1 (not 2); a refusal because the request is still pending exits 2,
 * because it is rejected, cancelled, expired or failed exits 3.
 */
import { ApiError, CliError, EXIT, runCommand } from '../api-client.ts';
import { REQUEST_EXIT, type Status } from './request-view.ts';

class RecodedApiError extends ApiError {
  override readonly exitCode: number;
  constructor(e: ApiError, exitCode: number) {
    super(e.status, e.code, e.message, { requestId: e.requestId, details: e.details, context: e.context });
    this.exitCode = exitCode;
  }
}

const PENDING: readonly Status[] = ['pending', 'executing'];
const CLOSED: readonly Status[] = ['rejected', 'cancelled', 'expired', 'failed'];

function recode(err: unknown): unknown {
  if (err instanceof ApiError) {
    const status = (err.details as { status?: unknown } | undefined)?.status;
    if (err.code === 'invalid_state' && PENDING.includes(status as Status))
      return new RecodedApiError(err, REQUEST_EXIT.pending);
    if (err.code === 'invalid_state' && CLOSED.includes(status as Status))
      return new RecodedApiError(err, REQUEST_EXIT.closed);
    if (err.exitCode === EXIT.usage || err.exitCode === REQUEST_EXIT.closed)
      return new RecodedApiError(err, EXIT.error);
    return err;
  }
  if (err instanceof CliError && (err.exitCode === EXIT.usage || err.exitCode === REQUEST_EXIT.closed))
    return new CliError(err.message, EXIT.error, err.context);
  return err;
}

export function runRequestCommand(json: boolean | undefined, fn: () => Promise<number>): Promise<never> {
  return runCommand(json, async () => {
    let code: number;
    try {
      code = await fn();
    } catch (err) {
      throw recode(err);
    }
    if (code !== REQUEST_EXIT.done) process.exit(code);
  });
}
