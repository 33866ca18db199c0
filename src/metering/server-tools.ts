// Server-side tools: the tools a request may ask the provider itself to run (search the web, fetch a
// URL, call an MCP server, run code). A container with no network could use them to reach any URL
// through the provider, and some are billed per use, so each key and group allows a named set of
// them (default: web search only), and every declared tool is classified before the call goes out.
// A tool that fetches only from hosts the request names (an MCP server's URL, web_fetch's
// allowed_domains) may instead be allowed by the key's egress policy, as the container's own
// connections to those hosts would be.
import type { RequestFields, ToolDeclaration } from '../wire/request-fields.ts';
import type { ServerToolClass } from '../keys/limits.ts';
import { GatewayError } from '../wire/errors.ts';
import type { Endpoint } from '../wire/endpoints.ts';

/**
 * Allowed when neither the key nor the defaults say otherwise. Claude Code's WebSearch tool and
 * Codex's web_search run as the provider's server web search; nothing that fetches a URL the
 * request names (web_fetch, mcp) is allowed unless the operator says so.
 */
const DEFAULT_SERVER_TOOLS: readonly ServerToolClass[] = ['web_search'];

/** USD per use of a server tool, for those the provider bills per use (on top of tokens). */
export interface PerUsePrices {
  /** A web search (Anthropic `web_search_requests`, an OpenAI `web_search_call`). Default $0.01. */
  webSearch: number;
  /** A web fetch (Anthropic bills fetched content as tokens only). Default $0. */
  webFetch: number;
}

export const DEFAULT_PER_USE_PRICES: PerUsePrices = Object.freeze({ webSearch: 10 / 1000, webFetch: 0 });

/** Uses assumed for a server tool declared without `max_uses` when bounding a call's worst case. */
const DEFAULT_MAX_USES = 20;

/** What one declared tool is: run by the client (always allowed), a server tool, or unknown. */
export type ToolKind = { kind: 'client' } | { kind: 'server'; class: ServerToolClass } | { kind: 'unknown' };

const CLIENT = { kind: 'client' } as const;
const server = (toolClass: ServerToolClass): ToolKind => ({ kind: 'server', class: toolClass });

// Anthropic tool types are versioned (`web_search_20250305`): matched by prefix.
const ANTHROPIC_PREFIXES: readonly [string, ToolKind][] = [
  // Client-run: the model asks, the client executes and returns a tool_result.
  ['bash_', CLIENT],
  ['text_editor_', CLIENT],
  ['computer_', CLIENT],
  ['memory_', CLIENT],
  // Tool search only searches the request's own tool definitions: no reach, no per-use charge.
  ['tool_search_tool_', CLIENT],
  ['web_search_', server('web_search')],
  ['web_fetch_', server('web_fetch')],
  ['code_execution_', server('code_execution')],
  ['advisor_', server('advisor')],
];

// OpenAI tool types are exact (chat completions and Responses share the namespace).
const OPENAI_TYPES: Readonly<Record<string, ToolKind>> = {
  function: CLIENT,
  custom: CLIENT,
  local_shell: CLIENT,
  shell: CLIENT,
  apply_patch: CLIENT,
  computer_use_preview: CLIENT,
  computer: CLIENT,
  // Groups of function tools, and the search over the request's own deferred tools (Codex).
  namespace: CLIENT,
  tool_search: CLIENT,
  web_search: server('web_search'),
  web_search_preview: server('web_search'),
  web_search_preview_2025_03_11: server('web_search'),
  web_search_2025_08_26: server('web_search'),
  mcp: server('mcp'),
  code_interpreter: server('code_execution'),
  file_search: server('file_search'),
  image_generation: server('image_generation'),
};

/** Classifies one tool declaration of a request to `endpoint`. */
export function classifyTool(endpoint: Endpoint, tool: ToolDeclaration): ToolKind {
  const { type } = tool;
  if (endpoint === 'messages' || endpoint === 'count_tokens') {
    // A custom tool has no type, or `custom`.
    if (type === undefined || type === 'custom') return CLIENT;
    if (type === 'mcp_toolset') return server('mcp');
    return ANTHROPIC_PREFIXES.find(([prefix]) => type.startsWith(prefix))?.[1] ?? { kind: 'unknown' };
  }
  // Chat completions' legacy `functions` entries have no type; everything else names one.
  if (type === undefined) return endpoint === 'chat_completions' ? CLIENT : { kind: 'unknown' };
  return Object.hasOwn(OPENAI_TYPES, type) ? OPENAI_TYPES[type]! : { kind: 'unknown' };
}

