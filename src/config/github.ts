// The `[github]` section of the config file, and turning it into `createGateway({ github })` with
// the token read from where the section says (env var, file or command; never a literal, never argv).
import { homedir } from 'node:os';
import path from 'node:path';
import type { CredentialSource } from './credentials.ts';
import type { GitHubOptions } from '../github/relay.ts';
import type { GitHubScope } from '../keys/limits.ts';
import { checked, checkHostName, httpUrl } from '../util/validation.ts';

export interface GitHubSource {
  webUrl?: string;
  apiUrl?: string;
  host?: string;
  /** Tried in order: token_env, token_file, token_command. */
  token: CredentialSource[];
}

const FIELDS = ['host', 'web_url', 'api_url', 'token_env', 'token_file', 'token_command'];

/** Validates `[github]`; `fail(field, message)` throws the config error naming the file and field. */
export function parseGitHubSection(value: unknown, fail: (field: string, message: string) => never): GitHubSource | undefined {
  if (value === undefined) return undefined;
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Date) fail('github', 'must be a table');
  const table = value as Record<string, unknown>;
  for (const key of Object.keys(table)) {
    if (!FIELDS.includes(key)) fail(`github.${key}`, `unknown field (expected one of: ${FIELDS.join(', ')})`);
  }
  const text = (field: string): string | undefined => {
    const v = table[field];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || v.trim() === '') fail(`github.${field}`, 'must be a non-empty string');
    return v;
  };
  const url = (field: string): string | undefined => {
    const raw = text(field);
    if (raw !== undefined) checked(() => httpUrl(raw, `github.${field}`), fail);
    return raw;
  };
  const host = text('host');
  if (host !== undefined) checked(() => checkHostName(host, 'github.host'), fail);
  const token: CredentialSource[] = [];
  const env = text('token_env');
  const file = text('token_file');
  const command = text('token_command');
  if (env) token.push({ env });
  if (file) token.push({ file: path.resolve(file === '~' || file.startsWith('~/') ? path.join(homedir(), file.slice(1)) : file) });
  if (command) token.push({ command });
  if (token.length === 0) fail('github', 'names no token: set token_env, token_file or token_command (e.g. "gh auth token")');
  return { webUrl: url('web_url'), apiUrl: url('api_url'), host, token };
}

/** The source as the credential reader sees providers: the token is its `apiKey`. */
export function githubCredentialSources(source: GitHubSource) {
  return { github: { apiKey: source.token, apiKeys: [], oauthToken: [] } };
}

export function githubOptions(source: GitHubSource, token: string | undefined): GitHubOptions {
  return { webUrl: source.webUrl, apiUrl: source.apiUrl, host: source.host, token };
}

/** The `--github-read/--github-push/--github-api` flags of `keys mint` and `run` as a scope, if any. */
export function scopeFromFlags(flags: { githubRead?: string[]; githubPush?: string[]; githubApi?: boolean }): GitHubScope | undefined {
  if (!flags.githubRead && !flags.githubPush && !flags.githubApi) return undefined;
  return { read: flags.githubRead, push: flags.githubPush, api: flags.githubApi === true };
}
