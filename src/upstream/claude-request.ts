// A Claude call made ready for the upstream that serves it, whatever format the client spoke: the
// path, the body and the beta headers in the upstream's own format. The body is edited with byte
// splices (a field removed, set or added), never re-serialised: thinking-block signatures and
// prompt-cache prefixes cover the bytes the client sent. A call in the upstream's own format goes
// with its body unchanged.
import { BEDROCK_VERSION, bedrockPath, type ClaudeFormat, VERTEX_VERSION, vertexPath } from '../wire/claude-formats.ts';
import { bedrockModelId, canonicalClaudeModel, vertexModelId } from '../wire/claude-models.ts';
import { GatewayError } from '../wire/errors.ts';
import { dropBetas, type HeaderMap } from '../wire/headers.ts';
import { removeTopLevelField, replaceTopLevelString, setTopLevelField, topLevelValue } from '../wire/json-splice.ts';
import type { Upstream, UpstreamKind } from './providers.ts';

/** What the client asked for, as its format says it. */
export interface ClaudeCall {
  format: ClaudeFormat;
  endpoint: 'messages' | 'count_tokens';
  stream: boolean;
}

/** The format an upstream of `kind` takes: Anthropic, Foundry and compatible servers the Messages API. */
export function formatOfKind(kind: UpstreamKind): ClaudeFormat {
  return kind === 'bedrock' || kind === 'vertex' ? kind : 'anthropic';
}

/**
 * Whether `upstream` can serve `call`. Counting tokens keeps its own answer shape on Bedrock
 * (`inputTokens`) and takes its body wrapped: it is served only between Bedrock and Bedrock.
 */
export function canServe(upstream: Upstream, call: ClaudeCall): boolean {
  if (call.endpoint !== 'count_tokens') return true;
  return (call.format === 'bedrock') === (upstream.kind === 'bedrock');
}

/**
 * The model id to send `upstream`: the route's rename as the operator spelled it, else the client's
 * id in the upstream's spelling (`claude-sonnet-4-5-20250929` on Bedrock is
 * `us.anthropic.claude-sonnet-4-5-20250929-v1:0`, on Vertex `claude-sonnet-4-5@20250929`).
 */
export function upstreamModelId(upstream: Upstream, format: ClaudeFormat, model: string, rename: string | undefined): string {
  if (rename !== undefined) return rename;
  const target = formatOfKind(upstream.kind);
  if (target === format) return model;
  if (target === 'bedrock') return bedrockModelId(canonicalClaudeModel(model), upstream.cloud?.inferenceProfile);
  if (target === 'vertex') return vertexModelId(model);
  return canonicalClaudeModel(model);
}

export interface UpstreamClaudeRequest {
  /** Path and query, under the upstream's prefix. */
  pathAndQuery: string;
  body: Buffer;
}

/**
 * The request for `upstream`: `url` is the client's path and query, `model` the id to send (see
 * upstreamModelId), `headers` the client's (betas move between the header and the body here).
 */
export function claudeRequestFor(
  upstream: Upstream,
  call: ClaudeCall,
  url: string,
  model: string | undefined,
  body: Buffer,
  headers: HeaderMap,
): UpstreamClaudeRequest {
  const target = formatOfKind(upstream.kind);
  if (target === 'bedrock') return forBedrock(upstream, call, model, body, headers);
  if (target === 'vertex') return forVertex(upstream, call, model, body, headers);
  return forMessagesApi(call, url, model, body, headers);
}

function forMessagesApi(call: ClaudeCall, url: string, model: string | undefined, body: Buffer, headers: HeaderMap): UpstreamClaudeRequest {
  if (call.format === 'anthropic') {
    const renamed = model === undefined ? body : (replaceTopLevelString(body, 'model', model) ?? body);
    return { pathAndQuery: url, body: renamed };
  }
  let out = betasToHeader(body, headers);
  out = removeTopLevelField(out, 'anthropic_version');
  if (model !== undefined) out = set(out, 'model', JSON.stringify(model));
  if (call.stream) out = set(out, 'stream', 'true');
  return { pathAndQuery: call.endpoint === 'count_tokens' ? '/v1/messages/count_tokens' : '/v1/messages', body: out };
}

