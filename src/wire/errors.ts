// Errors the gateway makes itself, rendered in the shape of the dialect the client speaks,
// so SDKs surface our message instead of a parse failure.
import type { ServerResponse } from 'node:http';
import type { Dialect } from './dialect.ts';

/**
 * The shape errors take for a client: its dialect's, or, for Claude clients in their cloud modes,
 * Amazon Bedrock's (`{"message"}` and `x-amzn-errortype`) or Vertex AI's (Anthropic's body).
 */
export type ErrorShape = Dialect | 'bedrock' | 'vertex';

export type ErrorKind =
  | 'invalid_request'
  | 'unsupported_media_type'
  | 'not_found'
  | 'method_not_allowed'
  | 'body_too_large'
  | 'request_timeout'
  | 'key_revoked'
  | 'invalid_token'
  | 'provider_not_configured'
  | 'upstream_unreachable'
  | 'upstream_failed'
  | 'upstream_timeout'
  | 'upgrade_refused'
  | 'model_not_allowed'
  | 'tool_not_allowed'
  | 'rate_limited'
  | 'budget_exhausted'
  | 'github_not_allowed'
  | 'service_not_allowed'
  | 'store_unavailable';

interface KindSpec {
  status: number;
  anthropicType: string;
  openaiType: string;
  /**
   * Whether a client should try again. The Anthropic and OpenAI SDKs (and so Claude Code and the
   * Agents SDK) honour `x-should-retry: false`, which stops their retry loops at once whatever the
   * status; without it Claude Code retries 401, 429 and 5xx for minutes (docs/clients.md).
   */
  retry: boolean;
  /** A different status for OpenAI clients, where their own API's convention differs. */
  openaiStatus?: number;
  /** A different status for Claude Code in its Bedrock and Vertex modes (see model_not_allowed). */
  cloudStatus?: number;
  /** Bedrock's `x-amzn-errortype` for it. Default ValidationException (4xx) or InternalServerException (5xx). */
  bedrockType?: string;
}

const KINDS: Record<ErrorKind, KindSpec> = {
  invalid_request: { status: 400, anthropicType: 'invalid_request_error', openaiType: 'invalid_request_error', retry: false },
  unsupported_media_type: { status: 415, anthropicType: 'invalid_request_error', openaiType: 'invalid_request_error', retry: false },
  not_found: { status: 404, anthropicType: 'not_found_error', openaiType: 'invalid_request_error', retry: false, bedrockType: 'ResourceNotFoundException' },
  method_not_allowed: { status: 405, anthropicType: 'invalid_request_error', openaiType: 'invalid_request_error', retry: false },
  request_timeout: { status: 408, anthropicType: 'invalid_request_error', openaiType: 'invalid_request_error', retry: true },
  body_too_large: { status: 413, anthropicType: 'request_too_large', openaiType: 'invalid_request_error', retry: false },
  // 403, not 401: clients retry 401 as if a token refresh could help; a revoked key never comes back.
  key_revoked: { status: 403, anthropicType: 'permission_error', openaiType: 'permission_error', retry: false, bedrockType: 'AccessDeniedException' },
  // TCP mode: a request without the key's token. Not retried: the token will not appear by asking again.
  invalid_token: {
    status: 401,
    anthropicType: 'authentication_error',
    openaiType: 'invalid_request_error',
    retry: false,
    bedrockType: 'UnrecognizedClientException',
  },
  // A gateway without the provider's credential will not grow one by being asked again.
  provider_not_configured: { status: 503, anthropicType: 'api_error', openaiType: 'api_error', retry: false },
  upstream_unreachable: { status: 502, anthropicType: 'api_error', openaiType: 'api_error', retry: true },
  upstream_failed: { status: 502, anthropicType: 'api_error', openaiType: 'api_error', retry: true },
  upstream_timeout: { status: 504, anthropicType: 'api_error', openaiType: 'api_error', retry: true },
  upgrade_refused: { status: 426, anthropicType: 'invalid_request_error', openaiType: 'invalid_request_error', retry: false },
  // Claude Code in its Bedrock mode takes a 403 or 404 for its model as "not enabled in this
  // account" and silently switches to an older model (docs/clients.md): a 400 makes it say why and stop.
  model_not_allowed: { status: 403, cloudStatus: 400, anthropicType: 'permission_error', openaiType: 'permission_error', retry: false },
  tool_not_allowed: { status: 403, anthropicType: 'permission_error', openaiType: 'permission_error', retry: false },
  github_not_allowed: { status: 403, anthropicType: 'permission_error', openaiType: 'permission_error', retry: false },
  service_not_allowed: { status: 403, anthropicType: 'permission_error', openaiType: 'permission_error', retry: false },
  // The shared budget store is unreachable: calls of groups with a shared budget wait for it (docs/scale-out.md).
  store_unavailable: { status: 503, anthropicType: 'overloaded_error', openaiType: 'api_error', retry: true, bedrockType: 'ServiceUnavailableException' },
  rate_limited: { status: 429, anthropicType: 'rate_limit_error', openaiType: 'rate_limit_error', retry: true, bedrockType: 'ThrottlingException' },
  // Measured (docs/clients.md): Claude Code makes one attempt on 402 and stops. OpenAI's own signal
  // for spent quota is 429 `insufficient_quota`, which Codex alone does not retry.
  budget_exhausted: {
    status: 402,
    openaiStatus: 429,
    anthropicType: 'billing_error',
    openaiType: 'insufficient_quota',
    retry: false,
    bedrockType: 'ServiceQuotaExceededException',
  },
};

