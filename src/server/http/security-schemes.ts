/**
 * The credentials the API document names (`security` of each operation refers to these):
 * - `apiKey`: an account's API key (`bwk_…`), every /v1 route of an account;
 * - `agentToken`: a node agent's token (`bwa_…`), the agent API under /v1/agent (its enrollment
 *   excepted: the one-time token is in the body);
 * - `userSession`: a signed-in user's access token (a JWT of 15 minutes);
 * - `operatorToken`: the server's operator token, platform-wide operator routes (node drift).
 */
export const SECURITY_SCHEMES = {
  apiKey: { type: 'http', scheme: 'bearer', bearerFormat: 'bwk_…', description: 'An API key of an account' },
  agentToken: {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'bwa_…',
    description: "A node agent's token (from POST /v1/agent/enroll); only agents use these routes",
  },
  userSession: {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description:
      "A signed-in user's access token (from POST /v1/auth/login or /v1/auth/refresh); header Bulwark-Account names the account acted in",
  },
  operatorToken: {
    type: 'http',
    scheme: 'bearer',
    description: "The server's operator token (BULWARK_OPERATOR_TOKEN): platform-wide operator routes",
  },
} as const;
