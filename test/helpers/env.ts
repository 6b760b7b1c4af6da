/** What `npm test` (scripts/test.ts) started for this run. */
export type TestEnv = {
  dataDir: string;
  /** Test ports claimed in this run, a file each (helpers/ports.ts). */
  portsDir: string;
  adminUrl: string;
  controlUrl: string;
  controlRole: string;
  pgPort: number;
  poolerPort: number;
  poolerDir: string;
  poolerAdminPassword: string;
  template: string;
  /** The PostgreSQL binaries' directory and the pgbouncer binary the run's cluster uses. */
  pgBin: string;
  pgbouncerBin: string;
};

export function testEnv(): TestEnv {
  const raw = process.env.BULWARK_TEST_ENV;
  if (!raw) throw new Error('run tests with `npm test` (it starts the PostgreSQL cluster the tests use)');
  return JSON.parse(raw) as TestEnv;
}