/**
 * Whether the key's egress policy (its group's applied) lets a connection reach `host` on `port`. The
 * gateway's composition root builds it from src/egress; metering only asks it.
 */
export type HostAllowed = (host: string, port: number) => boolean;

/** A host and port the provider may fetch from; with `subdomains`, any name under the host too. */
interface HostPort {
  host: string;
  port: number;
  subdomains?: boolean;
}

/**
 * Where the provider fetches for a tool, as the request shows it: every host and port it may reach,
 * or why the request does not bound it (then no egress rule can allow the tool).
 */
type Reach = { hosts: readonly HostPort[] } | { unbounded: string };

/** A server tool a request declares, with the name the refusal quotes. */
export interface DeclaredServerTool {
  class: ServerToolClass;
  /** As the client wrote it: a tool type, or the top-level field (`mcp_servers`, `web_search_options`). */
  declaredAs: string;
  /** `max_uses`, when the declaration caps its uses. */
  maxUses?: number;
  /** For the tools that fetch what the request names (mcp, web_fetch): where they can fetch. */
  reach?: Reach;
}

/** The fields the check reads; without `mcpServerUrls` the connector's servers are unknown. */
export type ServerToolFields = Pick<RequestFields, 'tools' | 'mcpServers' | 'webSearchOptions'> & Partial<Pick<RequestFields, 'mcpServerUrls'>>;

/** The server tools `fields` declares; throws `tool_not_allowed` for a tool type it cannot classify. */
export function declaredServerTools(endpoint: Endpoint, fields: ServerToolFields): DeclaredServerTool[] {
  const declared: DeclaredServerTool[] = [];
  const servers = mcpServersReach(fields);
  for (const tool of fields.tools) {
    const kind = classifyTool(endpoint, tool);
    if (kind.kind === 'unknown') {
      throw new GatewayError(
        'tool_not_allowed',
        `tool type ${JSON.stringify(tool.type ?? null)} is not one the gateway knows, so it is refused (it may run on the provider's side)`,
      );
    }
    if (kind.kind === 'server')
      declared.push({ class: kind.class, declaredAs: tool.type!, maxUses: tool.maxUses, reach: toolReach(kind.class, tool, servers) });
  }
  if (fields.mcpServers > 0) declared.push({ class: 'mcp', declaredAs: 'mcp_servers', reach: servers });
  if (fields.webSearchOptions) declared.push({ class: 'web_search', declaredAs: 'web_search_options', maxUses: 1 });
  return declared;
}

const RUNS_TOOLS: ReadonlySet<Endpoint> = new Set(['messages', 'chat_completions', 'responses']);

/** Which server tools a call may declare: the key's classes, narrowed by its group's when set. */
export interface ServerToolPolicy {
  key: readonly string[];
  group?: { name: string; allowed: readonly string[] };
}

/**
 * Refuses (403 `tool_not_allowed`) a request that declares a server tool its key or group does not
 * allow, or a tool type that cannot be classified. Returns the server tools it declares.
 *
 * A tool with a bounded reach (see Reach) is allowed, whatever the server tool classes say, when
 * `egressAllows` allows every host and port of it: the predicate is the key's egress policy with its
 * group's already applied (a key's rules only narrow its group's), so the group's server tool list
 * does not narrow it again; that list still narrows the key's list for every other tool. The
 * refusal names both ways to allow a fetching tool: the server tool setting, or an egress rule.
 */
export function checkServerTools(endpoint: Endpoint, fields: ServerToolFields, policy: ServerToolPolicy, egressAllows?: HostAllowed): DeclaredServerTool[] {
  // count_tokens only counts the declarations; nothing runs.
  if (!RUNS_TOOLS.has(endpoint)) return [];
  const declared = declaredServerTools(endpoint, fields);
  for (const tool of declared) {
    const refusal = classRefusal(tool, policy);
    if (refusal !== undefined && !allowedByEgress(tool, egressAllows)) throw new GatewayError('tool_not_allowed', refusal + egressHint(tool, egressAllows));
  }
  return declared;
}

