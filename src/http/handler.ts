// The HTTP request handler shared by every key's socket: attribute the request to its key, route it,
// check the key's limits, swap the client's credential for the real one, relay it upstream, and
// meter what comes back.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { KeyLimits } from '../keys/limits.ts';
import type { KeyRecord } from '../keys/store.ts';
import type { Accounting, Admission, KeyAccount } from '../metering/accounting.ts';
import type { CallRecord } from '../metering/call-record.ts';
import { askForStreamUsage, UsageChunkRemover } from '../metering/include-usage.ts';
import type { Refusals } from '../metering/refusals.ts';
import { checkServerTools, type HostAllowed, serverToolPolicy, type ToolUses, worstCaseUses } from '../metering/server-tools.ts';
import { createUsageMeter, type MeteredUsage, type UsageMeter, ZERO_USAGE } from '../metering/usage.ts';
import { type AttemptObserver, CallAttempts } from '../upstream/attempts.ts';
import type { RelayControl } from '../upstream/relay.ts';
import type { Attempt, Health, RetryPolicy } from '../upstream/retry.ts';
import type { Candidate, Router } from '../upstream/router.ts';
import { type ClaudeCall, upstreamModelId } from '../upstream/claude-request.ts';
import { isStreamType, type StreamTranslation, streamTranslation } from '../upstream/claude-response.ts';
import { BodyBytes } from '../wire/body-bytes.ts';
import { canonicalClaudeModel } from '../wire/claude-models.ts';
import type { Dialect } from '../wire/dialect.ts';
import { errorShapeOf, resolveRoute, type Route } from '../wire/endpoints.ts';
import { ClientGone, type ErrorShape, GatewayError, sendError, streamErrorEvent } from '../wire/errors.ts';
import { type HeaderMap, headersForUpstream } from '../wire/headers.ts';
import { setTopLevelField } from '../wire/json-splice.ts';
import { type RequestFields, RequestFieldsReader } from '../wire/request-fields.ts';
import type { BodyHold, BodyMemory } from './body-memory.ts';
import { isJsonContentType, readBody } from './body.ts';
import { Exchange, type ExchangeFields } from './exchange.ts';
import { localModel, localModelList, ModelListFilter } from './model-list.ts';
import { isGlob } from '../util/glob.ts';

/** Where calls go right now; replaced as a whole on reconfiguration. */
export interface Routing {
  router: Router;
  health: Health;
  retry: RetryPolicy;
}

/** One request a path handler serves: its request line, the key it came on, that key's limits, and where its record goes. */
interface PathCall {
  line: RequestLine;
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
  /** The key's egress policy, group's applied: server tools that fetch only hosts it allows pass. */
  egressAllows?(key: KeyRecord): HostAllowed | undefined;
}

export function createRequestHandler(context: ProxyContext) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const key = context.keyOf(req.socket);
    const account = key && !key.revoked ? context.accounting.get(key.id) : undefined;
    if (!key || !account) {
      res.shouldKeepAlive = false;
      sendError(res, errorShapeOf(req.url ?? '/', req.headers), new GatewayError('key_revoked', 'this key has been revoked or has expired'));
      return;
    }
    handle(context, key, account, req, res).catch((error: unknown) => {
      context.onInternalError(error);
      sendError(res, errorShapeOf(req.url ?? '/', req.headers), new GatewayError('upstream_failed', 'internal gateway error'));
    });
  };
}

/** The request line, as the steps below (and the path handlers) read it. */
export interface RequestLine {
  url: string;
  path: string;
  /** What follows the `?`, without it ('' when none). */
  query: string;
  method: string;
}

