// The life of one call's upstream attempts, in one place: the plan (which upstream and credential
// next), sending an attempt (credential injected, model renamed), the takeover decision when an
// attempt fails before the client saw a byte, and the backoff timer before the next one. The call's
// record is told what happens through AttemptObserver; this module knows nothing of HTTP handlers.
import type { ServerResponse } from 'node:http';
import { BodyBytes } from '../wire/body-bytes.ts';
import { type ErrorShape, GatewayError, sendError } from '../wire/errors.ts';
import type { HeaderMap } from '../wire/headers.ts';
import { replaceTopLevelString } from '../wire/json-splice.ts';
import { type ClaudeCall, claudeRequestFor, formatOfKind, upstreamModelId } from './claude-request.ts';
import { authenticate, type Credential, type OutgoingRequest, type Upstream, upstreamPath } from './providers.ts';
import { type EarlyFailure, type RelayControl, type ResponseObserver, relay } from './relay.ts';
import { type Attempt, AttemptPlan, type Health, isRetryableError, isRetryableStatus, type RetryPolicy, retryAfterMs } from './retry.ts';
import type { Candidate } from './router.ts';

/** The call's side of its attempts: it meters the responses and records which attempt served it. */
export interface AttemptObserver extends ResponseObserver {
  /** An attempt is about to go out, for `model` when that is not the client's spelling. */
  attempting(attempt: Attempt, model: string | undefined): void;
  /** The attempt's relay is under way. */
  relaying(control: RelayControl): void;
  /** The gateway answered the client itself (here: a credential it could not use); the call is over. */
  refused(status: number, error: GatewayError): void;
  /** The client's error shape. */
  readonly errorShape: ErrorShape;
  /** Response headers edited for the client (a stream changing format). */
  rewriteResponseHeaders?(headers: HeaderMap): void;
  /** What ends the client's stream when the upstream fails mid-way. */
  streamErrorEvent?(message: string): Buffer;
}

export interface AttemptsRequest {
  candidates: Candidate[];
  health: Health;
  retry: RetryPolicy;
  method: string;
  /** Path and query as the client sent them. */
  url: string;
  /** The model the client asked for (a candidate may rename it). */
  model: string | undefined;
  /** A Claude call: each attempt takes the format of its upstream (Messages, Bedrock, Vertex). */
  claude?: ClaudeCall;
  body: BodyBytes | null;
  /** The client's headers, already stripped of its credentials. */
  headers: HeaderMap;
  res: ServerResponse;
  /** See RelayRequest.drainOnClientClose. */
  drainOnClientClose: boolean;
  observer: AttemptObserver;
}

/** Sends a call upstream, retrying or falling back while the client has seen nothing. */
export class CallAttempts {
  private readonly request: AttemptsRequest;
  private readonly plan: AttemptPlan;

  constructor(request: AttemptsRequest) {
    this.request = request;
    this.plan = new AttemptPlan(request.candidates, request.health, request.retry);
  }

  /** Sends the first attempt; the rest follow on their own. */
  start(): void {
    this.send(this.plan.first());
  }

  private send(attempt: Attempt): void {
    const { res, observer } = this.request;
    const { upstream } = attempt.candidate;
    let outgoing: OutgoingRequest;
    let pathAndQuery: string;
    let model: string | undefined;
    let pending: void | Promise<void>;
    try {
      ({ outgoing, pathAndQuery, model } = this.prepare(upstream, attempt.candidate.model));
      pending = authenticate(upstream, attempt.credential, outgoing);
    } catch (error) {
      if (!(error instanceof GatewayError)) throw error;
      this.refuse(error);
      return;
    }
    observer.attempting(attempt, model);
    if (!pending) {
      this.dispatch(attempt, outgoing, pathAndQuery);
      return;
    }
    pending.then(
      () => {
        if (!res.destroyed) this.dispatch(attempt, outgoing, pathAndQuery);
      },
      (error: unknown) => this.refuse(credentialFailure(upstream, attempt.credential, error)),
    );
  }

