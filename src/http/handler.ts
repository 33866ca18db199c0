// The HTTP request handler shared by every key's socket: attribute the request to its key, route it,
// check the key's limits, swap the client's credential for the real one, relay it upstream, and
// meter what comes back.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { AttemptPlan, isRetryableError, isRetryableStatus, retryAfterMs, type Attempt, type Health, type RetryPolicy } from '../upstream/retry.ts';
import type { BodyHold, BodyMemory } from './body-memory.ts';
import { isJsonContentType, readBody } from './body.ts';
import type { CallRecord } from '../metering/call-record.ts';
import { ClientGone, GatewayError, sendError } from '../wire/errors.ts';
import { RequestFieldsReader, type RequestFields } from '../wire/request-fields.ts';
import { Exchange, type ExchangeFields } from './exchange.ts';
import { headersForUpstream, type HeaderMap } from '../wire/headers.ts';
import { replaceTopLevelString, setTopLevelField } from '../wire/json-splice.ts';
import type { KeyRecord } from '../keys/store.ts';
import type { Accounting, Admission, KeyAccount } from '../metering/accounting.ts';
import type { KeyLimits } from '../keys/limits.ts';
import { askForStreamUsage, UsageChunkRemover } from '../metering/include-usage.ts';
import { checkServerTools, serverToolPolicy, worstCaseUses, type ToolUses } from '../metering/server-tools.ts';
import { createUsageMeter, ZERO_USAGE, type MeteredUsage, type UsageMeter } from '../metering/usage.ts';
import type { Router } from '../upstream/router.ts';
import type { Refusals } from '../metering/refusals.ts';
import { authenticate } from '../upstream/providers.ts';
import { relay, type EarlyFailure } from '../upstream/relay.ts';
import { dialectOf } from '../wire/dialect.ts';
import { resolveRoute, type Route } from '../wire/endpoints.ts';

/** Where calls go right now; replaced as a whole on reconfiguration. */
export interface Routing {
  router: Router;
  health: Health;
  retry: RetryPolicy;
}

/** One request a path handler serves: the key it came on, that key's limits, and where its record goes. */
interface PathCall {
  key: KeyRecord;
  limits: KeyLimits;
  onCall(record: CallRecord): void;
}

/**
 * A path outside the provider endpoints, served on the same socket by a handler the composition root
 * gives (gateway.ts passes the GitHub relay's), so this module knows none of them.
 */
export interface PathHandler {
  matches(path: string): boolean;
  /** Answers the request and reports exactly one record through `call.onCall`. */
  handle(call: PathCall, req: IncomingMessage, res: ServerResponse, started: number): void;
}

export interface ProxyContext {
  keyOf(socket: Socket): KeyRecord | undefined;
  routing(): Routing;
  accounting: Accounting;
  maxBodyBytes: number;
  /** Request-body bytes held at once, in all and per key. */
  bodyMemory: BodyMemory;
  timeouts: { clientBodyIdleMs: number };
  /** Each key's refusals in the last minute: over its limit, a key is refused before anything is read. */
  refusals: Refusals;
  onCall(record: CallRecord): void;
  onInternalError(error: unknown): void;
  /** Paths served by something other than the LLM relay (git and the GitHub API), tried in order. */
  pathHandlers?: readonly PathHandler[];
  /** Server tool classes per group, on top of each key's `serverTools`. */
  groupServerTools?(): Record<string, readonly string[]>;
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

  // A key over its refusal rate is answered at once: no body read, no parse, connection closed.
  const overRefused = context.refusals.check(key.id, account.limits.maxRefusalsPerMinute);
  if (overRefused) {
    const refused = new CallTracker(context, key, req, res, path, started);
    const dialect = dialectOf(path, req.headers);
    res.shouldKeepAlive = false;
    sendError(res, dialect, overRefused);
    return refused.finish('rejected', overRefused.statusFor(dialect), overRefused);
  }