/** One request, step by step: every refusal is thrown as a GatewayError and answered in one place. */
async function handle(context: ProxyContext, key: KeyRecord, account: KeyAccount, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = performance.now();
  const line = requestLine(req);
  if (refusedFast(context, key, account, line, req, res, started)) return;
  if (answeredProbe(key, line, res)) return;
  const other = context.pathHandlers?.find((handler) => handler.matches(line.path));
  if (other) return other.handle({ line, key, limits: account.limits, onCall: context.onCall }, req, res, started);

  const call = new CallTracker(context, key, req, res, line.path, started);
  try {
    const route = routeCall(context, account, key, line, req, call);
    let body: BodyBytes | null = null;
    let fields: RequestFields | undefined;
    let serverToolUses: ToolUses | undefined;
    if (route.hasBody) {
      ({ body, fields } = await readRequest(context, key, account, req, call));
      // The cloud formats name the model and streaming in the path.
      if (route.cloud) fields = { ...fields, model: route.cloud.model ?? fields.model, stream: route.cloud.stream };
      serverToolUses = checkPolicy(context, key, account, route, fields);
      body = call.parsed(fields, body);
    }
    const claude = claudeCall(route, fields);
    const routing = context.routing();
    const candidates = routing.router.candidates(route.dialect, fields?.model, claude);
    if (res.destroyed) return call.finish('client_closed', 0);
    if (route.endpoint === 'models' && route.dialect === 'anthropic' && discoverModels(context, account, line, candidates, res, call)) return;
    const admission = await admit(context, account, route, fields, serverToolUses, candidates, res, claude);
    call.admitted(admission);
    const { clamp } = admission;
    if (clamp && body) body = body.edit((whole) => setTopLevelField(whole, clamp.field, String(clamp.value)));
    if (res.destroyed) return call.finish('client_closed', 0);
    new CallAttempts({
      candidates,
      health: routing.health,
      retry: routing.retry,
      method: line.method,
      url: line.url,
      model: fields?.model,
      claude,
      body,
      headers: headersForUpstream(req.headers),
      res,
      drainOnClientClose: call.drainOnClientClose,
      observer: call,
    }).start();
  } catch (error) {
    if (error instanceof ClientGone) return; // reported as client_closed when the response closes
    if (!(error instanceof GatewayError)) throw error;
    // A refusal does not drain a body it never read: the connection closes instead.
    if (error.headers.connection === 'close' || hasUnreadBody(req)) res.shouldKeepAlive = false;
    sendError(res, call.errorShape, error);
    call.finish('rejected', error.statusFor(call.errorShape), error);
  }
}

/**
 * Claude model discovery: the list shows only models the key may use (the upstream's, filtered as
 * it passes, plus route aliases); a Bedrock or Vertex upstream has no list, so the gateway makes it.
 * A single model the key may not use is not found. True when answered here.
 */
function discoverModels(
  context: ProxyContext,
  account: KeyAccount,
  line: RequestLine,
  candidates: Candidate[],
  res: ServerResponse,
  call: CallTracker,
): boolean {
  const allowed = (id: string) => context.accounting.allowsModel(account, canonicalClaudeModel(id));
  const kind = candidates[0]?.upstream.kind;
  const cloud = kind === 'bedrock' || kind === 'vertex';
  let body: Buffer;
  if (line.path !== '/v1/models') {
    const id = line.path.slice('/v1/models/'.length);
    if (!allowed(id)) throw new GatewayError('not_found', `model ${id} is not available to this key`);
    // A cloud upstream has no such path: asked there, it answers an error in its own shape.
    if (!cloud) return false;
    body = localModel(id);
  } else {
    const names = context.routing().router.names('anthropic');
    if (!cloud) {
      call.filterModels(new ModelListFilter(allowed, names));
      return false;
    }
    const literal = (globs: readonly string[] | undefined) => (globs ?? []).filter((glob) => !isGlob(glob));
    body = localModelList([...names, ...literal(account.limits.models)], allowed);
  }
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
  res.end(body);
  call.finish('complete', 200);
  return true;
}

