// Errors the gateway makes itself, rendered in the shape of the provider the client speaks,
// so SDKs surface our message instead of a parse failure.
import type { ServerResponse } from 'node:http';
import type { ProviderKind } from './routes.ts';

export type ErrorKind =
  | 'invalid_request'
  | 'unsupported_media_type'
  | 'not_found'
  | 'method_not_allowed'
  | 'body_too_large'
  | 'key_revoked'
  | 'provider_not_configured'
  | 'upstream_unreachable'
  | 'upstream_failed'
  | 'upstream_timeout'
  | 'upgrade_refused'
  | 'model_not_allowed'
  | 'rate_limited'
  | 'budget_exhausted';

interface KindSpec {
  status: number;
  anthropicType: string;
  openaiType: string;
}

const KINDS: Record<ErrorKind, KindSpec> = {
  invalid_request: { status: 400, anthropicType: 'invalid_request_error', openaiType: 'invalid_request_error' },
  unsupported_media_type: { status: 415, anthropicType: 'invalid_request_error', openaiType: 'invalid_request_error' },
  not_found: { status: 404, anthropicType: 'not_found_error', openaiType: 'invalid_request_error' },
  method_not_allowed: { status: 405, anthropicType: 'invalid_request_error', openaiType: 'invalid_request_error' },
  body_too_large: { status: 413, anthropicType: 'request_too_large', openaiType: 'invalid_request_error' },
  // 403, not 401: clients retry 401 as if a token refresh could help; a revoked key never comes back.
  key_revoked: { status: 403, anthropicType: 'permission_error', openaiType: 'permission_error' },
  provider_not_configured: { status: 503, anthropicType: 'api_error', openaiType: 'api_error' },
  upstream_unreachable: { status: 502, anthropicType: 'api_error', openaiType: 'api_error' },
  upstream_failed: { status: 502, anthropicType: 'api_error', openaiType: 'api_error' },
  upstream_timeout: { status: 504, anthropicType: 'api_error', openaiType: 'api_error' },
  upgrade_refused: { status: 426, anthropicType: 'invalid_request_error', openaiType: 'invalid_request_error' },
  model_not_allowed: { status: 403, anthropicType: 'permission_error', openaiType: 'permission_error' },
  rate_limited: { status: 429, anthropicType: 'rate_limit_error', openaiType: 'rate_limit_error' },
  // See docs/clients.md: a status the clients do not retry, so an agent stops instead of looping.
  budget_exhausted: { status: 402, anthropicType: 'billing_error', openaiType: 'insufficient_quota' },
};

/** A failure the gateway answers itself; `message` must never contain a credential. */
export class GatewayError extends Error {
  readonly kind: ErrorKind;
  readonly status: number;
  readonly headers: Record<string, string>;

  constructor(kind: ErrorKind, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.kind = kind;
    this.status = KINDS[kind].status;
    this.headers = headers;
  }
}

/** The JSON body of an error in the provider's own shape. */
export function errorBody(provider: ProviderKind, kind: ErrorKind, message: string): string {
  const spec = KINDS[kind];
  if (provider === 'anthropic') {
    return JSON.stringify({ type: 'error', error: { type: spec.anthropicType, message } });
  }
  return JSON.stringify({ error: { message, type: spec.openaiType, param: null, code: kind } });
}

/** Ends `res` with the error, unless headers already went out (then the connection is cut). */
export function sendError(res: ServerResponse, provider: ProviderKind, error: GatewayError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = errorBody(provider, error.kind, error.message);
  res.writeHead(error.status, {
    ...error.headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'x-gateway-error': error.kind,
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

/** One SSE event that tells a streaming client the upstream failed mid-stream. */
export function streamErrorEvent(provider: ProviderKind, message: string): string {
  if (provider === 'anthropic') {
    return `event: error\ndata: ${errorBody('anthropic', 'upstream_failed', message)}\n\n`;
  }
  return `data: ${errorBody('openai', 'upstream_failed', message)}\n\n`;
}
