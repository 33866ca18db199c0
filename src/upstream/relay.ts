// Relays one request upstream and its response back, chunk by chunk, with back-pressure in both
// directions. Built on undici's dispatch handler: no intermediate streams, so each SSE event is
// written to the client the moment it arrives, and every chunk can be observed for metering.
import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { type ErrorShape, GatewayError, sendError, streamErrorEvent } from '../wire/errors.ts';
import { headersForClient, type HeaderMap } from '../wire/headers.ts';
import { isStreamType } from './claude-response.ts';
import { upstreamPath, type Upstream } from './providers.ts';

export type RelayOutcome = 'complete' | 'client_closed' | 'upstream_failed';

type ResponseHeaders = Record<string, string | string[] | undefined>;

/** Watches a response go by (metering, audit). Must not throw and must not hold chunks long. */
export interface ResponseObserver {
  onResponseStart?(status: number, headers: ResponseHeaders): void;
  /** Sees each chunk and returns what to forward: the chunk itself, unless the stream is being edited. */
  onResponseData?(chunk: Buffer): Buffer;
  /** Bytes held back by an edit, forwarded when the upstream ends. */
  onResponseTail?(): Buffer | undefined;
  onResponseEnd(outcome: RelayOutcome, status: number, error?: GatewayError): void;
}

/** What failed before anything was sent to the client: an upstream status, or a connection error. */
export type EarlyFailure = { status: number; headers: ResponseHeaders } | { error: Error };

export interface RelayRequest {
  upstream: Upstream;
  method: string;
  /** Path and query as the client sent them. */
  pathAndQuery: string;
  headers: HeaderMap;
  /**
   * The whole body (in one Buffer or in chunks, sent in order), or a stream relayed as it arrives
   * (git packfiles: never buffered).
   */
  body: Buffer | readonly Buffer[] | Readable | null;
  res: ServerResponse;
  /** Answers the gateway's own errors in another shape than the upstream's dialect (git, GitHub). */
  sendError?(res: ServerResponse, error: GatewayError): void;
  /** The client's error shape when it differs from the upstream's dialect (Claude's cloud formats). */
  errorShape?: ErrorShape;
  /** What ends a client's stream when the upstream fails mid-way, when not the dialect's SSE error event. */
  streamErrorEvent?(message: string): Buffer;
  /**
   * Edits the response headers before they go back (drops `www-authenticate`, which would make git
   * prompt); `upstream` is the response's own, before the hop's filter (Set-Cookie included).
   */
  rewriteResponseHeaders?(headers: HeaderMap, upstream: ResponseHeaders): void;
  /**
   * Looks at the upstream's answer before the client sees any of it: an error returned is answered
   * instead (in the request's error shape) and the upstream response is abandoned.
   */
  vetResponse?(status: number, headers: ResponseHeaders): GatewayError | undefined;
  observer: ResponseObserver;
  /**
   * Offered every failure that happens before the client has seen a byte. Returning true takes the
   * failure over (a retry elsewhere): this relay then ends quietly without answering the client.
   */
  takeOver?(failure: EarlyFailure): boolean;
  /** A 2xx (or a final answer) arrived: the attempt worked. */
  onAnswered?(status: number): void;
  /**
   * When the client hangs up before a response that is not an event stream is complete, keep
   * reading it to its end (bounded by the upstream timeouts) instead of aborting: the provider runs
   * and bills the call anyway, so the observer meters what it reports. Nothing more is written to
   * the client, and the observer's onResponseEnd says `client_closed`. A cut event stream stops the
   * provider generating, so streams are always aborted.
   */
  drainOnClientClose?: boolean;
}

/** The relay of one attempt, as its exchange sees it. */
export interface RelayControl {
  /** True while a client hang-up would leave this relay draining the upstream (see drainOnClientClose). */
  drainsOnClientClose(): boolean;
  /** The client left and this relay read (or is reading) the upstream response to its end. */
  drained(): boolean;
}

class ClientClosed extends Error {}
class TakenOver extends Error {}
class TotalTimeout extends Error {}

export function relay(request: RelayRequest): RelayControl {
  const { upstream } = request;
  const handler = new RelayHandler(request);
  upstream.dispatcher.dispatch(
    {
      origin: upstream.origin,
      path: upstreamPath(upstream, request.pathAndQuery),
      method: request.method as Dispatcher.HttpMethod,
      headers: request.headers,
      // undici sends any iterable, chunk by chunk (its types name only the single forms).
      body: request.body as Buffer | Readable | null,
      headersTimeout: upstream.timeouts.firstByteMs,
      bodyTimeout: upstream.timeouts.idleMs,
    },
    handler,
  );
  return handler;
}

class RelayHandler implements Dispatcher.DispatchHandler, RelayControl {
  private controller: Dispatcher.DispatchController | undefined;
  private status = 0;
  private streaming = false;
  private finished = false;
  private abandoned = false;
  /** The client left; the upstream response is read to its end for metering only. */
  private draining = false;
  private readonly request: RelayRequest;
  private readonly resume = () => this.controller?.resume();
  private readonly totalTimer: NodeJS.Timeout | undefined;

