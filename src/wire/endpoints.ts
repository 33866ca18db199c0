// Which requests the gateway serves, and in which dialect. Everything else is a 404:
// the gateway forwards only the endpoints it knows how to meter.
import type { IncomingHttpHeaders } from 'node:http';
import { type CloudCall, cloudCall, isBedrockListing } from './claude-formats.ts';
import { dialectOf, type Dialect } from './dialect.ts';
import { type ErrorShape, GatewayError } from './errors.ts';

export type Endpoint = 'messages' | 'count_tokens' | 'models' | 'chat_completions' | 'responses';

export interface Route {
  dialect: Dialect;
  endpoint: Endpoint;
  /** A JSON request body is expected (and read for routing and metering). */
  hasBody: boolean;
  /** A Claude call in Bedrock's or Vertex's format (the model and streaming are in its path). */
  cloud?: CloudCall;
}

const POST_ROUTES: ReadonlyMap<string, Route> = new Map([
  ['/v1/messages', { dialect: 'anthropic', endpoint: 'messages', hasBody: true }],
  ['/v1/messages/count_tokens', { dialect: 'anthropic', endpoint: 'count_tokens', hasBody: true }],
  ['/v1/chat/completions', { dialect: 'openai', endpoint: 'chat_completions', hasBody: true }],
  ['/v1/responses', { dialect: 'openai', endpoint: 'responses', hasBody: true }],
]);

// A model id as the providers spell them: `claude-sonnet-4-5-20250929`, `gpt-5.1`, `ft:gpt-4o:org::id`.
// It starts with an alphanumeric, so `.` and `..` (which an upstream or a proxy on the way would
// resolve as dot segments) are no model id; no `%`, so no encoded slash or dot either.
const MODEL_ID = /^\/v1\/models\/[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$/;

/**
 * The route for a request, or a GatewayError (400/404/405) saying why there is none. `target` is the
 * whole request target: a `#` in it (a fragment, which no client sends) would reach the upstream
 * literally, so it is refused.
 */
export function resolveRoute(method: string, path: string, headers: IncomingHttpHeaders, target = path): Route {
  if (target.includes('#')) throw new GatewayError('invalid_request', 'the request target must not contain "#"');
  const cloud = cloudCall(path);
  if (cloud) {
    if (method === 'POST') return { dialect: 'anthropic', endpoint: cloud.endpoint, hasBody: true, cloud };
    throw new GatewayError('method_not_allowed', `${method} is not allowed on ${truncate(path)}; use POST`, { allow: 'POST' });
  }
  if (isBedrockListing(path)) {
    // Claude Code asks these first and goes on without them on a 404 (docs/clients.md).
    throw new GatewayError('not_found', 'this gateway does not list Bedrock inference profiles or models');
  }
  const post = POST_ROUTES.get(path);
  if (post) {
    if (method === 'POST') return post;
    throw new GatewayError('method_not_allowed', `${method} is not allowed on ${path}; use POST`, { allow: 'POST' });
  }
  if (path === '/v1/models' || MODEL_ID.test(path)) {
    if (method === 'GET') return { dialect: dialectOf(path, headers), endpoint: 'models', hasBody: false };
    throw new GatewayError('method_not_allowed', `${method} is not allowed on ${path}; use GET`, { allow: 'GET' });
  }
  throw new GatewayError('not_found', `${method} ${truncate(path)} is not an endpoint this gateway serves`);
}

/** The error shape a request's client reads, judged from its target's path (cloud formats) and headers. */
export function errorShapeOf(target: string, headers: IncomingHttpHeaders): ErrorShape {
  const queryAt = target.indexOf('?');
  const path = queryAt === -1 ? target : target.slice(0, queryAt);
  if (path.startsWith('/model/') || isBedrockListing(path)) return 'bedrock';
  if (path.startsWith('/v1/projects/')) return 'vertex';
  return dialectOf(path, headers);
}

function truncate(path: string): string {
  return path.length > 120 ? `${path.slice(0, 120)}...` : path;
}
