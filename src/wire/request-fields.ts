// The few fields of a request body routing and metering need, read once as the body arrives, with
// every client-supplied value bounded: a refusal (400) names the field that is wrong.
import { GatewayError } from './errors.ts';
import { JsonScanner, type Scalar, type ScanPlan, type ScanResult } from './json-scan.ts';

/** A tool the request declares (`tools[]`): its type tells a client-run function from a server tool. */
export interface ToolDeclaration {
  /** `type` as sent; absent for Anthropic custom tools. Bounded (see MAX_FIELD_CHARS). */
  type?: string;
  name?: string;
  /** Anthropic server tools' `max_uses`. */
  maxUses?: number;
  /** OpenAI `mcp` tools' `server_url`: only a whole one (at most MAX_URL_CHARS), never a prefix. */
  serverUrl?: string;
  /**
   * Anthropic web tools' `allowed_domains`, when it is a list of strings read whole (each at most
   * MAX_DOMAIN_CHARS, at most MAX_LISTED_DOMAINS in all the request's tools); undefined otherwise.
   */
  allowedDomains?: string[];
}

/** What the gateway learns from a request body. Unknown or missing fields stay undefined. */
export interface RequestFields {
  /** At most MAX_MODEL_CHARS characters (a longer one is refused with 400). */
  model?: string;
  stream: boolean;
  /** The output limit the client asked for: a positive integer (anything else is refused with 400). */
  maxOutputTokens?: number;
  /** Which top-level field named it (`max_tokens`, `max_completion_tokens`, `max_output_tokens`). */
  outputLimitField?: OutputLimitField;
  /** Completions asked for (chat `n`, 1 to 128): each is generated, and billed, on its own. */
  choices: number;
  /** OpenAI `service_tier` (`priority` is billed higher). */
  serviceTier?: string;
  /** OpenAI Responses `background: true`: run detached, answered later by id. */
  background: boolean;
  /** Anthropic `thinking.budget_tokens`, when thinking is enabled with a budget. */
  thinkingBudgetTokens?: number;
  /** `tools[]`, in order. */
  tools: ToolDeclaration[];
  /** Anthropic MCP connector (`mcp_servers`): how many servers the request names. */
  mcpServers: number;
  /**
   * Each `mcp_servers` entry's `url`, in order: undefined for an entry that is not `type: 'url'` with
   * a string `url` of at most MAX_URL_CHARS.
   */
  mcpServerUrls: (string | undefined)[];
  /** Chat completions `web_search_options` is present (search models fetch the web for it). */
  webSearchOptions: boolean;
  /** `stream_options` as sent (undefined when absent). */
  streamOptions?: unknown;
  /**
   * Bytes that can become input tokens: string contents as decoded, plus structure, without the
   * whitespace between tokens (padding a body with it must not inflate a reservation).
   */
  inputBytes: number;
}

export type OutputLimitField = 'max_tokens' | 'max_completion_tokens' | 'max_output_tokens';

/** Model names longer than this are refused: real ones are under 100 characters. */
const MAX_MODEL_CHARS = 256;
/** Longest tool `type`/`name` kept (longer ones are cut: they only need to be recognised). */
const MAX_FIELD_CHARS = 128;
/** Most completions one chat request may ask for (OpenAI's own limit). */
const MAX_CHOICES = 128;
/** Most `tools[]` (and `mcp_servers[]`) entries one request may declare (Claude Code sends a few dozen). */
const MAX_TOOLS = 1024;
/** Longest URL kept (a longer one is not read at all: its host could lie past any prefix). */
const MAX_URL_CHARS = 2048;
/** Longest `allowed_domains` entry kept (a host name is at most 253, then a path prefix). */
const MAX_DOMAIN_CHARS = 512;
/** Most `allowed_domains` entries kept over all the tools of a request. */
const MAX_LISTED_DOMAINS = 1024;
/** Longest `stream_options` kept (real ones are a few flags). */
const MAX_STREAM_OPTIONS_BYTES = 4096;
const OUTPUT_LIMIT_FIELDS: readonly OutputLimitField[] = ['max_tokens', 'max_completion_tokens', 'max_output_tokens'];

const PLAN: ScanPlan = {
  fields: new Set([
    'model',
    'max_tokens',
    'max_completion_tokens',
    'max_output_tokens',
    'n',
    'stream',
    'stream_options',
    'tools',
    'mcp_servers',
    'background',
    'service_tier',
    'thinking',
    'web_search_options',
  ]),
  objects: new Map([['thinking', new Set(['budget_tokens'])]]),
  arrays: new Map([
    ['tools', new Set(['type', 'name', 'max_uses', 'server_url', 'allowed_domains'])],
    ['mcp_servers', new Set(['type', 'url'])],
  ]),
  maxElements: MAX_TOOLS,
  lists: new Map([['tools', new Set(['allowed_domains'])]]),
  maxListItems: MAX_LISTED_DOMAINS,
  listItemUnits: MAX_DOMAIN_CHARS,
  raw: new Map([['stream_options', MAX_STREAM_OPTIONS_BYTES]]),
};

/**
 * Reads the fields of a body fed chunk by chunk (as it arrives: see `readBody`). `push` throws a 400
 * at the first byte that cannot be JSON; `finish` checks the fields once the body is whole.
 */
export class RequestFieldsReader {
  private readonly scanner = new JsonScanner(PLAN);

  push(chunk: Buffer): void {
    this.scanner.push(chunk);
  }

  finish(): RequestFields {
    return requestFields(this.scanner.finish());
  }
}