/** A Messages or count-tokens call of a Claude client, in whichever of its formats; undefined for the others. */
function claudeCall(route: Route, fields: RequestFields | undefined): ClaudeCall | undefined {
  if (route.dialect !== 'anthropic' || (route.endpoint !== 'messages' && route.endpoint !== 'count_tokens')) return undefined;
  return { format: route.cloud?.format ?? 'anthropic', endpoint: route.endpoint, stream: fields?.stream ?? false };
}

function requestLine(req: IncomingMessage): RequestLine {
  const url = req.url ?? '/';
  const queryAt = url.indexOf('?');
  return {
    url,
    path: queryAt === -1 ? url : url.slice(0, queryAt),
    query: queryAt === -1 ? '' : url.slice(queryAt + 1),
    method: req.method ?? 'GET',
  };
}

/** A key over its refusal rate is answered at once: no body read, no parse, connection closed. */
function refusedFast(
  context: ProxyContext,
  key: KeyRecord,
  account: KeyAccount,
  line: RequestLine,
  req: IncomingMessage,
  res: ServerResponse,
  started: number,
): boolean {
  const overRefused = context.refusals.check(key.id, account.limits.maxRefusalsPerMinute);
  if (!overRefused) return false;
  const refused = new CallTracker(context, key, req, res, line.path, started);
  res.shouldKeepAlive = false;
  sendError(res, refused.errorShape, overRefused);
  refused.finish('rejected', overRefused.statusFor(refused.errorShape), overRefused);
  return true;
}

/**
 * Claude Code's connectivity probe: answered here, it never needs the upstream. The key id (not a
 * secret: the socket is the capability) lets a second shim see that its port already serves this key.
 */
function answeredProbe(key: KeyRecord, line: RequestLine, res: ServerResponse): boolean {
  const { path, method } = line;
  if (path !== '/api/hello' || (method !== 'HEAD' && method !== 'GET')) return false;
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2, 'x-gateway-key': key.id });
  res.end(method === 'HEAD' ? undefined : '{}');
  return true;
}

/** The endpoint and dialect the request names (404/405 otherwise), then the key's rate and concurrency. */
function routeCall(context: ProxyContext, account: KeyAccount, key: KeyRecord, line: RequestLine, req: IncomingMessage, call: CallTracker): Route {
  const route = resolveRoute(line.method, line.path, req.headers, line.url);
  call.routed(route);
  context.accounting.admitRate(account, key.inFlight - 1);
  return route;
}

/** Reads the JSON body (bounded, held against the memory pool) while scanning the fields that matter. */
async function readRequest(
  context: ProxyContext,
  key: KeyRecord,
  account: KeyAccount,
  req: IncomingMessage,
  call: CallTracker,
): Promise<{ body: BodyBytes; fields: RequestFields }> {
  if (!isJsonContentType(req.headers['content-type'])) {
    throw new GatewayError('unsupported_media_type', 'request body must be JSON (content-type: application/json)');
  }
  const reader = new RequestFieldsReader();
  const hold = call.holding(context.bodyMemory.hold(key.id));
  const limit = Math.min(context.maxBodyBytes, account.limits.maxBodyBytes ?? Infinity);
  const body = await readBody(req, limit, context.timeouts.clientBodyIdleMs, { hold, reader });
  return { body, fields: reader.finish() };
}

/** Server tools this key may use (their worst-case uses, for the reservation), and what no key may ask. */
function checkPolicy(context: ProxyContext, key: KeyRecord, account: KeyAccount, route: Route, fields: RequestFields): ToolUses | undefined {
  const serverToolUses = worstCaseUses(
    checkServerTools(
      route.endpoint,
      fields,
      serverToolPolicy(account.limits.serverTools, key.group, context.groupServerTools?.()),
      context.egressAllows?.(key),
    ),
  );
  if (route.endpoint === 'responses' && fields.background) {
    // Answered later by id, billed by the provider outside any call the gateway sees.
    throw new GatewayError(
      'invalid_request',
      "`background: true` is not supported through this gateway: a background response runs and is billed after the call ends, where its cost cannot be metered against this key's budget; send the request without `background`",
    );
  }
  return serverToolUses;
}

