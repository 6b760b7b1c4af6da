/**
 * How many explorer requests one server process runs at once: bounded per process (each result may
 * hold up to 10 MB while it passes), per account (a tenant with many databases gets a bounded share)
 * and per database (its explorer pool on the node has 2 connections). A refused request is told why.
 */
export type Admission = { release: () => void } | { refused: string };

export function createExplorerAdmission(caps: {
  perDatabase: number;
  perAccount: number;
  perProcess: number;
}) {
  const inFlight = new Map<string, number>();
  let inProcess = 0;
  return (r: { databaseId: string; accountId: string }): Admission => {
    const keys = [`database:${r.databaseId}`, `account:${r.accountId}`];
    if (inProcess >= caps.perProcess) return { refused: 'The server is running too many explorer queries' };
    if ((inFlight.get(keys[0] as string) ?? 0) >= caps.perDatabase)
      return { refused: 'Too many explorer queries are running on this database' };
    if ((inFlight.get(keys[1] as string) ?? 0) >= caps.perAccount)
      return { refused: 'Too many explorer queries are running for this account' };
    inProcess++;
    for (const k of keys) inFlight.set(k, (inFlight.get(k) ?? 0) + 1);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        inProcess--;
        for (const k of keys) {
          const n = (inFlight.get(k) ?? 1) - 1;
          if (n > 0) inFlight.set(k, n);
          else inFlight.delete(k);
        }
      },
    };
  };
}
