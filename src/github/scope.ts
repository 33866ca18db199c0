// What one key may do on GitHub, and the decision for one request: which repository a git or REST
// API path names, whether it reads or writes, and whether the key's scope allows that. Pure
// functions of the path: nothing here talks to the network.
import type { GitHubScope } from '../keys/limits.ts';
import { globToRegExp } from '../util/glob.ts';

type GitService = 'git-upload-pack' | 'git-receive-pack';

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

function matches(globs: string[] | undefined, repo: string): boolean {
  // GitHub names are case-insensitive: so is the check.
  return (globs ?? []).some((glob) => globToRegExp(glob.toLowerCase()).test(repo.toLowerCase()));
}

/** Whether `scope` allows reading (`write` false) or writing `repo` (`owner/name`). */
function allows(scope: GitHubScope | undefined, repo: string, write: boolean): boolean {
  if (!scope) return false;
  if (matches(scope.push, repo)) return true;
  return !write && matches(scope.read, repo);
}

/**
 * The segments of a path as the checks read them: percent-decoded, in their original case (callers
 * compare lower-cased). Anything that could be read one way here and another way upstream is a 404:
 * undecodable escapes, empty segments (`//`), `.` and `..` (even encoded), and decoded separators,
 * backslashes, `;` parameters, control bytes or a second layer of escapes (`%252f`). One trailing
 * slash is allowed and is no segment.
 */
function segmentsOf(path: string): string[] {
  if (path !== '' && !path.startsWith('/')) throw new GitHubRefusal(404, 'path is not in canonical form');
  const raw = path.split('/').slice(1);
  if (raw.at(-1) === '') raw.pop();
  return raw.map((segment) => {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      throw new GitHubRefusal(404, 'path is not in canonical form (bad percent-encoding)');
    }
    if (decoded === '' || decoded === '.' || decoded === '..' || /[/\\;#\x00-\x1f\x7f]|%[0-9a-f]{2}/i.test(decoded)) {
      throw new GitHubRefusal(404, 'path is not in canonical form');
    }
    return decoded;
  });
}

function repoOf(owner: string, name: string): string {
  if (!OWNER.test(owner) || !REPO.test(name) || name === '.git' || /^\.+$/.test(name)) throw new GitHubRefusal(404, 'not a repository path (OWNER/REPO)');
  return `${owner}/${name.endsWith('.git') ? name.slice(0, -4) : name}`;
}

/**
 * Git smart HTTP, `rest` being the path after `/git/<host>`: `/OWNER/REPO(.git)/info/refs?service=S`
 * (GET) and `/OWNER/REPO(.git)/S` (POST), S one of git-upload-pack, git-receive-pack. Nothing else
 * (dumb HTTP, LFS) is relayed. The upstream path is rebuilt from the checked parts.
 */