/** A failure the gateway answers itself; `message` must never contain a credential. */
export class GatewayError extends Error {
  readonly kind: ErrorKind;
  readonly headers: Record<string, string>;

  constructor(kind: ErrorKind, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.kind = kind;
    this.headers = headers;
  }

  /** The HTTP status in the convention of the client's `shape`. */
  statusFor(shape: ErrorShape): number {
    const spec = KINDS[this.kind];
    if (shape === 'openai') return spec.openaiStatus ?? spec.status;
    if (shape === 'bedrock' || shape === 'vertex') return spec.cloudStatus ?? spec.status;
    return spec.status;
  }
}

/** The JSON body of an error in the client's own shape. */
export function errorBody(shape: ErrorShape, kind: ErrorKind, message: string): string {
  const spec = KINDS[kind];
  if (shape === 'bedrock') return JSON.stringify({ message });
  if (shape === 'anthropic' || shape === 'vertex') {
    return JSON.stringify({ type: 'error', error: { type: spec.anthropicType, message } });
  }
  return JSON.stringify({ error: { message, type: spec.openaiType, param: null, code: kind } });
}

/** The client went away before its body was complete: nothing to answer, nothing to forward. */
export class ClientGone extends Error {}

/** Bedrock's name for the error, as its SDK reads it from `x-amzn-errortype`. */
function bedrockType(error: GatewayError): string {
  const spec = KINDS[error.kind];
  return spec.bedrockType ?? (error.statusFor('bedrock') >= 500 ? 'InternalServerException' : 'ValidationException');
}

/** Ends `res` with the error, unless headers already went out (then the connection is cut). */
export function sendError(res: ServerResponse, shape: ErrorShape, error: GatewayError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = errorBody(shape, error.kind, error.message);
  res.writeHead(error.statusFor(shape), {
    ...error.headers,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'x-gateway-error': error.kind,
    ...(shape === 'bedrock' ? { 'x-amzn-errortype': bedrockType(error) } : {}),
    ...(KINDS[error.kind].retry ? {} : { 'x-should-retry': 'false' }),
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

/** One SSE event that tells a streaming client the upstream failed mid-stream. */
export function streamErrorEvent(dialect: Dialect, message: string): string {
  if (dialect === 'anthropic') {
    return `event: error\ndata: ${errorBody('anthropic', 'upstream_failed', message)}\n\n`;
  }
  return `data: ${errorBody('openai', 'upstream_failed', message)}\n\n`;
}