  // Claude Code's connectivity probe: answered here, it never needs the upstream. The key id (not a
  // secret: the socket is the capability) lets a second shim see that its port already serves this key.
  if (path === '/api/hello' && (method === 'HEAD' || method === 'GET')) {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2, 'x-gateway-key': key.id });
    res.end(method === 'HEAD' ? undefined : '{}');
    return;
  }

  const other = context.pathHandlers?.find((handler) => handler.matches(path));
  if (other) return other.handle({ key, limits: account.limits, onCall: context.onCall }, req, res, started);

  const call = new CallTracker(context, key, req, res, path, started);
  try {
    const route = resolveRoute(method, path, req.headers, url);
    call.route = route;
    context.accounting.admitRate(account, key.inFlight - 1);
    let body: Buffer | null = null;
    let model: string | undefined;
    let fields: RequestFields | undefined;
    let serverToolUses: ToolUses | undefined;
    if (route.hasBody) {
      if (!isJsonContentType(req.headers['content-type'])) {
        throw new GatewayError('unsupported_media_type', 'request body must be JSON (content-type: application/json)');
      }
      const reader = new RequestFieldsReader();
      call.bodyHold = context.bodyMemory.hold(key.id);
      const limit = Math.min(context.maxBodyBytes, account.limits.maxBodyBytes ?? Infinity);
      body = await readBody(req, limit, context.timeouts.clientBodyIdleMs, { hold: call.bodyHold, reader });
      fields = reader.finish();
      serverToolUses = worstCaseUses(
        checkServerTools(route.endpoint, fields, serverToolPolicy(account.limits.serverTools, key.group, context.groupServerTools?.())),
      );
      if (route.endpoint === 'responses' && fields.background) {
        // Answered later by id, billed by the provider outside any call the gateway sees.
        throw new GatewayError(
          'invalid_request',
          "`background: true` is not supported through this gateway: a background response runs and is billed after the call ends, where its cost cannot be metered against this key's budget; send the request without `background`",
        );
      }
      model = fields.model;
      call.requestBytes = body.length;
      call.model = model;
      call.stream = fields.stream;
      call.drainOnClientClose = !fields.stream && DRAINED.has(route.endpoint);
      // A search model searches on every call; chat usage does not count it.
      call.chatWebSearch = fields.webSearchOptions && route.endpoint === 'chat_completions';
      if (route.endpoint === 'chat_completions') {
        const asked = askForStreamUsage(body, fields);
        if (asked) {
          body = asked;
          call.usageChunkRemover = new UsageChunkRemover();
        }
      }
    }
    const routing = context.routing();
    const candidates = routing.router.candidates(route.dialect, model);
    if (res.destroyed) return call.finish('client_closed', 0);
    // A call waiting for budget leaves the queue when its client hangs up.
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    call.admission = await context.accounting.admit(
      account,
      {
        endpoint: route.endpoint,
        model,
        billedModels: candidates.map((candidate) => candidate.model ?? model),
        maxOutputTokens: fields?.maxOutputTokens,
        outputLimitField: fields?.outputLimitField,
        choices: fields?.choices ?? 1,
        thinkingBudgetTokens: fields?.thinkingBudgetTokens,
        serviceTier: fields?.serviceTier,
        inputBytes: fields?.inputBytes ?? 0,
        serverToolUses,
      },
      gone.signal,
    );
    const { clamp } = call.admission;
    if (clamp && body) body = setTopLevelField(body, clamp.field, String(clamp.value)) ?? body;
    if (res.destroyed) return call.finish('client_closed', 0);
    const plan = new AttemptPlan(candidates, routing.health, routing.retry);
    sendAttempt({ plan, attempt: plan.first(), call, method, url, model, body, headers: headersForUpstream(req.headers), res });
  } catch (error) {
    if (error instanceof ClientGone) return; // reported as client_closed when the response closes
    if (!(error instanceof GatewayError)) throw error;
    // A refusal does not drain a body it never read: the connection closes instead.
    if (error.headers.connection === 'close' || hasUnreadBody(req)) res.shouldKeepAlive = false;
    const dialect = call.route?.dialect ?? dialectOf(path, req.headers);
    sendError(res, dialect, error);
    call.finish('rejected', error.statusFor(dialect), error);
  }
}