function forBedrock(upstream: Upstream, call: ClaudeCall, model: string | undefined, body: Buffer, headers: HeaderMap): UpstreamClaudeRequest {
  if (model === undefined) throw new GatewayError('invalid_request', '`model` is required');
  const pathAndQuery = bedrockPath(model, call.endpoint, call.stream);
  if (call.format === 'bedrock') {
    // The client's own body, but for betas this upstream rejects.
    if (upstream.dropBetas.size === 0 || call.endpoint === 'count_tokens') return { pathAndQuery, body };
    const betas = bodyBetas(body);
    if (betas.length === 0) return { pathAndQuery, body };
    const kept = betas.filter((beta) => !upstream.dropBetas.has(beta));
    return { pathAndQuery, body: set(body, 'anthropic_beta', JSON.stringify(kept)) };
  }
  let out = removeTopLevelField(removeTopLevelField(body, 'model'), 'stream');
  if (call.format === 'vertex') out = betasToHeader(out, headers);
  out = set(removeTopLevelField(out, 'anthropic_version'), 'anthropic_version', JSON.stringify(BEDROCK_VERSION));
  // Bedrock reads betas from the body only.
  const header = headers['anthropic-beta'];
  if (header !== undefined) {
    const betas = splitBetas(dropBetas(header, upstream.dropBetas));
    if (betas.length > 0) out = set(out, 'anthropic_beta', JSON.stringify(betas));
  }
  return { pathAndQuery, body: out };
}

function forVertex(upstream: Upstream, call: ClaudeCall, model: string | undefined, body: Buffer, headers: HeaderMap): UpstreamClaudeRequest {
  const place = upstream.cloud!;
  if (call.endpoint === 'messages' && model === undefined) throw new GatewayError('invalid_request', '`model` is required');
  const pathAndQuery = vertexPath(place.project!, place.region, model ?? '', call.endpoint, call.stream);
  if (call.format === 'vertex') return { pathAndQuery, body };
  let out = call.format === 'bedrock' ? betasToHeader(body, headers) : body;
  out = removeTopLevelField(out, 'anthropic_version');
  // Vertex names the model in the path, but for counting tokens, where it stays in the body.
  out = call.endpoint === 'count_tokens' ? set(out, 'model', JSON.stringify(model)) : removeTopLevelField(out, 'model');
  out = set(out, 'anthropic_version', JSON.stringify(VERTEX_VERSION));
  if (call.stream) out = set(out, 'stream', 'true');
  return { pathAndQuery, body: out };
}

function set(body: Buffer, key: string, valueJson: string): Buffer {
  const out = setTopLevelField(body, key, valueJson);
  if (!out) throw new GatewayError('invalid_request', 'the request body must be a JSON object');
  return out;
}

// Bedrock clients send a few betas; anything past these bounds is no real request.
const MAX_BETAS = 64;
const MAX_BETA_CHARS = 128;

/** The body's `anthropic_beta` array (Bedrock's place for betas), checked; [] when absent. */
function bodyBetas(body: Buffer): string[] {
  const text = topLevelValue(body, 'anthropic_beta');
  if (text === undefined) return [];
  let betas: unknown;
  try {
    betas = JSON.parse(text.toString('utf8'));
  } catch {
    betas = undefined;
  }
  if (
    !Array.isArray(betas) ||
    betas.length > MAX_BETAS ||
    !betas.every((beta) => typeof beta === 'string' && beta.length <= MAX_BETA_CHARS && !/[,\r\n]/.test(beta))
  ) {
    throw new GatewayError('invalid_request', `\`anthropic_beta\` must be an array of at most ${MAX_BETAS} beta names`);
  }
  return betas as string[];
}

/** Moves the body's `anthropic_beta` into the `anthropic-beta` header (joined with the header's own). */
function betasToHeader(body: Buffer, headers: HeaderMap): Buffer {
  const betas = bodyBetas(body);
  if (betas.length === 0) return removeTopLevelField(body, 'anthropic_beta');
  const header = headers['anthropic-beta'];
  const all = new Set([...(header === undefined ? [] : splitBetas(header)), ...betas]);
  headers['anthropic-beta'] = [...all].join(',');
  return removeTopLevelField(body, 'anthropic_beta');
}

function splitBetas(header: string | string[]): string[] {
  return (Array.isArray(header) ? header.join(',') : header)
    .split(',')
    .map((beta) => beta.trim())
    .filter(Boolean);
}
