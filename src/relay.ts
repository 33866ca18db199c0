// Relays one request upstream and its response back, chunk by chunk, with back-pressure in both
// directions. Built on undici's dispatch handler: no intermediate streams, so each SSE event is
// written to the client the moment it arrives, and every chunk can be observed for metering.
import type { ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import { GatewayError, sendError, streamErrorEvent } from './errors.ts';
import { headersForClient, type HeaderMap } from './headers.ts';
import type { Upstream } from './providers.ts';

export type RelayOutcome = 'complete' | 'client_closed' | 'upstream_failed';

/** Watches a response go by (metering, audit). Must not throw and must not hold chunks long. */
export interface ResponseObserver {
  onResponseStart?(status: number, headers: Record<string, string | string[] | undefined>): void;
  /** Sees each chunk and returns what to forward: the chunk itself, unless the stream is being edited. */
  onResponseData?(chunk: Buffer): Buffer;
  /** Bytes held back by an edit, forwarded when the upstream ends. */
  onResponseTail?(): Buffer | undefined;
  onResponseEnd(outcome: RelayOutcome, status: number, error?: GatewayError): void;
}

export interface RelayRequest {
  upstream: Upstream;
  method: string;
  /** Path and query as the client sent them. */
  pathAndQuery: string;
  headers: HeaderMap;
  body: Buffer | null;
  res: ServerResponse;
  observer: ResponseObserver;
  timeouts: { firstByteMs: number; idleMs: number };
}

class ClientClosed extends Error {}

export function relay(dispatcher: Dispatcher, request: RelayRequest): void {
  const handler = new RelayHandler(request);
  dispatcher.dispatch(
    {
      origin: request.upstream.origin,
      path: request.upstream.pathPrefix + request.pathAndQuery,
      method: request.method as Dispatcher.HttpMethod,
      headers: request.headers,
      body: request.body,
      headersTimeout: request.timeouts.firstByteMs,
      bodyTimeout: request.timeouts.idleMs,
    },
    handler,
  );
}

class RelayHandler implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private status = 0;
  private streaming = false;
  private finished = false;
  private readonly request: RelayRequest;
  private readonly resume = () => this.controller?.resume();

  constructor(request: RelayRequest) {
    this.request = request;
    request.res.once('close', () => {
      if (!this.finished) this.controller?.abort(new ClientClosed('client closed the connection'));
    });
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.request.res.destroyed) controller.abort(new ClientClosed('client closed the connection'));
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    if (statusCode < 200) return; // 1xx informational: not forwarded
    const { res, observer } = this.request;
    this.status = statusCode;
    this.streaming = String(headers['content-type'] ?? '').startsWith('text/event-stream');
    observer.onResponseStart?.(statusCode, headers);
    res.writeHead(statusCode, headersForClient(headers));
    // An event stream's headers go out at once: the client starts its clock on them.
    if (this.streaming) res.flushHeaders();
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    const out = this.request.observer.onResponseData?.(chunk) ?? chunk;
    if (out.length > 0 && !this.request.res.write(out)) {
      controller.pause();
      this.request.res.once('drain', this.resume);
    }
  }

  onResponseEnd(): void {
    this.finished = true;
    const tail = this.request.observer.onResponseTail?.();
    this.request.res.end(tail?.length ? tail : undefined);
    this.request.observer.onResponseEnd('complete', this.status);
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.finished = true;
    const { res, observer, upstream } = this.request;
    if (error instanceof ClientClosed) {
      observer.onResponseEnd('client_closed', this.status);
      return;
    }
    const failure = describeUpstreamError(upstream.kind, error, res.headersSent);
    if (!res.headersSent) {
      sendError(res, upstream.kind, failure);
      observer.onResponseEnd('upstream_failed', failure.statusFor(upstream.kind), failure);
    } else if (this.streaming) {
      // Mid-stream: end the stream with an error event the client's SDK understands.
      res.end(streamErrorEvent(upstream.kind, failure.message));
      observer.onResponseEnd('upstream_failed', this.status, failure);
    } else {
      res.destroy();
      observer.onResponseEnd('upstream_failed', this.status, failure);
    }
  }
}

/** Turns an undici error into a message that names what failed, never a URL or credential. */
function describeUpstreamError(kind: string, error: Error, midResponse: boolean): GatewayError {
  const code = (error as { code?: string }).code ?? error.name;
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
      return new GatewayError('upstream_timeout', `${kind} upstream did not answer in time`);
    case 'UND_ERR_BODY_TIMEOUT':
      return new GatewayError('upstream_timeout', `${kind} upstream stalled mid-response`);
    default:
      return midResponse
        ? new GatewayError('upstream_failed', `${kind} upstream connection failed mid-response (${code})`)
        : new GatewayError('upstream_unreachable', `${kind} upstream unreachable (${code})`);
  }
}
