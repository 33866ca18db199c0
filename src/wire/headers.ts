// Header hygiene in both directions. The gateway is a transparent pipe for everything the providers
// define (betas, versions, SDK telemetry, idempotency keys) and strips only what must not cross:
// hop-by-hop headers, whatever credential the client sent, cookies and made-up proxy headers.
import type { IncomingHttpHeaders } from 'node:http';

export type HeaderMap = Record<string, string | string[]>;

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'http2-settings'];

const DROP_FROM_CLIENT = new Set([
  ...HOP_BY_HOP,
  'host',
  'content-length',
  'expect',
  // Client credentials: the socket is the identity, the upstream credential is injected by the gateway.
  'authorization',
  'proxy-authorization',
  'x-api-key',
  'api-key',
  'cookie',
  // A client's own AWS signature parts (the gateway signs Bedrock calls itself) and Google's
  // billing-project selector (the upstream's project pays).
  'x-amz-date',
  'x-amz-security-token',
  'x-amz-content-sha256',
  'x-goog-user-project',
  // Account selectors belong to whoever owns the real key, not to the container.
  'openai-organization',
  'openai-project',
  // Spoofable provenance.
  'forwarded',
  'x-real-ip',
  'via',
  // The gateway reads response bodies to meter them; it asks for them uncompressed.
  'accept-encoding',
]);

const DROP_FROM_UPSTREAM = new Set([...HOP_BY_HOP, 'proxy-authenticate', 'set-cookie', 'alt-svc']);

/** What a forward proxy (egress) keeps of neither side: the hop's own headers and its credentials. */
const DROP_AT_PROXY = new Set([...HOP_BY_HOP, 'host', 'proxy-authorization', 'proxy-authenticate']);

/** The Connection values nearly every request and response carries, read once. */
const USUAL_CONNECTION = new Map<string, ReadonlySet<string>>([
  ['keep-alive', new Set(['keep-alive'])],
  ['close', new Set(['close'])],
]);

/** Names listed in a Connection header are hop-by-hop too (RFC 9110 7.6.1). */
function connectionTokens(value: string | string[] | undefined): ReadonlySet<string> | undefined {
  if (value === undefined) return undefined;
  const usual = typeof value === 'string' ? USUAL_CONNECTION.get(value) : undefined;
  if (usual) return usual;
  const joined = Array.isArray(value) ? value.join(',') : value;
  return new Set(
    joined
      .split(',')
      .map((token) => token.trim().toLowerCase())
      .filter(Boolean),
  );
}

/** `headers` without the names `drop` rejects and without those their Connection header lists. */
function filterHeaders(headers: IncomingHttpHeaders, drop: (name: string) => boolean): HeaderMap {
  const listed = connectionTokens(headers.connection);
  const out: HeaderMap = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || drop(name) || listed?.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** The client's headers as they may go upstream, before the gateway adds the credential. */
export function headersForUpstream(incoming: IncomingHttpHeaders): HeaderMap {
  const out = filterHeaders(incoming, (name) => DROP_FROM_CLIENT.has(name) || name.startsWith('x-forwarded-'));
  out['accept-encoding'] = 'identity';
  return out;
}

/** The upstream's response headers as they may go back to the client. */
export function headersForClient(upstream: IncomingHttpHeaders): HeaderMap {
  return filterHeaders(upstream, (name) => DROP_FROM_UPSTREAM.has(name));
}

/** Headers an egress request or response passes on: all but the hop's own (Host is the caller's to set). */
export function headersThroughProxy(headers: IncomingHttpHeaders): HeaderMap {
  return filterHeaders(headers, (name) => DROP_AT_PROXY.has(name));
}

/**
 * Adds `beta` to the client's anthropic-beta value, leaving the client's list byte for byte as it was
 * (new betas appear with every Claude Code release; the gateway must not reorder or drop any).
 */
export function mergeBeta(existing: string | string[] | undefined, beta: string): string {
  const value = Array.isArray(existing) ? existing.join(',') : existing;
  if (!value || value.trim() === '') return beta;
  const present = value.split(',').some((item) => item.trim() === beta);
  return present ? value : `${value},${beta}`;
}

/** The client's anthropic-beta list without `drop`, other entries as they were; '' when none remain. */
export function dropBetas(existing: string | string[], drop: ReadonlySet<string>): string {
  const value = Array.isArray(existing) ? existing.join(',') : existing;
  return value
    .split(',')
    .filter((item) => !drop.has(item.trim()))
    .join(',')
    .trim()
    .replace(/^,+|,+$/g, '');
}
