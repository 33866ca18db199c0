// `/svc/NAME/...` on a key's socket: a request for a configured service, forwarded to its base URL
// with the host's credential. Checked before anything goes upstream: the key's grant (404 without
// one, so a key learns nothing of services it lacks), the service's methods and path globs (403
// naming the rule), and the key's rate and concurrency on that service (429). Bodies stream both
// ways unbuffered (MCP's event streams, uploads); the credential is masked out of whatever comes back.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Transform, pipeline, type TransformCallback } from 'node:stream';
import { hasUnreadBody, type PathHandler, type RequestLine } from '../http/handler.ts';
import { Exchange, type ExchangeFields } from '../http/exchange.ts';
import type { KeyLimits } from '../keys/limits.ts';
import type { KeyRecord } from '../keys/store.ts';
import type { CallRecord } from '../metering/call-record.ts';
import { RateWindow } from '../metering/rates.ts';
import { relay } from '../upstream/relay.ts';
import { GatewayError, sendError } from '../wire/errors.ts';
import { headersForUpstream, type HeaderMap } from '../wire/headers.ts';
import { dropRevealingHeaders, StreamRedactor } from './redact.ts';
import { decodeServicePath, pathAllowed } from './rules.ts';
import { isServiceName, type Service } from './service.ts';

export const SERVICE_PREFIX = '/svc/';

/** Longest silence while a client sends a request body to a service. */
const BODY_IDLE_MS = 30_000;

/** Whether the key may use the service: named in its own limits, or given to its whole group. */
export function serviceGranted(service: Service, key: KeyRecord, limits: KeyLimits): boolean {
  return service.groups.has(key.group) || (limits.services?.includes(service.name) ?? false);
}

/** The socket's `/svc/` paths, for the request handler; `services()` are the ones configured now. */
export function servicePathHandler(services: () => ReadonlyMap<string, Service>): PathHandler {
  const use = new WeakMap<KeyRecord, Map<string, ServiceUse>>();
  return {
    matches: (path) => path.startsWith(SERVICE_PREFIX) || path === '/svc',
    handle(call, req, res, started) {
      let uses = use.get(call.key);
      if (!uses) {
        uses = new Map();
        use.set(call.key, uses);
      }
      handleService({ ...call, services: services(), uses }, req, res, started);
    },
  };
}

/** One key's traffic to one service: its last minute of requests and the requests open now. */
interface ServiceUse {
  window: RateWindow;
  open: number;
}

interface ServiceCall {
  line: RequestLine;
  key: KeyRecord;
  limits: KeyLimits;
  services: ReadonlyMap<string, Service>;
  uses: Map<string, ServiceUse>;
  onCall(record: CallRecord): void;
}

function handleService(call: ServiceCall, req: IncomingMessage, res: ServerResponse, started: number): void {
  const { path, query, method } = call.line;
  const afterPrefix = path.slice(SERVICE_PREFIX.length);
  const slash = afterPrefix.indexOf('/');
  const name = slash === -1 ? afterPrefix : afterPrefix.slice(0, slash);
  const rest = slash === -1 ? '' : afterPrefix.slice(slash);
  const service = isServiceName(name) ? call.services.get(name) : undefined;
  const record = new ServiceExchange(call, req, res, path, started, service?.name);
  try {
    if (!service || !serviceGranted(service, call.key, call.limits)) {
      throw new GatewayError('not_found', isServiceName(name) ? `no service "${name}" for this key` : 'no such service');
    }
    admit(service, method, rest);
    if (!service.credential) throw new GatewayError('provider_not_configured', `the gateway has no credential configured for service ${service.name}`);
    const length = Number(req.headers['content-length'] ?? 0);
    if (length > service.maxBodyBytes) throw tooLarge(service);
    record.open(service, call.uses);
    forward(service, req, res, rest, query, record);
  } catch (error) {
    if (!(error instanceof GatewayError)) throw error;
    // A refusal does not read a body it never needed: the connection closes instead.
    if (hasUnreadBody(req)) res.shouldKeepAlive = false;
    sendError(res, 'openai', error);
    record.finish('rejected', error.statusFor('openai'), error);
  }
}

