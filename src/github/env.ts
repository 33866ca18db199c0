// What git and GitHub API clients in a container need to go through the shim: no file, no token.
// Git reads `url.<shim>/git/<host>/.insteadOf` from GIT_CONFIG_COUNT / GIT_CONFIG_KEY_n /
// GIT_CONFIG_VALUE_n (git >= 2.31), so `https://github.com/OWNER/REPO` (and the SSH spellings)
// go to the gateway; tools that take an API base URL read GITHUB_API_URL. In TCP mode git sends
// the key's token as an extra header, and API clients as their GitHub token (`GITHUB_TOKEN`).
import { addressOf, type ContainerAddress } from '../keys/client-env.ts';
import { API_PREFIX, GIT_PREFIX } from './relay.ts';

export function githubEnv(at: number | ContainerAddress, host = 'github.com'): Record<string, string> {
  const { base, credential, token } = addressOf(at);
  const rewrite = `url.${base}${GIT_PREFIX}${host}/.insteadOf`;
  const entries: [string, string][] = [
    [rewrite, `https://${host}/`],
    [rewrite, `git@${host}:`],
    [rewrite, `ssh://git@${host}/`],
    ...(token ? ([[`http.${base}/.extraHeader`, `Authorization: Bearer ${credential}`]] as [string, string][]) : []),
  ];
  const env: Record<string, string> = { GIT_CONFIG_COUNT: String(entries.length) };
  entries.forEach(([key, value], i) => {
    env[`GIT_CONFIG_KEY_${i}`] = key;
    env[`GIT_CONFIG_VALUE_${i}`] = value;
  });
  return {
    ...env,
    // A refusal is final: git must not fall back to asking for a user name and password.
    GIT_TERMINAL_PROMPT: '0',
    // GitHub Actions' name for the API base; Octokit takes it as `baseUrl`.
    GITHUB_API_URL: `${base}${API_PREFIX}`,
    ...(token ? { GITHUB_TOKEN: credential } : {}),
  };
}
