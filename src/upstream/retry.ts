// Retries and fallbacks, only where safe: before any byte reached the client, on a failure that
// says the call was not done (connect failure, 429, 529, 5xx). Each attempt picks an upstream and a
// credential: candidates in route order, credentials round-robin, skipping those cooling down
// after repeated failures. See docs/resilience.md for what is retried and why.
import type { Candidate } from './router.ts';
import type { Credential, Upstream } from './providers.ts';

export interface RetryPolicy {
  /** Attempts per call, the first included. Default 3. */
  attempts: number;
  /** First backoff; doubles per attempt, with jitter. Default 250 ms. */
  baseBackoffMs: number;
  /** A `retry-after` longer than this is left to the client. Default 10 s. */
  maxRetryAfterMs: number;
  /** Consecutive failures that send a credential into cooldown. Default 3. */
  failuresBeforeCooldown: number;
  cooldownMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = {
  attempts: 3,
  baseBackoffMs: 250,
  maxRetryAfterMs: 10_000,
  failuresBeforeCooldown: 3,
  cooldownMs: 30_000,
};

/** Statuses that say the upstream did not do the work, so a retry cannot do it twice. */
const RETRYABLE_STATUS = new Set([429, 500, 502, 503, 504, 529]);
/** Overload and rate limits: try elsewhere at once rather than hammer the same credential. */
const BUSY_STATUS = new Set([429, 529]);
/** Errors that mean nothing reached the upstream, or it hung up before answering anything. */
const RETRYABLE_ERRORS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
]);

export function isRetryableStatus(status: number): boolean {
  return RETRYABLE_STATUS.has(status);
}

export function isRetryableError(error: Error): boolean {
  return RETRYABLE_ERRORS.has((error as { code?: string }).code ?? '');
}

/** Per-credential health across calls: consecutive failures and cooldowns. */
export class Health {
  private readonly failures = new Map<string, number>();
  private readonly coolingUntil = new Map<string, number>();
  private readonly policy: RetryPolicy;
  private readonly next = new Map<string, number>();

  constructor(policy: RetryPolicy) {
    this.policy = policy;
  }

  cooling(id: string, now = Date.now()): boolean {
    return (this.coolingUntil.get(id) ?? 0) > now;
  }

  succeeded(id: string): void {
    this.failures.delete(id);
    this.coolingUntil.delete(id);
  }

  /** Counts a failure; `coolForMs` (a retry-after) cools the credential at once. */
  failed(id: string, coolForMs?: number): void {
    const count = (this.failures.get(id) ?? 0) + 1;
    this.failures.set(id, count);
    const until = Math.max(coolForMs ? Date.now() + coolForMs : 0, count >= this.policy.failuresBeforeCooldown ? Date.now() + this.policy.cooldownMs : 0);
    if (until > 0) this.coolingUntil.set(id, until);
  }

  /** The next credential of `upstream` in round-robin order, preferring ones not cooling down. */
  pick(upstream: Upstream, exclude: ReadonlySet<string>): Credential | undefined {
    const { credentials } = upstream;
    if (credentials.length === 0) return undefined;
    const start = this.next.get(upstream.name) ?? 0;
    this.next.set(upstream.name, (start + 1) % credentials.length);
    const ordered = credentials.map((_, i) => credentials[(start + i) % credentials.length]!);
    return ordered.find((c) => !exclude.has(c.id) && !this.cooling(c.id)) ?? ordered.find((c) => !exclude.has(c.id)) ?? ordered[0];
  }
}

export interface Attempt {
  candidate: Candidate;
  credential: Credential | undefined;
  number: number;
}

/** The attempts of one call. */
export class AttemptPlan {
  private readonly candidates: Candidate[];
  private readonly health: Health;
  private readonly policy: RetryPolicy;
  private readonly tried = new Set<string>();
  private index = 0;
  private made = 0;

  constructor(candidates: Candidate[], health: Health, policy: RetryPolicy) {
    this.candidates = candidates;
    this.health = health;
    this.policy = policy;
  }

  first(): Attempt {
    return this.attempt(this.candidates[0]!);
  }

  private attempt(candidate: Candidate): Attempt {
    const credential = this.health.pick(candidate.upstream, this.tried);
    if (credential) this.tried.add(credential.id);
    this.made++;
    return { candidate, credential, number: this.made };
  }

  /** Whether a credential or a fallback not yet tried remains. */
  private untriedAlternative(): Candidate | undefined {
    const current = this.candidates[this.index]!;
    if (current.upstream.credentials.some((c) => !this.tried.has(c.id) && !this.health.cooling(c.id))) return current;
    for (let i = this.index + 1; i < this.candidates.length; i++) {
      if (this.candidates[i]!.upstream.credentials.some((c) => !this.health.cooling(c.id))) {
        this.index = i;
        return this.candidates[i];
      }
    }
    return undefined;
  }

  /**
   * After attempt `previous` failed (with `status`, or a connection error when undefined): the next
   * attempt and how long to wait first, or undefined when the failure goes back to the client.
   */
  retry(previous: Attempt, status: number | undefined, retryAfterMs: number | undefined): { attempt: Attempt; delayMs: number } | undefined {
    const busy = status !== undefined && BUSY_STATUS.has(status);
    if (previous.credential) {
      this.health.failed(previous.credential.id, busy ? (retryAfterMs ?? this.policy.cooldownMs) : undefined);
    }
    if (this.made >= this.policy.attempts) return undefined;
    const alternative = this.untriedAlternative();
    if (alternative) return { attempt: this.attempt(alternative), delayMs: busy ? 0 : this.backoff() };
    // Nowhere else to go. A rate limit or overload goes back to the client with its retry-after:
    // its SDK waits it out, and waiting here as well would only stack the delays.
    if (busy) return undefined;
    if (retryAfterMs !== undefined && retryAfterMs > this.policy.maxRetryAfterMs) return undefined;
    return { attempt: this.attempt(previous.candidate), delayMs: Math.max(this.backoff(), retryAfterMs ?? 0) };
  }

  succeeded(attempt: Attempt): void {
    if (attempt.credential) this.health.succeeded(attempt.credential.id);
  }

  private backoff(): number {
    const base = this.policy.baseBackoffMs * 2 ** (this.made - 1);
    return Math.round(base / 2 + Math.random() * (base / 2));
  }
}

/** `retry-after` in milliseconds (seconds or an HTTP date), or undefined. */
export function retryAfterMs(value: string | string[] | undefined): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return undefined;
  const seconds = Number(text);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}