export function classifyGit(method: string, rest: string, query: string): GitHubAccess {
  const parts = segmentsOf(rest);
  if (parts.length < 3) throw new GitHubRefusal(404, 'not a git smart HTTP path (/OWNER/REPO.git/...)');
  const repo = repoOf(parts[0]!, parts[1]!);
  const tail = parts.slice(2).join('/').toLowerCase();
  const base = `/${parts[0]}/${parts[1]}`;
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
 * Read-only endpoints outside `/repos/` that name no repository and that clients use: the API root,
 * the token's own identity (`/user`, which Octokit and scripts call to learn who they are), public
 * reference data (rate limit, meta, licenses, gitignore templates, codes of conduct, emojis, ...) and a
 * user's public profile. `*` is one segment. Everything else outside `/repos/` is refused.
 */
const PUBLIC_READS: readonly string[] = [
  '',
  'user',
  'users/*',
  'rate_limit',
  'meta',
  'versions',
  'octocat',
  'zen',
  'emojis',
  'licenses',
  'licenses/*',
  'gitignore/templates',
  'gitignore/templates/*',
  'codes_of_conduct',
  'codes_of_conduct/*',
];

function isPublicRead(lower: string[]): boolean {
  return PUBLIC_READS.some((pattern) => {
    const want = pattern === '' ? [] : pattern.split('/');
    return want.length === lower.length && want.every((w, i) => (w === '*' ? /^[a-z0-9][a-z0-9._+-]{0,99}$/.test(lower[i]!) : w === lower[i]));
  });
}

/**
 * Writes a `push` scope does not cover: they administer the repository rather than work in it, and
 * most outlive the key (a deploy key, a collaborator, a webhook, a secret) or move the repository
 * out of the scope (transfer, fork, generate). Prefixes of the path after `/repos/OWNER/REPO`; `''`
 * is the repository itself (DELETE, PATCH).
 */
const ADMIN_WRITES: readonly string[] = [
  '',
  'transfer',
  'forks',
  'generate',
  'collaborators',
  'invitations',
  'keys',
  'hooks',
  'environments',
  'rulesets',
  'actions/secrets',
  'actions/variables',
  'actions/permissions',
  'actions/runners',
  'dependabot/secrets',
  'codespaces/secrets',
];

function isAdminWrite(sub: string[]): boolean {
  const joined = sub.join('/');
  if (sub[0] === 'branches' && sub.includes('protection')) return true;
  return ADMIN_WRITES.some((prefix) => (prefix === '' ? joined === '' : joined === prefix || joined.startsWith(`${prefix}/`)));
}

/** Why a path outside `/repos/` is refused, said plainly (the path cut short: it is the client's). */
function refusalFor(method: string, parts: string[], lower: string[]): string {
  switch (lower[0]) {
    case 'graphql':
    case 'api':
      return 'GraphQL is not relayed: one query can reach any repository, so it cannot be scoped';
    case 'repositories':
      return "repositories by id cannot be checked against this key's scope: use /repos/OWNER/REPO";
    case 'search':
      return 'search is not relayed: a query can reach any repository the token can (repo:OWNER/NAME), so it cannot be scoped';
  }
  const path = `/${parts.join('/')}`;
  return `${method} ${path.length > 120 ? `${path.slice(0, 120)}...` : path} is not relayed: only /repos/OWNER/REPO/... (checked against this key's scope) and a few read-only endpoints (/user, /rate_limit, /meta, ...) are`;
}

/**
 * The REST API, `rest` being the path after `/github-api`, classified on its decoded, lower-cased
 * segments; the original path goes upstream only once it has classified. An allowlist:
 * `/repos/OWNER/REPO[/...]` is checked against the key's read (GET, HEAD) or push (any other method)
 * globs, administration writes refused; a few read-only endpoints naming no repository
 * (`PUBLIC_READS`) are allowed; everything else (GraphQL, `/repositories/ID`, search, `/user/repos`,
 * `/orgs/...`, gists, notifications, ...) is a 403.
 */
export function classifyApi(method: string, rest: string, query: string): GitHubAccess {
  const parts = segmentsOf(rest);
  if (query.includes('#')) throw new GitHubRefusal(404, 'path is not in canonical form');
  const lower = parts.map((p) => p.toLowerCase());
  const upstreamPath = `${rest === '' ? '/' : rest}${query ? `?${query}` : ''}`;
  const write = !SAFE_METHODS.has(method);
  if (lower[0] === 'repos') {
    if (parts.length < 3) throw new GitHubRefusal(404, 'not a repository path (/repos/OWNER/REPO)');
    const repo = repoOf(parts[1]!, parts[2]!);
    if (write && isAdminWrite(lower.slice(3))) {
      throw new GitHubRefusal(
        403,
        `this key may not administer ${repo} (${method} on the repository, its settings, keys, hooks, collaborators or secrets is not relayed for any key)`,
        { repo },
      );
    }
    return { kind: 'api', repo, write, upstreamPath };
  }
  if (!write && isPublicRead(lower)) return { kind: 'api', write, upstreamPath };
  throw new GitHubRefusal(403, refusalFor(method, parts, lower));
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
