// The life of one call's upstream attempts, in one place: the plan (which upstream and credential
// next), sending an attempt (credential injected, model renamed), the takeover decision when an
// attempt fails before the client saw a byte, and the backoff timer before the next one. The call's
// record is told what happens through AttemptObserver; this module knows nothing of HTTP handlers.
import type { ServerResponse } from 'node:http';
import { GatewayError, sendError } from '../wire/errors.ts';
import type { HeaderMap } from '../wire/headers.ts';
import { replaceTopLevelString } from '../wire/json-splice.ts';
import { authenticate } from './providers.ts';
import { type EarlyFailure, type RelayControl, type ResponseObserver, relay } from './relay.ts';
import { type Attempt, AttemptPlan, type Health, isRetryableError, isRetryableStatus, type RetryPolicy, retryAfterMs } from './retry.ts';
import type { Candidate } from './router.ts';

/** The call's side of its attempts: it meters the responses and records which attempt served it. */
export interface AttemptObserver extends ResponseObserver {
  /** An attempt is about to go out. */
  attempting(attempt: Attempt): void;
  /** The attempt's relay is under way. */
  relaying(control: RelayControl): void;
  /** The gateway answered the client itself (here: a credential it could not use); the call is over. */
  refused(status: number, error: GatewayError): void;
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
  body: Buffer | null;
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
    const { upstream, model: rename } = attempt.candidate;
    const headers = { ...this.request.headers };
    let body = this.request.body;
    try {
      authenticate(upstream, attempt.credential, headers);
    } catch (error) {
      if (!(error instanceof GatewayError)) throw error;
      sendError(res, upstream.dialect, error);
      observer.refused(error.statusFor(upstream.dialect), error);
      return;
    }
    if (body && rename !== undefined && rename !== this.request.model) body = replaceTopLevelString(body, 'model', rename) ?? body;
    if (body) headers['content-length'] = String(body.length);
    observer.attempting(attempt);
    observer.relaying(
      relay({
        upstream,
        method: this.request.method,
        pathAndQuery: this.request.url,
        headers,
        body,
        res,
        observer,
        drainOnClientClose: this.request.drainOnClientClose,
        onAnswered: (status) => {
          if (status < 300) this.plan.succeeded(attempt);
        },
        takeOver: (failure) => this.takeOver(attempt, failure),
      }),
    );
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