  constructor(request: RelayRequest) {
    this.request = request;
    request.res.once('close', () => {
      if (this.finished) return;
      if (this.drainsOnClientClose()) this.draining = true;
      else this.controller?.abort(new ClientClosed('client closed the connection'));
    });
    const { totalMs } = request.upstream.timeouts;
    if (totalMs !== undefined) {
      this.totalTimer = setTimeout(() => this.controller?.abort(new TotalTimeout('the call took too long')), totalMs);
    }
  }

  drainsOnClientClose(): boolean {
    return this.request.drainOnClientClose === true && !this.finished && !this.streaming;
  }

  drained(): boolean {
    return this.draining;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.request.res.destroyed) controller.abort(new ClientClosed('client closed the connection'));
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: ResponseHeaders): void {
    if (statusCode < 200) return; // 1xx informational: not forwarded
    const { res, observer } = this.request;
    if (statusCode >= 300 && !this.draining && this.request.takeOver?.({ status: statusCode, headers })) {
      this.abandoned = true;
      controller.abort(new TakenOver('retried elsewhere'));
      return;
    }
    const refusal = this.draining ? undefined : this.request.vetResponse?.(statusCode, headers);
    if (refusal) {
      this.abandoned = true;
      controller.abort(new TakenOver('answered by the gateway'));
      observer.onResponseStart?.(statusCode, headers);
      this.answerError(refusal);
      return;
    }
    this.request.onAnswered?.(statusCode);
    this.status = statusCode;
    this.streaming = isStreamType(String(headers['content-type'] ?? ''));
    observer.onResponseStart?.(statusCode, headers);
    if (this.draining) return;
    const forClient = headersForClient(headers);
    this.request.rewriteResponseHeaders?.(forClient, headers);
    res.writeHead(statusCode, forClient);
    // An event stream's headers go out at once: the client starts its clock on them.
    if (this.streaming) res.flushHeaders();
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.abandoned) return;
    const out = this.request.observer.onResponseData?.(chunk) ?? chunk;
    if (this.draining) return;
    if (out.length > 0 && !this.request.res.write(out)) {
      controller.pause();
      this.request.res.once('drain', this.resume);
    }
  }

  onResponseEnd(): void {
    this.done();
    if (this.abandoned) return;
    if (this.draining) {
      this.request.observer.onResponseEnd('client_closed', this.status);
      return;
    }
    const tail = this.request.observer.onResponseTail?.();
    this.request.res.end(tail?.length ? tail : undefined);
    this.request.observer.onResponseEnd('complete', this.status);
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.done();
    if (this.abandoned || error instanceof TakenOver) return;
    const { res, observer, upstream } = this.request;
    if (error instanceof ClientClosed || this.draining) {
      observer.onResponseEnd('client_closed', this.status);
      return;
    }
    if (!res.headersSent && !(error instanceof TotalTimeout) && this.request.takeOver?.({ error })) return;
    const failure = describeUpstreamError(upstream, error, res.headersSent);
    if (!res.headersSent) {
      this.answerError(failure);
    } else if (this.streaming && !this.request.sendError) {
      // Mid-stream: end the stream with an error event the LLM client's SDK understands (other
      // streams, an MCP server's, have no such event: they are cut).
      res.end(this.request.streamErrorEvent?.(failure.message) ?? streamErrorEvent(upstream.dialect, failure.message));
      observer.onResponseEnd('upstream_failed', this.status, failure);
    } else {
      res.destroy();
      observer.onResponseEnd('upstream_failed', this.status, failure);
    }
  }

  /** Answers the client with a gateway error (nothing was sent yet) and ends the exchange. */
  private answerError(failure: GatewayError): void {
    const { res, observer, upstream } = this.request;
    const shape = this.request.errorShape ?? upstream.dialect;
    if (this.request.sendError) this.request.sendError(res, failure);
    else sendError(res, shape, failure);
    observer.onResponseEnd('upstream_failed', failure.statusFor(shape), failure);
  }

  private done(): void {
    this.finished = true;
    clearTimeout(this.totalTimer);
  }
}

/** Turns an undici error into a message that names what failed, never a URL or credential. */
function describeUpstreamError(upstream: Upstream, error: Error, midResponse: boolean): GatewayError {
  const code = (error as { code?: string }).code ?? error.name;
  const name = upstream.name;
  if (error instanceof TotalTimeout) return new GatewayError('upstream_timeout', `${name} upstream call exceeded its total time limit`);
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
      return new GatewayError('upstream_timeout', `${name} upstream did not answer in time`);
    case 'UND_ERR_BODY_TIMEOUT':
      return new GatewayError('upstream_timeout', `${name} upstream stalled mid-response`);
    case 'UND_ERR_CONNECT_TIMEOUT':
      return new GatewayError('upstream_timeout', `${name} upstream did not accept a connection in time`);
    default:
      return midResponse
        ? new GatewayError('upstream_failed', `${name} upstream connection failed mid-response (${code})`)
        : new GatewayError('upstream_unreachable', `${name} upstream unreachable (${code})`);
  }
}