const CLIENT_CLOSED = new Error('client closed the connection');

/** Models allowed and budget reserved at the dearest candidate's price; a call waiting for budget leaves the queue when its client hangs up. */
function admit(
  context: ProxyContext,
  account: KeyAccount,
  route: Route,
  fields: RequestFields | undefined,
  serverToolUses: ToolUses | undefined,
  candidates: Candidate[],
  res: ServerResponse,
  claude: ClaudeCall | undefined,
): Promise<Admission> {
  // Made only when the call has to wait (HangUp) or its client hangs up first. With a reason given,
  // abort() builds no DOMException (with its stack): that cost 5% of a call's CPU.
  let gone: AbortController | undefined;
  const controller = () => {
    gone ??= new AbortController();
    return gone;
  };
  const onClose = () => controller().abort(CLIENT_CLOSED);
  const hangUp = () => controller().signal;
  res.once('close', onClose);
  // A key's model globs name Anthropic's names, whichever cloud spelling the client used.
  const asked = fields?.model;
  const model = claude && asked !== undefined ? canonicalClaudeModel(asked) : asked;
  // Priced as each candidate will be sent: a price configured for a cloud id applies to it.
  const billedModels = candidates.map((candidate) =>
    claude && asked !== undefined ? upstreamModelId(candidate.upstream, claude.format, asked, candidate.model) : (candidate.model ?? model),
  );
  const admission = context.accounting.admit(
    account,
    {
      endpoint: route.endpoint,
      model,
      billedModels,
      maxOutputTokens: fields?.maxOutputTokens,
      outputLimitField: fields?.outputLimitField,
      choices: fields?.choices ?? 1,
      thinkingBudgetTokens: fields?.thinkingBudgetTokens,
      serviceTier: fields?.serviceTier,
      inputBytes: fields?.inputBytes ?? 0,
      serverToolUses,
    },
    hangUp,
  );
  // Once admitted, a hang-up is the relay's to handle: an abort then would only cost an event.
  return admission.finally(() => res.off('close', onClose));
}

