// The HTTP request handler shared by every key's socket: attribute the request to its key, route it,
// swap the client's credential for the real one and relay it upstream.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Dispatcher } from 'undici';
import { ClientGone, isJsonContentType, parseRequestFields, readBody, type RequestFields } from './body.ts';
import type { CallRecord } from './calls.ts';
import { GatewayError, sendError } from './errors.ts';
import { headersForUpstream } from './headers.ts';
import type { KeyRecord } from './keys.ts';
import type { Upstream } from './providers.ts';
import { relay, type RelayOutcome } from './relay.ts';
import { dialectOf, resolveRoute, type ProviderKind, type Route } from './routes.ts';

export interface ProxyContext {
  keyOf(socket: Socket): KeyRecord | undefined;
  upstreams(): Record<ProviderKind, Upstream>;
  dispatcher: Dispatcher;
  maxBodyBytes: number;
  timeouts: { firstByteMs: number; idleMs: number };
  onCall(record: CallRecord): void;
  onInternalError(error: unknown): void;
}

export function createRequestHandler(context: ProxyContext) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const key = context.keyOf(req.socket);
    if (!key || key.revoked) {
      res.shouldKeepAlive = false;
      const url = req.url ?? '/';
      sendError(res, dialectOf(url, req.headers), new GatewayError('key_revoked', 'this key has been revoked or has expired'));
      return;
    }
    handle(context, key, req, res).catch((error: unknown) => {
      context.onInternalError(error);
      if (!res.headersSent) {
        sendError(res, dialectOf(req.url ?? '/', req.headers), new GatewayError('upstream_failed', 'internal gateway error'));
      } else {
        res.destroy();
      }
    });
  };
}

async function handle(context: ProxyContext, key: KeyRecord, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = performance.now();
  const url = req.url ?? '/';
  const queryAt = url.indexOf('?');
  const path = queryAt === -1 ? url : url.slice(0, queryAt);
  const method = req.method ?? 'GET';

  // Claude Code's connectivity probe: answered here, it never needs the upstream.
  if (path === '/api/hello' && (method === 'HEAD' || method === 'GET')) {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 });
    res.end(method === 'HEAD' ? undefined : '{}');
    return;
  }

  const call = new CallTracker(context, key, req, res, path, started);
  let route: Route | undefined;
  try {
    route = resolveRoute(method, path, req.headers);
    call.route = route;
    const upstream = context.upstreams()[route.provider];
    let body: Buffer | null = null;
    let fields: RequestFields | undefined;
    if (route.hasBody) {
      if (!isJsonContentType(req.headers['content-type'])) {
        throw new GatewayError('unsupported_media_type', 'request body must be JSON (content-type: application/json)');
      }
      body = await readBody(req, context.maxBodyBytes);
      fields = parseRequestFields(body);
      call.requestBytes = body.length;
      call.model = fields.model;
      call.stream = fields.stream;
    }
    const headers = headersForUpstream(req.headers);
    upstream.authenticate(headers);
    if (body) headers['content-length'] = String(body.length);
    if (res.destroyed) return call.finish('client_closed', 0);
    relay(context.dispatcher, {
      upstream,
      method,
      pathAndQuery: url,
      headers,
      body,
      res,
      timeouts: context.timeouts,
      observer: call,
    });
  } catch (error) {
    if (error instanceof ClientGone) return; // the call is reported as client_closed on close
    if (!(error instanceof GatewayError)) throw error;
    if (error.headers.connection === 'close') res.shouldKeepAlive = false;
    sendError(res, route?.provider ?? dialectOf(path, req.headers), error);
    call.finish('rejected', error.status, error);
  }
}

/** Follows one call from arrival to its last byte and reports it once. */
class CallTracker {
  route: Route | undefined;
  model: string | undefined;
  stream = false;
  requestBytes = 0;
  private responseBytes = 0;
  private ttfbMs: number | undefined;
  private upstreamRequestId: string | undefined;
  private done = false;
  private readonly context: ProxyContext;
  private readonly key: KeyRecord;
  private readonly req: IncomingMessage;
  private readonly path: string;
  private readonly started: number;

  constructor(context: ProxyContext, key: KeyRecord, req: IncomingMessage, res: ServerResponse, path: string, started: number) {
    this.context = context;
    this.key = key;
    this.req = req;
    this.path = path;
    this.started = started;
    key.inFlight++;
    // Whatever happens to the exchange, the key's in-flight count comes back down exactly once.
    res.once('close', () => {
      key.inFlight--;
      if (!this.done) this.finish('client_closed', res.statusCode);
    });
  }

  onResponseStart(_status: number, headers: Record<string, string | string[] | undefined>): void {
    this.ttfbMs = performance.now() - this.started;
    const id = headers['request-id'] ?? headers['x-request-id'];
    this.upstreamRequestId = Array.isArray(id) ? id[0] : id;
  }

  onResponseData(chunk: Buffer): void {
    this.responseBytes += chunk.length;
  }

  onResponseEnd(outcome: RelayOutcome, status: number, error?: GatewayError): void {
    this.finish(outcome, status, error);
  }

  finish(outcome: CallRecord['outcome'], status: number, error?: GatewayError): void {
    if (this.done) return;
    this.done = true;
    const session = this.req.headers['x-claude-code-session-id'] ?? this.req.headers['x-session-id'];
    this.context.onCall({
      time: Date.now() - Math.round(performance.now() - this.started),
      keyId: this.key.id,
      group: this.key.group,
      label: this.key.label,
      sessionId: Array.isArray(session) ? session[0] : session,
      provider: this.route?.provider,
      endpoint: this.route?.endpoint,
      method: this.req.method ?? 'GET',
      path: this.path,
      model: this.model,
      stream: this.stream,
      status,
      outcome,
      latencyMs: performance.now() - this.started,
      ttfbMs: this.ttfbMs,
      upstreamRequestId: this.upstreamRequestId,
      errorKind: error?.kind,
      requestBytes: this.requestBytes,
      responseBytes: this.responseBytes,
    });
  }
}