/** Why the server tool classes of the key, or of its group, do not allow `tool`; undefined when they do. */
function classRefusal(tool: DeclaredServerTool, policy: ServerToolPolicy): string | undefined {
  if (!policy.key.includes(tool.class)) {
    return `this key may not use the provider's ${tool.class} tool (${tool.declaredAs}); allowed server tools: ${list(policy.key)} (setting: serverTools / server_tools)`;
  }
  if (policy.group && !policy.group.allowed.includes(tool.class)) {
    return `group ${policy.group.name} may not use the provider's ${tool.class} tool (${tool.declaredAs}); allowed server tools: ${list(policy.group.allowed)} (setting: groupServerTools / group_server_tools)`;
  }
  return undefined;
}

function allowedByEgress(tool: DeclaredServerTool, egressAllows: HostAllowed | undefined): boolean {
  const reach = tool.reach;
  return (
    egressAllows !== undefined && reach !== undefined && 'hosts' in reach && reach.hosts.length > 0 && reach.hosts.every((to) => reachAllowed(to, egressAllows))
  );
}

/**
 * A label no rule names by chance: the subdomains of a host are allowed when a name one and two
 * labels under it is (a rule like `*.example.com` that matches one label only does not cover
 * `a.b.example.com`, which the provider would fetch, so it does not pass).
 */
const PROBE_LABEL = 'gateway-subdomain-probe';

function reachAllowed(to: HostPort, egressAllows: HostAllowed): boolean {
  if (!egressAllows(to.host, to.port)) return false;
  if (!to.subdomains) return true;
  return egressAllows(`${PROBE_LABEL}.${to.host}`, to.port) && egressAllows(`${PROBE_LABEL}.${PROBE_LABEL}.${to.host}`, to.port);
}

/** Hosts named in a refusal, at most. */
const HINT_HOSTS = 3;

/** The refusal's second way out, for a tool an egress rule could allow. */
function egressHint(tool: DeclaredServerTool, egressAllows: HostAllowed | undefined): string {
  if (!tool.reach) return '';
  if ('unbounded' in tool.reach) return `; an egress rule cannot allow it: ${tool.reach.unbounded}`;
  const missing = tool.reach.hosts.filter((to) => !egressAllows || !reachAllowed(to, egressAllows));
  const named = missing.slice(0, HINT_HOSTS).map((to) => `${to.host}:${to.port}${to.subdomains ? ' and its subdomains' : ''}`);
  const more = missing.length > HINT_HOSTS ? ` and ${missing.length - HINT_HOSTS} more` : '';
  return `; or allow it with an egress rule for ${named.join(', ')}${more}`;
}

/**
 * Where a declared tool fetches. web_fetch fetches URLs that appear in the conversation, from any host
 * unless `allowed_domains` bounds it; an entry covers its subdomains, and a path after it narrows
 * only the path (Anthropic's domain filtering rules). Entries carry no scheme and the URLs may be
 * http or https, so both ports 443 and 80 are in its reach. A URL naming another port is not
 * something the request shows; an entry is read as the host on the default ports.
 */
function toolReach(toolClass: ServerToolClass, tool: ToolDeclaration, servers: Reach): Reach | undefined {
  if (toolClass === 'web_fetch') return domainsReach(tool.allowedDomains);
  if (toolClass !== 'mcp') return undefined;
  // Anthropic's mcp_toolset names a server of `mcp_servers`; OpenAI's mcp tool carries its URL.
  if (tool.type === 'mcp_toolset') return servers;
  const to = urlHostPort(tool.serverUrl);
  return to ? { hosts: [to] } : { unbounded: 'its server_url is missing or not a plain http(s) URL' };
}

function domainsReach(domains: readonly string[] | undefined): Reach {
  if (domains === undefined || domains.length === 0) return { unbounded: 'it declares no allowed_domains the gateway could read' };
  const hosts: HostPort[] = [];
  for (const domain of domains) {
    const host = domainHost(domain);
    if (host === undefined) return { unbounded: `allowed_domains entry ${JSON.stringify(domain.slice(0, 64))} is not a plain domain` };
    hosts.push({ host, port: 443, subdomains: true }, { host, port: 80, subdomains: true });
  }
  return { hosts };
}

