// The HTTP request handler shared by every key's socket: attribute the request to its key, route it,
// check the key's limits, swap the client's credential for the real one, relay it upstream, and
// meter what comes back.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Dispatcher } from 'undici';
import { ClientGone, isJsonContentType, parseRequestFields, readBody } from './body.ts';
import type { CallRecord } from './calls.ts';
import { GatewayError, sendError } from './errors.ts';
import { headersForUpstream } from './headers.ts';
import type { KeyRecord } from './keys.ts';
import type { Accounting, Admission, KeyAccount } from './metering/accounting.ts';
import { askForStreamUsage, UsageChunkRemover } from './metering/include-usage.ts';
import { createUsageMeter, type UsageMeter } from './metering/usage.ts';
import type { Upstream } from './providers.ts';
import { relay, type RelayOutcome } from './relay.ts';
import { dialectOf, resolveRoute, type ProviderKind, type Route } from './routes.ts';

export interface ProxyContext {
  keyOf(socket: Socket): KeyRecord | undefined;
  upstreams(): Record<ProviderKind, Upstream>;
  accounting: Accounting;
  dispatcher: Dispatcher;
  maxBodyBytes: number;
  timeouts: { firstByteMs: number; idleMs: number; clientBodyIdleMs: number };
  onCall(record: CallRecord): void;
  onInternalError(error: unknown): void;
}

export function createRequestHandler(context: ProxyContext) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const key = context.keyOf(req.socket);
    const account = key && !key.revoked ? context.accounting.get(key.id) : undefined;
    if (!key || !account) {
      res.shouldKeepAlive = false;
      sendError(res, dialectOf(req.url ?? '/', req.headers), new GatewayError('key_revoked', 'this key has been revoked or has expired'));
      return;
    }
    handle(context, key, account, req, res).catch((error: unknown) => {
      context.onInternalError(error);
      sendError(res, dialectOf(req.url ?? '/', req.headers), new GatewayError('upstream_failed', 'internal gateway error'));
    });
  };
}

async function handle(context: ProxyContext, key: KeyRecord, account: KeyAccount, req: IncomingMessage, res: ServerResponse): Promise<void> {
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
  try {
    const route = resolveRoute(method, path, req.headers);
    call.route = route;
    context.accounting.checkRate(account, key.inFlight - 1);
    const upstream = context.upstreams()[route.provider];
    let body: Buffer | null = null;
    let model: string | undefined;
    let maxOutputTokens: number | undefined;
    if (route.hasBody) {
      if (!isJsonContentType(req.headers['content-type'])) {
        throw new GatewayError('unsupported_media_type', 'request body must be JSON (content-type: application/json)');
      }
      body = await readBody(req, Math.min(context.maxBodyBytes, account.limits.maxBodyBytes ?? Infinity), context.timeouts.clientBodyIdleMs);
      const fields = parseRequestFields(body);
      ({ model, maxOutputTokens } = fields);
      call.requestBytes = body.length;
      call.model = model;
      call.stream = fields.stream;
      if (route.endpoint === 'chat_completions') {
        const asked = askForStreamUsage(body, fields.json);
        if (asked) {
          body = asked;
          call.usageChunkRemover = new UsageChunkRemover();
        }
      }
    }
    call.admission = context.accounting.admit(account, { endpoint: route.endpoint, model, maxOutputTokens, requestBytes: call.requestBytes });
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
    if (error instanceof ClientGone) return; // reported as client_closed when the response closes
    if (!(error instanceof GatewayError)) throw error;
    if (error.headers.connection === 'close') res.shouldKeepAlive = false;
    const provider = call.route?.provider ?? dialectOf(path, req.headers);
    sendError(res, provider, error);
    call.finish('rejected', error.statusFor(provider), error);
  }
}

/** Follows one call from arrival to its last byte, meters it, and reports it once. */
class CallTracker {
  route: Route | undefined;
  model: string | undefined;
  stream = false;
  requestBytes = 0;
  admission: Admission | undefined;
  usageChunkRemover: UsageChunkRemover | undefined;
  private meter: UsageMeter | undefined;
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

  onResponseStart(status: number, headers: Record<string, string | string[] | undefined>): void {
    this.ttfbMs = performance.now() - this.started;
    const id = headers['request-id'] ?? headers['x-request-id'];
    this.upstreamRequestId = Array.isArray(id) ? id[0] : id;
    if (status >= 200 && status < 300 && this.route) {
      const streaming = String(headers['content-type'] ?? '').startsWith('text/event-stream');
      this.meter = createUsageMeter(this.route.endpoint, streaming);
      if (!streaming) this.usageChunkRemover = undefined;
    } else {
      this.usageChunkRemover = undefined;
    }
  }

  onResponseData(chunk: Buffer): Buffer {
    this.meter?.push(chunk);
    const out = this.usageChunkRemover ? this.usageChunkRemover.push(chunk) : chunk;
    this.responseBytes += out.length;
    return out;
  }

  onResponseTail(): Buffer | undefined {
    return this.usageChunkRemover?.flush();
  }

  onResponseEnd(outcome: RelayOutcome, status: number, error?: GatewayError): void {
    this.finish(outcome, status, error);
  }

  finish(outcome: CallRecord['outcome'], status: number, error?: GatewayError): void {
    if (this.done) return;
    this.done = true;
    const settlement = this.admission?.settle(this.meter?.result());
    const usage = settlement?.usage;
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
      inputTokens: usage?.inputTokens,
      outputTokens: usage?.outputTokens,
      cacheWriteTokens: usage?.cacheWriteTokens,
      cacheWrite1hTokens: usage?.cacheWrite1hTokens,
      cacheReadTokens: usage?.cacheReadTokens,
      reasoningTokens: usage?.reasoningTokens,
      usageReported: settlement?.usageReported,
      costUsd: settlement?.costUsd ?? 0,
      priceSource: settlement?.priceSource,
      reservedUsd: this.admission?.estimateUsd,
    });
  }
}
