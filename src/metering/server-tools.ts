// Server-side tools: the tools a request may ask the provider itself to run (search the web, fetch a
// URL, call an MCP server, run code). A container with no network could use them to reach any URL
// through the provider, and some are billed per use, so each key and group allows a named set of
// them (default: web search only), and every declared tool is classified before the call goes out.
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

/** A server tool a request declares, with the name the refusal quotes. */
export interface DeclaredServerTool {
  class: ServerToolClass;
  /** As the client wrote it: a tool type, or the top-level field (`mcp_servers`, `web_search_options`). */
  declaredAs: string;
  /** `max_uses`, when the declaration caps its uses. */
  maxUses?: number;
}

/** The server tools `fields` declares; throws `tool_not_allowed` for a tool type it cannot classify. */
export function declaredServerTools(endpoint: Endpoint, fields: Pick<RequestFields, 'tools' | 'mcpServers' | 'webSearchOptions'>): DeclaredServerTool[] {
  const declared: DeclaredServerTool[] = [];
  for (const tool of fields.tools) {
    const kind = classifyTool(endpoint, tool);
    if (kind.kind === 'unknown') {
      throw new GatewayError(
        'tool_not_allowed',
        `tool type ${JSON.stringify(tool.type ?? null)} is not one the gateway knows, so it is refused (it may run on the provider's side)`,
      );
    }
    if (kind.kind === 'server') declared.push({ class: kind.class, declaredAs: tool.type!, maxUses: tool.maxUses });
  }
  if (fields.mcpServers > 0) declared.push({ class: 'mcp', declaredAs: 'mcp_servers' });
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
 */
export function checkServerTools(
  endpoint: Endpoint,
  fields: Pick<RequestFields, 'tools' | 'mcpServers' | 'webSearchOptions'>,
  policy: ServerToolPolicy,
): DeclaredServerTool[] {
  // count_tokens only counts the declarations; nothing runs.
  if (!RUNS_TOOLS.has(endpoint)) return [];
  const declared = declaredServerTools(endpoint, fields);
  for (const tool of declared) {
    if (!policy.key.includes(tool.class)) {
      throw new GatewayError(
        'tool_not_allowed',
        `this key may not use the provider's ${tool.class} tool (${tool.declaredAs}); allowed server tools: ${list(policy.key)} (setting: serverTools / server_tools)`,
      );
    }
    if (policy.group && !policy.group.allowed.includes(tool.class)) {
      throw new GatewayError(
        'tool_not_allowed',
        `group ${policy.group.name} may not use the provider's ${tool.class} tool (${tool.declaredAs}); allowed server tools: ${list(policy.group.allowed)} (setting: groupServerTools / group_server_tools)`,
      );
    }
  }
  return declared;
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