  /**
   * The attempt's request as `upstream` takes it (`outgoing.path` with the upstream's prefix, as a
   * signature covers it; `pathAndQuery` without), and the model id sent when not the client's.
   */
  private prepare(upstream: Upstream, rename: string | undefined): { outgoing: OutgoingRequest; pathAndQuery: string; model: string | undefined } {
    const { claude, model: asked } = this.request;
    const headers = { ...this.request.headers };
    let body = this.request.body;
    let pathAndQuery = this.request.url;
    let model = rename;
    if (claude && body) {
      model = asked === undefined ? rename : upstreamModelId(upstream, claude.format, asked, rename);
      // An Anthropic client's own body to a Messages API upstream, naming the model sent: as it is.
      const asIs = claude.format === 'anthropic' && formatOfKind(upstream.kind) === 'anthropic' && model === asked;
      if (!asIs) {
        const formatted = claudeRequestFor(upstream, claude, pathAndQuery, model, body.whole(), headers);
        pathAndQuery = formatted.pathAndQuery;
        body = BodyBytes.of(formatted.body);
      }
    } else if (body && rename !== undefined && rename !== asked) {
      body = body.edit((whole) => replaceTopLevelString(whole, 'model', rename));
    }
    if (body) headers['content-length'] = String(body.length);
    const outgoing = { method: this.request.method, origin: upstream.origin, path: upstreamPath(upstream, pathAndQuery), headers, body };
    return { outgoing, pathAndQuery, model: model === asked ? undefined : model };
  }

  private dispatch(attempt: Attempt, outgoing: OutgoingRequest, pathAndQuery: string): void {
    const { res, observer } = this.request;
    observer.relaying(
      relay({
        upstream: attempt.candidate.upstream,
        method: outgoing.method,
        pathAndQuery,
        headers: outgoing.headers,
        body: outgoing.body?.toSend() ?? null,
        res,
        observer,
        errorShape: observer.errorShape,
        streamErrorEvent: observer.streamErrorEvent && ((message) => observer.streamErrorEvent!(message)),
        rewriteResponseHeaders: observer.rewriteResponseHeaders && ((headers) => observer.rewriteResponseHeaders!(headers)),
        drainOnClientClose: this.request.drainOnClientClose,
        onAnswered: (status) => {
          if (status < 300) this.plan.succeeded(attempt);
        },
        takeOver: (failure) => this.takeOver(attempt, failure),
      }),
    );
  }

  /** Answers the client with the gateway's own refusal; the call is over. */
  private refuse(error: GatewayError): void {
    const { res, observer } = this.request;
    sendError(res, observer.errorShape, error);
    observer.refused(error.statusFor(observer.errorShape), error);
  }

  /**
   * Whether a failure before the client saw a byte is retried: when it says the work was not done
   * and the plan has an attempt left, that attempt goes out after its backoff.
   */
  private takeOver(attempt: Attempt, failure: EarlyFailure): boolean {
    const { res } = this.request;
    const retryable = 'status' in failure ? isRetryableStatus(failure.status) : isRetryableError(failure.error);
    if (!retryable) return false;
    const next =
      'status' in failure
        ? this.plan.retry(attempt, failure.status, retryAfterMs(failure.headers['retry-after']))
        : this.plan.retry(attempt, undefined, undefined);
    if (!next || res.destroyed) return false;
    setTimeout(() => {
      if (!res.destroyed) this.send(next.attempt);
    }, next.delayMs);
    return true;
  }
}

/** A credential that could not be had (no AWS identity, a token endpoint down), said without secrets. */
function credentialFailure(upstream: Upstream, credential: Credential | undefined, error: unknown): GatewayError {
  const reason = error instanceof Error ? error.message : String(error);
  return new GatewayError(
    'provider_not_configured',
    `the gateway could not authenticate to provider ${upstream.name} (${credential?.id ?? 'no credential'}): ${reason.slice(0, 300)}`,
  );
}
