// Reading a request body: bounded in size, kept as the exact bytes the client sent (they are
// forwarded unchanged: thinking-block signatures and prompt-cache prefixes depend on them), and
// parsed once for the few fields routing and metering need.
import type { IncomingMessage } from 'node:http';
import { GatewayError } from './errors.ts';

/** A tool the request declares (`tools[]`): its type tells a client-run function from a server tool. */
export interface ToolDeclaration {
  /** `type` as sent; absent for Anthropic custom tools. Bounded (see MAX_FIELD_CHARS). */
  type?: string;
  name?: string;
  /** Anthropic server tools' `max_uses`. */
  maxUses?: number;
  /** OpenAI `mcp` tools' `server_url`. */
  serverUrl?: string;
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

/** The client went away before its body was complete: nothing to answer, nothing to forward. */
export class ClientGone extends Error {}

/** The body's bytes; rejects with 413 past `limitBytes`, 408 after `idleMs` without a byte. */
export function readBody(req: IncomingMessage, limitBytes: number, idleMs: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > limitBytes) {
    return Promise.reject(tooLarge(limitBytes));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limitBytes) {
        cleanup();
        reject(tooLarge(limitBytes));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    // A request stream only errors when the client's connection breaks.
    const onError = () => {
      cleanup();
      reject(new ClientGone('client closed the connection before sending the whole body'));
    };
    const onIdle = () => {
      cleanup();
      reject(new GatewayError('request_timeout', `no request body bytes for ${Math.round(idleMs / 1000)} s`, { connection: 'close' }));
    };
    function cleanup() {
      // The same socket then waits quietly for the upstream, however long that takes.
      req.socket.setTimeout(0);
      req.off('timeout', onIdle);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    }
    function onClose() {
      if (!req.complete) onError();
    }
    // On the request, not the socket: with a listener there, Node's server leaves the socket open
    // for our 408 instead of destroying it.
    req.setTimeout(idleMs);
    req.once('timeout', onIdle);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

function tooLarge(limitBytes: number): GatewayError {
  // The rest of the body is not read: the connection is closed after the answer.
  return new GatewayError('body_too_large', `request body is larger than this key's limit of ${limitBytes} bytes`, {
    connection: 'close',
  });
}

export function isJsonContentType(value: string | undefined): boolean {
  if (value === undefined) return false;
  const type = value.split(';', 1)[0]!.trim().toLowerCase();
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}

/** Model names longer than this are refused: real ones are under 100 characters. */
export const MAX_MODEL_CHARS = 256;
/** Longest tool `type`/`name` kept (longer ones are cut: they only need to be recognised). */
const MAX_FIELD_CHARS = 128;
/** Most completions one chat request may ask for (OpenAI's own limit). */
const MAX_CHOICES = 128;
const OUTPUT_LIMIT_FIELDS: readonly OutputLimitField[] = ['max_tokens', 'max_completion_tokens', 'max_output_tokens'];

export function parseRequestFields(body: Buffer): RequestFields {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new GatewayError('invalid_request', `request body is not valid JSON: ${(error as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new GatewayError('invalid_request', 'request body must be a JSON object');
  }
  const object = json as Record<string, unknown>;
  if (object.model !== undefined && typeof object.model !== 'string') {
    throw new GatewayError('invalid_request', '`model` must be a string');
  }
  if (typeof object.model === 'string' && object.model.length > MAX_MODEL_CHARS) {
    throw new GatewayError('invalid_request', `\`model\` is longer than ${MAX_MODEL_CHARS} characters`);
  }
  const outputLimitField = OUTPUT_LIMIT_FIELDS.find((field) => object[field] !== undefined && object[field] !== null);
  const maxOutputTokens = outputLimitField === undefined ? undefined : positiveInteger(object[outputLimitField], outputLimitField);
  const choices = object.n === undefined || object.n === null ? 1 : positiveInteger(object.n, 'n');
  if (choices > MAX_CHOICES) throw new GatewayError('invalid_request', `\`n\` may be at most ${MAX_CHOICES}`);
  const thinking = object.thinking as { budget_tokens?: unknown } | null | undefined;
  const budget = thinking !== null && typeof thinking === 'object' ? thinking.budget_tokens : undefined;
  return {
    model: object.model as string | undefined,
    stream: object.stream === true,
    maxOutputTokens,
    outputLimitField,
    choices,
    serviceTier: typeof object.service_tier === 'string' ? object.service_tier.slice(0, MAX_FIELD_CHARS) : undefined,
    background: object.background === true,
    thinkingBudgetTokens: typeof budget === 'number' && Number.isInteger(budget) && budget > 0 ? budget : undefined,
    tools: Array.isArray(object.tools) ? object.tools.map(toolDeclaration) : [],
    mcpServers: Array.isArray(object.mcp_servers) ? object.mcp_servers.length : 0,
    webSearchOptions: object.web_search_options !== undefined && object.web_search_options !== null,
    streamOptions: object.stream_options,
    inputBytes: tokenBytes(body),
  };
}

function positiveInteger(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 2 ** 31 - 1) {
    throw new GatewayError('invalid_request', `\`${field}\` must be a positive integer`);
  }
  return value;
}

function toolDeclaration(tool: unknown): ToolDeclaration {
  if (tool === null || typeof tool !== 'object') return {};
  const { type, name, max_uses: maxUses, server_url: serverUrl } = tool as Record<string, unknown>;
  return {
    type: typeof type === 'string' ? type.slice(0, MAX_FIELD_CHARS) : undefined,
    name: typeof name === 'string' ? name.slice(0, MAX_FIELD_CHARS) : undefined,
    maxUses: typeof maxUses === 'number' && Number.isInteger(maxUses) && maxUses > 0 ? maxUses : undefined,
    serverUrl: typeof serverUrl === 'string' ? serverUrl.slice(0, 2048) : undefined,
  };
}

/** The body's length less the whitespace between JSON tokens. */
function tokenBytes(body: Buffer): number {
  let count = 0;
  let inString = false;
  for (let i = 0; i < body.length; i++) {
    const byte = body[i]!;
    if (inString) {
      count++;
      if (byte === 0x5c /* backslash */) {
        i++;
        count++;
      } else if (byte === 0x22 /* " */) inString = false;
    } else if (byte === 0x22) {
      inString = true;
      count++;
    } else if (byte !== 0x20 && byte !== 0x0a && byte !== 0x0d && byte !== 0x09) count++;
  }
  return count;
}
