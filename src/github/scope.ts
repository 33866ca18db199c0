// What one key may do on GitHub, and the decision for one request: which repository a git or REST
// API path names, whether it reads or writes, and whether the key's scope allows that. Pure
// functions of the path: nothing here talks to the network.
import { globToRegExp } from '../glob.ts';

/** A key's GitHub scope (`mint({ github: ... })`). Absent: no GitHub access at all. */
export interface GitHubScope {
  /** `owner/name` globs the key may clone and fetch (and read through the API). */
  read?: string[];
  /** `owner/name` globs the key may push to (and write through the API). Implies read. */
  push?: string[];
  /** Whether the key may call the REST API at all. Default false. */
  api?: boolean;
}

export type GitService = 'git-upload-pack' | 'git-receive-pack';

/** What a request asks for, once its path is understood. */
export type GitHubAccess =
  | { kind: 'git'; repo: string; service: GitService; upstreamPath: string }
  | { kind: 'api'; repo?: string; write: boolean; upstreamPath: string };

/** A refusal: `status` 403 (scope) or 404 (not something the gateway relays). */
export class GitHubRefusal extends Error {
  readonly status: 403 | 404;
  readonly repo: string | undefined;
  readonly service: string | undefined;
  constructor(status: 403 | 404, message: string, details: { repo?: string; service?: string } = {}) {
    super(message);
    this.status = status;
    this.repo = details.repo;
    this.service = details.service;
  }
}

// GitHub's own rules: owners are alphanumerics and hyphens, repositories add `.` and `_`.
const OWNER = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$/;
const REPO = /^[A-Za-z0-9._-]{1,100}$/;
const SERVICES: ReadonlySet<string> = new Set(['git-upload-pack', 'git-receive-pack']);
const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD']);

export function validateGitHubScope(value: unknown): GitHubScope {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new TypeError('limit `github` must be an object { read?, push?, api? }');
  const scope = value as Record<string, unknown>;
  for (const field of Object.keys(scope)) {
    if (!['read', 'push', 'api'].includes(field)) throw new TypeError(`limit \`github.${field}\` is unknown (expected read, push, api)`);
  }
  for (const field of ['read', 'push'] as const) {
    const globs = scope[field];
    if (globs === undefined) continue;
    if (!Array.isArray(globs) || !globs.every((g) => typeof g === 'string' && /^[^/\s]+\/[^/\s]+$/.test(g))) {
      throw new TypeError(`limit \`github.${field}\` must be an array of owner/name globs, e.g. ["acme/*"]`);
    }
  }
  if (scope.api !== undefined && typeof scope.api !== 'boolean') throw new TypeError('limit `github.api` must be true or false');
  return value as GitHubScope;
}

function matches(globs: string[] | undefined, repo: string): boolean {
  // GitHub names are case-insensitive: so is the check.
  return (globs ?? []).some((glob) => globToRegExp(glob.toLowerCase()).test(repo.toLowerCase()));
}

/** Whether `scope` allows reading (`write` false) or writing `repo` (`owner/name`). */
export function allows(scope: GitHubScope | undefined, repo: string, write: boolean): boolean {
  if (!scope) return false;
  if (matches(scope.push, repo)) return true;
  return !write && matches(scope.read, repo);
}

/** Refuses paths that could be read one way here and another way upstream. */
function checkPath(path: string): void {
  if (path.includes('//') || path.includes('\\') || /%(?:2e|2f|5c|00)/i.test(path) || path.split('/').some((s) => s === '.' || s === '..')) {
    throw new GitHubRefusal(404, 'path is not in canonical form');
  }
}

function repoOf(owner: string, name: string): string {
  if (!OWNER.test(owner) || !REPO.test(name) || name === '.git') throw new GitHubRefusal(404, 'not a repository path (OWNER/REPO)');
  return `${owner}/${name.endsWith('.git') ? name.slice(0, -4) : name}`;
}