/** The fields of a whole body (a request already read). */
export function parseRequestFields(body: Buffer): RequestFields {
  const reader = new RequestFieldsReader();
  reader.push(body);
  return reader.finish();
}

function requestFields(scan: ScanResult): RequestFields {
  if (!scan.isObject) throw new GatewayError('invalid_request', 'request body must be a JSON object');
  if (scan.duplicate !== undefined) {
    throw new GatewayError('invalid_request', `\`${scan.duplicate}\` appears more than once in the request body`);
  }
  const field = (name: string) => scalarValue(scan.fields.get(name));
  const model = scan.fields.get('model');
  if (model !== undefined && model.kind !== 'string') throw new GatewayError('invalid_request', '`model` must be a string');
  if (model !== undefined && model.units! > MAX_MODEL_CHARS) {
    throw new GatewayError('invalid_request', `\`model\` is longer than ${MAX_MODEL_CHARS} characters`);
  }
  const outputLimitField = OUTPUT_LIMIT_FIELDS.find((name) => field(name) !== undefined && field(name) !== null);
  const maxOutputTokens = outputLimitField === undefined ? undefined : positiveInteger(field(outputLimitField), outputLimitField);
  const n = field('n');
  const choices = n === undefined || n === null ? 1 : positiveInteger(n, 'n');
  if (choices > MAX_CHOICES) throw new GatewayError('invalid_request', `\`n\` may be at most ${MAX_CHOICES}`);
  for (const [name, array] of scan.arrays) {
    if (array.count > MAX_TOOLS) throw new GatewayError('invalid_request', `\`${name}\` may hold at most ${MAX_TOOLS} entries`);
    if (array.duplicate !== undefined) {
      throw new GatewayError('invalid_request', `\`${array.duplicate}\` appears more than once in a \`${name}\` entry`);
    }
  }
  const tools = scan.arrays.get('tools');
  const mcpServers = scan.arrays.get('mcp_servers');
  const streamOptions = scan.raw.get('stream_options');
  if (streamOptions === null) {
    throw new GatewayError('invalid_request', `\`stream_options\` is longer than ${MAX_STREAM_OPTIONS_BYTES} bytes`);
  }
  const budget = scalarValue(scan.objects.get('thinking')?.get('budget_tokens'));
  const serviceTier = field('service_tier');
  return {
    model: model?.text,
    stream: field('stream') === true,
    maxOutputTokens,
    outputLimitField,
    choices,
    serviceTier: typeof serviceTier === 'string' ? serviceTier.slice(0, MAX_FIELD_CHARS) : undefined,
    background: field('background') === true,
    thinkingBudgetTokens: typeof budget === 'number' && Number.isInteger(budget) && budget > 0 ? budget : undefined,
    tools: tools ? tools.elements.map(toolDeclaration) : [],
    mcpServers: mcpServers?.count ?? 0,
    mcpServerUrls: mcpServers ? mcpServers.elements.map(mcpServerUrl) : [],
    webSearchOptions: field('web_search_options') !== undefined && field('web_search_options') !== null,
    streamOptions: streamOptions === undefined ? undefined : JSON.parse(streamOptions),
    inputBytes: scan.inputBytes,
  };
}

/** A captured value as JSON.parse would give it (containers as empty stand-ins: only their kind matters). */
function scalarValue(scalar: Scalar | undefined): unknown {
  switch (scalar?.kind) {
    case undefined:
      return undefined;
    case 'string':
      return scalar.text;
    case 'number':
      // A number too long to keep is refused wherever a number is needed.
      return scalar.text === '' ? Number.NaN : Number(scalar.text);
    case 'true':
      return true;
    case 'false':
      return false;
    case 'null':
      return null;
    case 'object':
      return {};
    case 'array':
      return [];
  }
}

function positiveInteger(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 2 ** 31 - 1) {
    throw new GatewayError('invalid_request', `\`${field}\` must be a positive integer`);
  }
  return value;
}

function toolDeclaration(tool: Map<string, Scalar>): ToolDeclaration {
  const type = scalarValue(tool.get('type'));
  const name = scalarValue(tool.get('name'));
  const maxUses = scalarValue(tool.get('max_uses'));
  return {
    type: typeof type === 'string' ? type.slice(0, MAX_FIELD_CHARS) : undefined,
    name: typeof name === 'string' ? name.slice(0, MAX_FIELD_CHARS) : undefined,
    maxUses: typeof maxUses === 'number' && Number.isInteger(maxUses) && maxUses > 0 ? maxUses : undefined,
    serverUrl: wholeString(tool.get('server_url'), MAX_URL_CHARS),
    allowedDomains: domainList(tool.get('allowed_domains')),
  };
}

function mcpServerUrl(server: Map<string, Scalar>): string | undefined {
  return scalarValue(server.get('type')) === 'url' ? wholeString(server.get('url'), MAX_URL_CHARS) : undefined;
}

/** A string value of at most `max` characters, as sent; undefined for anything else. */
function wholeString(scalar: Scalar | undefined, max: number): string | undefined {
  return scalar?.kind === 'string' && scalar.units! <= max ? scalar.text : undefined;
}

/** A list of strings every one of which was kept whole; undefined for anything else. */
function domainList(scalar: Scalar | undefined): string[] | undefined {
  if (scalar?.kind !== 'array' || scalar.items === undefined || scalar.items.length < scalar.count!) return undefined;
  const domains: string[] = [];
  for (const item of scalar.items) {
    const domain = wholeString(item, MAX_DOMAIN_CHARS);
    if (domain === undefined) return undefined;
    domains.push(domain);
  }
  return domains;
}