/** Whether the request has a body that was not read (answering it then must close the connection). */
export function hasUnreadBody(req: IncomingMessage): boolean {
  if (req.complete) return false;
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * LLM calls read to their end when the client hangs up (non-streaming only): the provider bills them
 * anyway. count_tokens and models cost nothing.
 */
const DRAINED: ReadonlySet<Route['endpoint']> = new Set(['messages', 'chat_completions', 'responses']);

/**
 * Follows one LLM call from arrival to its last byte, meters it, and reports it once. The steps of
 * the request tell it what they learned through the named methods below; nothing else writes it.
 */
class CallTracker extends Exchange implements AttemptObserver {
  private route: Route | undefined;
  private model: string | undefined;
  private stream = false;
  private drain = false;
  private chatWebSearch = false;
  private admission: Admission | undefined;
  private usageChunkRemover: UsageChunkRemover | undefined;
  /** A streamed Claude answer changing format on its way (Bedrock's event stream to SSE or back). */
  private translation: StreamTranslation | undefined;
  /** A model list being filtered down to what the key may use. */
  private modelList: ModelListFilter | undefined;
  private bodyHold: BodyHold | undefined;
  private upstream: string | undefined;
  private upstreamKind: string | undefined;
  private upstreamModel: string | undefined;
  private attempts = 0;
  private meter: UsageMeter | undefined;
  private readonly context: ProxyContext;

  constructor(context: ProxyContext, key: KeyRecord, req: IncomingMessage, res: ServerResponse, path: string, started: number) {
    super(key, req, res, path, started, ['request-id', 'x-request-id', 'x-amzn-requestid']);
    this.context = context;
  }

  /** The dialect the client spoke, once the request was routed. */
  get dialect(): Dialect | undefined {
    return this.route?.dialect;
  }

  /** How the client reads errors: its format's shape once routed, judged from the request before. */
  get errorShape(): ErrorShape {
    return this.route?.cloud?.format ?? this.route?.dialect ?? errorShapeOf(this.req.url ?? '/', this.req.headers);
  }

  /** The format the client reads a Claude answer in. */
  private get claudeFormat() {
    return this.route?.cloud?.format ?? 'anthropic';
  }

  /** Whether a client hang-up leaves the call read to its end (see RelayRequest.drainOnClientClose). */
  get drainOnClientClose(): boolean {
    return this.drain;
  }

  routed(route: Route): void {
    this.route = route;
  }

  /** The body's share of the memory pool, released when the call is reported. */
  holding(hold: BodyHold): BodyHold {
    this.bodyHold = hold;
    return hold;
  }

  /** The body was read and scanned: returns the body to send (a chat stream is asked for its usage). */
  parsed(fields: RequestFields, body: BodyBytes): BodyBytes {
    const endpoint = this.route?.endpoint;
    this.requestBytes = body.length;
    this.model = fields.model;
    this.stream = fields.stream;
    this.drain = !fields.stream && endpoint !== undefined && DRAINED.has(endpoint);
    // A search model searches on every call; chat usage does not count it.
    this.chatWebSearch = fields.webSearchOptions && endpoint === 'chat_completions';
    if (endpoint !== 'chat_completions') return body;
    const asked = askForStreamUsage(body.whole(), fields);
    if (!asked) return body;
    this.usageChunkRemover = new UsageChunkRemover();
    return BodyBytes.of(asked);
  }

  admitted(admission: Admission): void {
    this.admission = admission;
  }

  attempting(attempt: Attempt, model: string | undefined): void {
    this.upstream = attempt.candidate.upstream.name;
    this.upstreamKind = attempt.candidate.upstream.kind;
    this.upstreamModel = model ?? attempt.candidate.model;
    this.attempts = attempt.number;
  }

  filterModels(filter: ModelListFilter): void {
    this.modelList = filter;
  }

  rewriteResponseHeaders(headers: HeaderMap): void {
    this.translation?.headers(headers);
    if (this.modelList) delete headers['content-length'];
  }

  streamErrorEvent(message: string): Buffer {
    return this.translation?.errorEvent(message) ?? Buffer.from(streamErrorEvent(this.route?.dialect ?? 'anthropic', message));
  }

  relaying(control: RelayControl): void {
    this.relayed = control;
  }

  refused(status: number, error: GatewayError): void {
    this.finish('rejected', status, error);
  }

  override onResponseStart(status: number, headers: Record<string, string | string[] | undefined>): void {
    super.onResponseStart(status, headers);
    this.translation = undefined;
    if (status < 200 || status >= 300) this.modelList = undefined;
    if (status >= 200 && status < 300 && this.route) {
      const contentType = String(headers['content-type'] ?? '');
      const streaming = isStreamType(contentType);
      this.meter = createUsageMeter(this.route.endpoint, streaming);
      if (streaming && this.route.dialect === 'anthropic') this.translation = streamTranslation(contentType, this.claudeFormat);
      if (!streaming) this.usageChunkRemover = undefined;
    } else {
      this.usageChunkRemover = undefined;
    }
  }

  override onResponseData(chunk: Buffer): Buffer {
    if (this.modelList) return super.onResponseData(this.modelList.push(chunk));
    if (this.translation) {
      const { client, sse } = this.translation.push(chunk);
      this.meter?.push(sse);
      return super.onResponseData(client);
    }
    this.meter?.push(chunk);
    return super.onResponseData(this.usageChunkRemover ? this.usageChunkRemover.push(chunk) : chunk);
  }

  onResponseTail(): Buffer | undefined {
    if (this.modelList) return super.onResponseData(this.modelList.flush());
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
      upstreamKind: this.upstreamKind,
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