/**
 * Git smart HTTP, `rest` being the path after `/git/<host>`: `/OWNER/REPO(.git)/info/refs?service=S`
 * (GET) and `/OWNER/REPO(.git)/S` (POST), S one of git-upload-pack, git-receive-pack. Nothing else
 * (dumb HTTP, LFS) is relayed.
 */
export function classifyGit(method: string, rest: string, query: string): GitHubAccess {
  checkPath(rest);
  const parts = rest.split('/');
  // ['', owner, repo, ...tail]
  if (parts.length < 4 || parts[0] !== '') throw new GitHubRefusal(404, 'not a git smart HTTP path (/OWNER/REPO.git/...)');
  const repo = repoOf(parts[1]!, parts[2]!);
  const tail = parts.slice(3).join('/');
  const base = `/${parts[1]}/${parts[2]}`;
  if (tail === 'info/refs') {
    const service = new URLSearchParams(query).get('service');
    if (method !== 'GET' && method !== 'HEAD') throw new GitHubRefusal(404, `${method} is not served on info/refs`, { repo });
    if (!service || !SERVICES.has(service) || query !== `service=${service}`) {
      throw new GitHubRefusal(404, 'only smart HTTP is served: info/refs?service=git-upload-pack or git-receive-pack', { repo });
    }
    return { kind: 'git', repo, service: service as GitService, upstreamPath: `${base}/info/refs?${query}` };
  }
  if (SERVICES.has(tail) && method === 'POST' && query === '') {
    return { kind: 'git', repo, service: tail as GitService, upstreamPath: `${base}/${tail}` };
  }
  throw new GitHubRefusal(404, 'not a git smart HTTP path (info/refs, git-upload-pack, git-receive-pack)', { repo });
}

/**
 * The REST API, `rest` being the path after `/github-api`. `/repos/OWNER/REPO[/...]` is checked
 * against the key's read (GET, HEAD) or push (any other method) globs. Repositories named any other
 * way (`/repositories/ID`) and GraphQL (which can touch any repository in one query) are refused;
 * the rest is allowed as far as the host's token allows.
 */
export function classifyApi(method: string, rest: string, query: string): GitHubAccess {
  checkPath(rest);
  const upstreamPath = `${rest === '' ? '/' : rest}${query ? `?${query}` : ''}`;
  const write = !SAFE_METHODS.has(method);
  const parts = rest.split('/');
  if (parts[1] === 'repos' && parts.length >= 4 && parts[3] !== '') {
    return { kind: 'api', repo: repoOf(parts[2]!, parts[3]!), write, upstreamPath };
  }
  if (parts[1] === 'repos' && parts.length >= 3) throw new GitHubRefusal(404, 'not a repository path (/repos/OWNER/REPO)');
  if (parts[1] === 'repositories') throw new GitHubRefusal(403, 'repositories by id cannot be checked against this key\'s scope: use /repos/OWNER/REPO');
  if (parts[1] === 'graphql' || parts[1] === 'api') throw new GitHubRefusal(403, 'GraphQL is not relayed: one query can reach any repository, so it cannot be scoped');
  return { kind: 'api', write, upstreamPath };
}

/** Throws a 403 unless `scope` allows `access`. */
export function authorize(scope: GitHubScope | undefined, access: GitHubAccess): void {
  if (!scope) throw new GitHubRefusal(403, 'this key has no GitHub access', details(access));
  if (access.kind === 'git') {
    const write = access.service === 'git-receive-pack';
    if (!allows(scope, access.repo, write)) {
      throw new GitHubRefusal(403, `this key may not ${write ? 'push to' : 'read'} ${access.repo}`, details(access));
    }
    return;
  }
  if (!scope.api) throw new GitHubRefusal(403, 'this key may not call the GitHub API', details(access));
  if (access.repo !== undefined && !allows(scope, access.repo, access.write)) {
    throw new GitHubRefusal(403, `this key may not ${access.write ? 'write to' : 'read'} ${access.repo} through the API`, details(access));
  }
}

function details(access: GitHubAccess): { repo?: string; service?: string } {
  return { repo: access.repo, service: access.kind === 'git' ? access.service : undefined };
}