function mcpServersReach(fields: ServerToolFields): Reach {
  if (fields.mcpServers === 0) return { unbounded: 'the request names no mcp_servers' };
  if (fields.mcpServerUrls === undefined || fields.mcpServerUrls.length < fields.mcpServers) return { unbounded: 'its mcp_servers URLs were not read' };
  const hosts: HostPort[] = [];
  for (const url of fields.mcpServerUrls) {
    const to = urlHostPort(url);
    if (!to) return { unbounded: 'an mcp_servers entry has no plain http(s) url' };
    hosts.push(to);
  }
  return { hosts };
}

// Only URLs every parser reads alike: a lower-case scheme, then at once a host name or dotted IPv4
// address (no user info, no IPv6 literal), an optional decimal port, and the end or a `/`, `?` or
// `#`. What a lenient parser would repair or strip (`https://a.com\@b.com`, `http://0x7f.1/`, a
// space or tab) is not read, so a provider that parses otherwise cannot fetch from a host other than
// the one checked.
const PLAIN_URL = /^(https?):\/\/([A-Za-z0-9.-]+)(?::([0-9]{1,5}))?(?:[/?#]|$)/;
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const NUMERIC_LABEL = /^(?:[0-9]+|0x[0-9a-f]*)$/;
const DOTTED_QUAD = /^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$/;

function urlHostPort(url: string | undefined): HostPort | undefined {
  const match = url === undefined ? null : PLAIN_URL.exec(url);
  if (!match) return undefined;
  const host = plainHost(match[2]!.toLowerCase());
  const port = match[3] === undefined ? (match[1] === 'https' ? 443 : 80) : Number(match[3]);
  return host !== undefined && port >= 1 && port <= 65535 ? { host, port } : undefined;
}

/** The host of an `allowed_domains` entry (`example.com` or `example.com/path`); no scheme, port or wildcard host. */
function domainHost(domain: string): string | undefined {
  const slash = domain.indexOf('/');
  return plainHost((slash === -1 ? domain : domain.slice(0, slash)).toLowerCase());
}

/**
 * A lower-case host name of letters, digits and hyphens, or a dotted IPv4 address as written: a name
 * whose last label is a number is refused, as URL parsers read `2130706433` or `1.0x7f` as addresses.
 */
function plainHost(host: string): string | undefined {
  if (host.length === 0 || host.length > 253) return undefined;
  if (DOTTED_QUAD.test(host)) return host;
  const labels = host.split('.');
  if (!labels.every((label) => LABEL.test(label)) || NUMERIC_LABEL.test(labels[labels.length - 1]!)) return undefined;
  return host;
}

/** The policy for a key: its own classes (default DEFAULT_SERVER_TOOLS), and its group's when the group has a list. */
export function serverToolPolicy(
  keyClasses: readonly string[] | undefined,
  group: string,
  groupClasses: Record<string, readonly string[]> | undefined,
): ServerToolPolicy {
  const allowed = groupClasses && Object.hasOwn(groupClasses, group) ? groupClasses[group] : undefined;
  return { key: keyClasses ?? DEFAULT_SERVER_TOOLS, group: allowed ? { name: group, allowed } : undefined };
}

const list = (classes: readonly string[]): string => (classes.length === 0 ? 'none' : classes.join(', '));

/** Uses of the per-use priced server tools. */
export interface ToolUses {
  webSearch: number;
  webFetch: number;
}

/** The most uses the declared tools can make: each at its `max_uses` (DEFAULT_MAX_USES when absent). */
export function worstCaseUses(declared: readonly DeclaredServerTool[]): ToolUses {
  const uses: ToolUses = { webSearch: 0, webFetch: 0 };
  for (const tool of declared) {
    const most = Math.min(tool.maxUses ?? DEFAULT_MAX_USES, 10_000);
    if (tool.class === 'web_search') uses.webSearch += most;
    else if (tool.class === 'web_fetch') uses.webFetch += most;
  }
  return uses;
}

/** USD of `uses` at per-use `prices`. */
export function toolUsesCostUsd(uses: ToolUses | undefined, prices: PerUsePrices): number {
  return uses ? uses.webSearch * prices.webSearch + uses.webFetch * prices.webFetch : 0;
}

/** The most the declared server tools can add to a call's cost in per-use charges. */
export function worstCaseToolCostUsd(declared: readonly DeclaredServerTool[], prices: PerUsePrices = DEFAULT_PER_USE_PRICES): number {
  return toolUsesCostUsd(worstCaseUses(declared), prices);
}
