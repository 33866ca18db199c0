// What one key may do: the limits a key is minted with (or the gateway's defaults), and their
// validation. The vocabulary of the GitHub scope and of server-tool classes lives here too, so that
// the keys, the metering and the GitHub relay all read one definition of what a key was given.
import { ValidationError } from '../util/validation.ts';

/** Per-key limits. Every field is optional; `mint` options override the gateway's defaults. */
export interface KeyLimits {
  /** USD this key may spend over its life. */
  budgetUsd?: number;
  /** Requests per minute. */
  rpm?: number;
  /** Tokens (input, output and cache) per minute. */
  tpm?: number;
  /** Requests in flight at once. */
  maxConcurrent?: number;
  /** Glob patterns (`*`, `?`) of the models this key may call. Default: any. */
  models?: string[];
  /** Largest request body, in bytes. */
  maxBodyBytes?: number;
  /** Git and GitHub API access through the socket (`{ read, push, api }`). Default: none. */
  github?: GitHubScope;
  /**
   * Refused requests (any status the gateway answers itself) per minute; past it, the key's
   * requests are answered 429 at once, before their body is read, and the connection closed.
   * Default 120 (src/metering/refusals.ts).
   */
  maxRefusalsPerMinute?: number;
  /** Server-side tools (run by the provider) requests may declare. Default: `['web_search']`. */
  serverTools?: ServerToolClass[];
  /**
   * Hosts the key may reach through its socket's forward proxy (docs/egress.md): `host[:port]`,
   * preset names (`npm`, `pypi`, ...) or rules. Default: its group's list, else none.
   */
  egress?: EgressEntry[];
  /**
   * Configured services (docs/services.md) the key may use at `/svc/NAME/`, besides those given to
   * its whole group. Default: its group's only.
   */
  services?: string[];
  /** Tunnels and plain HTTP requests open at once through the proxy. Default 32. */
  egressMaxTunnels?: number;
  /** Bytes (both ways) the key may move through the proxy over its life. Default: unlimited. */
  egressBudgetBytes?: number;
}

/** An egress rule (src/egress/rules.ts compiles and matches them). */
export interface EgressRule {
  /** `registry.npmjs.org`, `*.example.com` (its subdomains), an IP literal, or `*`. */
  host: string;
  /** Default 80 and 443; empty for any port. */
  ports?: number[];
  /** Plain HTTP only: the methods allowed. A rule with methods or paths never allows a tunnel. */
  methods?: string[];
  /** Plain HTTP only: path prefixes allowed (`/simple/`). */
  paths?: string[];
  /** Non-public addresses or CIDRs (`10.0.0.0/8`) this rule may reach; any other non-public one is refused. */
  addresses?: string[];
}

/** `"host"`, `"host:443"`, `"host:*"`, `"[::1]:8080"`, a preset's name, or a rule. */
export type EgressEntry = string | EgressRule;

/** A key's GitHub scope (`mint({ github: ... })`). Absent: no GitHub access at all. */
export interface GitHubScope {
  /** `owner/name` globs the key may clone and fetch (and read through the API). */
  read?: string[];
  /** `owner/name` globs the key may push to (and write through the API). Implies read. */
  push?: string[];
  /** Whether the key may call the REST API at all. Default false. */
  api?: boolean;
}

/** The classes of server tool a policy names. */
const SERVER_TOOL_CLASSES = ['web_search', 'web_fetch', 'mcp', 'code_execution', 'file_search', 'image_generation', 'advisor'] as const;
export type ServerToolClass = (typeof SERVER_TOOL_CLASSES)[number];

/** The limits, checked; throws a ValidationError naming the first field that is wrong. */
export function validateLimits(limits: KeyLimits): KeyLimits {
  for (const name of ['budgetUsd', 'rpm', 'tpm', 'maxConcurrent', 'maxBodyBytes', 'maxRefusalsPerMinute', 'egressMaxTunnels', 'egressBudgetBytes'] as const) {
    const value = limits[name];
    if (value !== undefined && !(typeof value === 'number' && Number.isFinite(value) && value >= 0)) {
      throw new ValidationError(`limit \`${name}\``, 'must be a non-negative number');
    }
  }
  if (limits.models !== undefined && !(Array.isArray(limits.models) && limits.models.every((m) => typeof m === 'string'))) {
    throw new ValidationError('limit `models`', 'must be an array of glob patterns');
  }
  if (limits.services !== undefined && !(Array.isArray(limits.services) && limits.services.every((name) => typeof name === 'string'))) {
    throw new ValidationError('limit `services`', 'must be an array of service names');
  }
  if (limits.github !== undefined) validateGitHubScope(limits.github);
  if (limits.serverTools !== undefined) validateServerTools(limits.serverTools, 'limit `serverTools`');
  // Each entry is checked against the presets by the gateway (egress/policy.ts).
  if (limits.egress !== undefined && !Array.isArray(limits.egress))
    throw new ValidationError('limit `egress`', 'must be an array of hosts, preset names or rules');
  return limits;
}

function validateGitHubScope(value: unknown): GitHubScope {
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new ValidationError('limit `github`', 'must be an object { read?, push?, api? }');
  const scope = value as Record<string, unknown>;
  for (const field of Object.keys(scope)) {
    if (!['read', 'push', 'api'].includes(field)) throw new ValidationError(`limit \`github.${field}\``, 'is unknown (expected read, push, api)');
  }
  for (const field of ['read', 'push'] as const) {
    const globs = scope[field];
    if (globs === undefined) continue;
    if (!Array.isArray(globs) || !globs.every((g) => typeof g === 'string' && /^[^/\s]+\/[^/\s]+$/.test(g))) {
      throw new ValidationError(`limit \`github.${field}\``, 'must be an array of owner/name globs, e.g. ["acme/*"]');
    }
  }
  if (scope.api !== undefined && typeof scope.api !== 'boolean') throw new ValidationError('limit `github.api`', 'must be true or false');
  return value as GitHubScope;
}

export function validateServerTools(value: unknown, field: string): asserts value is ServerToolClass[] {
  if (!Array.isArray(value) || !value.every((item) => (SERVER_TOOL_CLASSES as readonly unknown[]).includes(item))) {
    throw new ValidationError(field, `must be an array of server tool classes (${SERVER_TOOL_CLASSES.join(', ')}), e.g. ["web_search"]`);
  }
}