function hasUnreadBody(req: IncomingMessage): boolean {
  if (req.complete) return false;
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

interface AttemptContext {
  plan: AttemptPlan;
  attempt: Attempt;
  call: CallTracker;
  method: string;
  url: string;
  model: string | undefined;
  body: Buffer | null;
  headers: HeaderMap;
  res: ServerResponse;
}

/**
 * Sends one attempt upstream. A failure before the client saw a byte may be taken over by the
 * plan: the next attempt then goes out after its backoff, to another credential or fallback.
 */
function sendAttempt(context: AttemptContext): void {
  const { plan, attempt, call, res } = context;
  const { upstream, model: rename } = attempt.candidate;
  const headers = { ...context.headers };
  let body = context.body;
  try {
    authenticate(upstream, attempt.credential, headers);
  } catch (error) {
    if (!(error instanceof GatewayError)) throw error;
    sendError(res, upstream.dialect, error);
    call.finish('rejected', error.statusFor(upstream.dialect), error);
    return;
  }
  if (body && rename !== undefined && rename !== context.model) body = replaceTopLevelString(body, 'model', rename) ?? body;
  if (body) headers['content-length'] = String(body.length);
  call.upstream = upstream.name;
  call.upstreamModel = rename;
  call.attempts = attempt.number;
  call.relayed = relay({
    upstream,
    method: context.method,
    pathAndQuery: context.url,
    headers,
    body,
    res,
    observer: call,
    drainOnClientClose: call.drainOnClientClose,
    onAnswered: (status) => {
      if (status < 300) plan.succeeded(attempt);
    },
    takeOver(failure: EarlyFailure) {
      const retryable = 'status' in failure ? isRetryableStatus(failure.status) : isRetryableError(failure.error);
      if (!retryable) return false;
      const next =
        'status' in failure ? plan.retry(attempt, failure.status, retryAfterMs(failure.headers['retry-after'])) : plan.retry(attempt, undefined, undefined);
      if (!next || res.destroyed) return false;
      setTimeout(() => {
        if (!res.destroyed) sendAttempt({ ...context, attempt: next.attempt });
      }, next.delayMs);
      return true;
    },
  });
}

/**
 * LLM calls read to their end when the client hangs up (non-streaming only): the provider bills them
 * anyway. count_tokens and models cost nothing.
 */
const DRAINED: ReadonlySet<Route['endpoint']> = new Set(['messages', 'chat_completions', 'responses']);

/** Follows one LLM call from arrival to its last byte, meters it, and reports it once. */
class CallTracker extends Exchange {
  route: Route | undefined;
  model: string | undefined;
  stream = false;
  drainOnClientClose = false;
  chatWebSearch = false;
  admission: Admission | undefined;
  usageChunkRemover: UsageChunkRemover | undefined;
  bodyHold: BodyHold | undefined;
  upstream: string | undefined;
  upstreamModel: string | undefined;
  attempts = 0;
  private meter: UsageMeter | undefined;
  private readonly context: ProxyContext;

  constructor(context: ProxyContext, key: KeyRecord, req: IncomingMessage, res: ServerResponse, path: string, started: number) {
    super(key, req, res, path, started, ['request-id', 'x-request-id']);
    this.context = context;
  }

  override onResponseStart(status: number, headers: Record<string, string | string[] | undefined>): void {
    super.onResponseStart(status, headers);
    if (status >= 200 && status < 300 && this.route) {
      const streaming = String(headers['content-type'] ?? '').startsWith('text/event-stream');
      this.meter = createUsageMeter(this.route.endpoint, streaming);
      if (!streaming) this.usageChunkRemover = undefined;
    } else {
      this.usageChunkRemover = undefined;
    }
  }

  override onResponseData(chunk: Buffer): Buffer {
    this.meter?.push(chunk);
    return super.onResponseData(this.usageChunkRemover ? this.usageChunkRemover.push(chunk) : chunk);
  }

  onResponseTail(): Buffer | undefined {
    return this.usageChunkRemover?.flush();
  }

  protected report(fields: ExchangeFields): void {
    // The call is over: undici and the retry plan no longer hold its body.
    this.bodyHold?.release();
    const settlement = this.admission?.settle(this.metered(fields), this.upstreamModel ?? this.model);
    const usage = settlement?.usage;
    const session = this.req.headers['x-claude-code-session-id'] ?? this.req.headers['x-session-id'];
    this.context.onCall({
      ...fields,
      sessionId: Array.isArray(session) ? session[0] : session,
      dialect: this.route?.dialect,
      endpoint: this.route?.endpoint,
      model: this.model,
      upstream: this.upstream,
      upstreamModel: this.upstreamModel,
      attempts: this.attempts,
      stream: this.stream,
      inputTokens: usage?.inputTokens,
      outputTokens: usage?.outputTokens,
      cacheWriteTokens: usage?.cacheWriteTokens,
      cacheWrite1hTokens: usage?.cacheWrite1hTokens,
      cacheReadTokens: usage?.cacheReadTokens,
      reasoningTokens: usage?.reasoningTokens,
      webSearchRequests: usage?.webSearchRequests || undefined,
      webFetchRequests: usage?.webFetchRequests || undefined,
      usageReported: settlement?.usageReported,
      costUsd: settlement?.costUsd ?? 0,
      priceSource: settlement?.priceSource,
      priceEntry: settlement?.priceEntry,
      reservedUsd: this.admission?.estimateUsd,
      clampedMaxTokens: this.admission?.clamp?.value,
    });
  }

  /** What to charge: the usage seen, with the rules for calls the client abandoned. */
  private metered(fields: ExchangeFields): MeteredUsage | undefined {
    let metered = this.meter?.result();
    if (metered && this.chatWebSearch && fields.status < 300)
      metered = { ...metered, usage: { ...metered.usage, webSearchRequests: Math.max(1, metered.usage.webSearchRequests) } };
    // A non-streaming call the client abandoned was drained to its end: what the provider reported
    // is charged. When it reported nothing (the upstream failed or timed out after taking the
    // call), the input it was sent is charged, estimated (the provider may bill it); an error
    // status is not billed.
    if (!metered && this.relayed?.drained() && fields.status < 300) metered = { usage: { ...ZERO_USAGE }, reported: false };
    return metered;
  }
}