/** The service's method and path rules, then the key's rate and concurrency on it. */
function admit(service: Service, method: string, rest: string): void {
  if (!service.methods.includes(method)) {
    throw new GatewayError('service_not_allowed', `service ${service.name} allows ${service.methods.join(', ')}: ${method} is refused`);
  }
  const decoded = decodeServicePath(rest);
  if ('problem' in decoded) throw new GatewayError('invalid_request', `service ${service.name}: ${decoded.problem}`);
  if (!pathAllowed(service.paths, decoded.path) || !pathAllowed(service.paths, decoded.literal)) {
    const globs = service.paths!.map((rule) => rule.glob).join(', ');
    throw new GatewayError('service_not_allowed', `service ${service.name} allows the paths ${globs}: ${boundedPath(decoded.path)} is outside them`);
  }
}

function boundedPath(path: string): string {
  return JSON.stringify(path.length > 120 ? `${path.slice(0, 120)}...` : path);
}

function tooLarge(service: Service): GatewayError {
  return new GatewayError('body_too_large', `service ${service.name} accepts request bodies up to ${service.maxBodyBytes} bytes`);
}

function forward(service: Service, req: IncomingMessage, res: ServerResponse, rest: string, query: string, record: ServiceExchange): void {
  const headers = headersForUpstream(req.headers);
  if (service.passClientAuth) {
    for (const name of ['authorization', 'cookie'] as const) if (req.headers[name] !== undefined) headers[name] = req.headers[name]!;
  }
  const upstreamQuery = service.credential!.apply(headers, query);
  let body: BoundedBody | null = null;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    const length = req.headers['content-length'];
    if (length !== undefined && req.headers['transfer-encoding'] === undefined) headers['content-length'] = length;
    body = new BoundedBody(service.maxBodyBytes, (n) => (record.requestBytes += n));
    pipeline(req, body, () => undefined);
  }
  const { needles } = service.credential!;
  // `/svc/NAME` alone is the base itself: its path, or `/` for a base URL without one.
  const upstreamRest = rest === '' && service.upstream.pathPrefix === '' ? '/' : rest;
  relay({
    upstream: service.upstream,
    method: req.method ?? 'GET',
    pathAndQuery: `${upstreamRest}${upstreamQuery ? `?${upstreamQuery}` : ''}`,
    headers,
    body,
    res,
    observer: record,
    sendError(r, error) {
      // A body cut for its size failed the upstream request: say why.
      sendError(r, 'openai', body?.overflowed ? tooLarge(service) : error);
    },
    vetResponse(status, responseHeaders) {
      // The host's credential was refused: a 401 would make Claude Code's MCP client start OAuth
      // discovery, and no client in the container can fix the host's token anyway.
      if (status === 401) return new GatewayError('upstream_failed', `service ${service.name} refused the gateway's credential (401)`);
      if (!service.stream && String(responseHeaders['content-type'] ?? '').startsWith('text/event-stream'))
        return new GatewayError('upstream_failed', `service ${service.name} answered with an event stream, which its configuration does not allow`);
      return undefined;
    },
    rewriteResponseHeaders(forClient, fromUpstream) {
      delete forClient['www-authenticate'];
      // The hop drops Set-Cookie; a service that passes the client's cookies passes the upstream's back.
      const setCookie = fromUpstream['set-cookie'];
      if (service.passClientAuth && setCookie !== undefined) forClient['set-cookie'] = setCookie;
      dropRevealingHeaders(forClient, needles);
      rewriteLocation(forClient, service, rest);
    },
  });
}

/** A redirect inside the service points back through the socket (`/svc/NAME/...`); one elsewhere is left for the client (and its egress policy). */
function rewriteLocation(headers: HeaderMap, service: Service, rest: string): void {
  const location = headers.location;
  if (typeof location !== 'string') return;
  const { origin, pathPrefix } = service.upstream;
  let target: URL;
  try {
    target = new URL(location, `${origin}${pathPrefix}${rest || '/'}`);
  } catch {
    return;
  }
  if (target.origin !== origin) return;
  if (target.pathname !== pathPrefix && !target.pathname.startsWith(`${pathPrefix}/`)) return;
  headers.location = `${SERVICE_PREFIX}${service.name}${target.pathname.slice(pathPrefix.length)}${target.search}`;
}

/**
 * A request body on its way upstream: counted, cut past the service's size limit, and cut when the
 * client stops sending for BODY_IDLE_MS (a stalled upload must not hold an upstream connection).
 */
class BoundedBody extends Transform {
  overflowed = false;
  private bytes = 0;
  private readonly limit: number;
  private readonly count: (n: number) => void;
  private readonly idle: NodeJS.Timeout;

  constructor(limit: number, count: (n: number) => void) {
    super();
    this.limit = limit;
    this.count = count;
    this.idle = setTimeout(() => this.destroy(new Error('request body stalled')), BODY_IDLE_MS);
    this.idle.unref();
    this.once('close', () => clearTimeout(this.idle));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) {
      this.overflowed = true;
      callback(new Error('request body too large'));
      return;
    }
    this.idle.refresh();
    this.count(chunk.length);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    clearTimeout(this.idle);
    callback();
  }
}

/** One call to a service: its audit record (service, method, path, status, bytes, latency) and the key's use of the service. */
class ServiceExchange extends Exchange {
  private readonly call: ServiceCall;
  private readonly service: string | undefined;
  private redactor: StreamRedactor | undefined;
  private streamed = false;
  private use: ServiceUse | undefined;

  constructor(call: ServiceCall, req: IncomingMessage, res: ServerResponse, path: string, started: number, service: string | undefined) {
    super(call.key, req, res, path, started, ['x-request-id', 'request-id']);
    this.call = call;
    this.service = service;
  }

  /** Counts the call against the key's rate and concurrency on the service, or refuses it (429). */
  open(service: Service, uses: Map<string, ServiceUse>): void {
    let use = uses.get(service.name);
    if (!use) {
      use = { window: new RateWindow(), open: 0 };
      uses.set(service.name, use);
    }
    if (use.open >= service.maxConcurrent) {
      throw new GatewayError('rate_limited', `service ${service.name}: ${service.maxConcurrent} requests of this key are open already`, { 'retry-after': '1' });
    }
    if (service.rpm !== undefined) {
      const { waitMs } = use.window.check({ rpm: service.rpm });
      if (waitMs > 0) {
        throw new GatewayError('rate_limited', `service ${service.name}: ${service.rpm} requests per minute per key`, {
          'retry-after': String(Math.ceil(waitMs / 1000)),
        });
      }
      // Only a limited service keeps a minute of timestamps: an unlimited one would hold one per request.
      use.window.startRequest();
    }
    use.open++;
    this.use = use;
    this.redactor = new StreamRedactor(service.credential!.needleBytes);
  }

  override onResponseStart(status: number, headers: Record<string, string | string[] | undefined>): void {
    super.onResponseStart(status, headers);
    this.streamed = String(headers['content-type'] ?? '').startsWith('text/event-stream');
  }

  override onResponseData(chunk: Buffer): Buffer {
    return super.onResponseData(this.redactor ? this.redactor.push(chunk) : chunk);
  }

  onResponseTail(): Buffer | undefined {
    const tail = this.redactor?.flush();
    if (tail) this.responseBytes += tail.length;
    return tail;
  }

  protected report(fields: ExchangeFields): void {
    if (this.use) this.use.open--;
    this.use = undefined;
    this.call.onCall({
      ...fields,
      dialect: 'service',
      endpoint: 'service',
      upstream: this.service,
      attempts: fields.outcome === 'rejected' ? 0 : 1,
      stream: this.streamed,
      costUsd: 0,
    });
  }
}
