// Per-key request and token rate limits over a sliding one-minute window.

const WINDOW_MS = 60_000;

/** Timestamped amounts within the last minute, oldest first (a queue: `head` is its front). */
class Window {
  private times: number[] = [];
  private amounts: number[] = [];
  private head = 0;
  private sum = 0;

  private expire(now: number): void {
    while (this.head < this.times.length && this.times[this.head]! <= now - WINDOW_MS) {
      this.sum -= this.amounts[this.head++]!;
    }
    // Drop the expired front now and then, not on every call: amortized O(1).
    if (this.head > 64 && this.head * 2 > this.times.length) {
      this.times = this.times.slice(this.head);
      this.amounts = this.amounts.slice(this.head);
      this.head = 0;
    }
    if (this.head === this.times.length) this.sum = 0; // no drift from float subtraction
  }

  add(now: number, amount: number): void {
    this.expire(now);
    this.times.push(now);
    this.amounts.push(amount);
    this.sum += amount;
  }

  total(now: number): number {
    this.expire(now);
    return this.sum;
  }

  /** Milliseconds until the total drops below `limit`. */
  waitFor(now: number, limit: number): number {
    this.expire(now);
    let excess = this.sum - limit;
    for (let i = this.head; i < this.times.length; i++) {
      excess -= this.amounts[i]!;
      if (excess <= 0) return this.times[i]! + WINDOW_MS - now;
    }
    return 0;
  }
}

export interface RateLimits {
  rpm?: number;
  tpm?: number;
}

export class RateWindow {
  private readonly requests = new Window();
  private readonly tokens = new Window();

  /** Milliseconds to wait before another request may start, 0 if it may start now. */
  check(limits: RateLimits, now = Date.now()): { waitMs: number; limit?: 'rpm' | 'tpm' } {
    if (limits.rpm !== undefined && this.requests.total(now) >= limits.rpm) {
      return { waitMs: this.requests.waitFor(now, limits.rpm - 1), limit: 'rpm' };
    }
    if (limits.tpm !== undefined && this.tokens.total(now) >= limits.tpm) {
      return { waitMs: this.tokens.waitFor(now, limits.tpm - 1), limit: 'tpm' };
    }
    return { waitMs: 0 };
  }

  startRequest(now = Date.now()): void {
    this.requests.add(now, 1);
  }

  addTokens(tokens: number, now = Date.now()): void {
    if (tokens > 0) this.tokens.add(now, tokens);
  }

  requestsLastMinute(now = Date.now()): number {
    return this.requests.total(now);
  }

  tokensLastMinute(now = Date.now()): number {
    return this.tokens.total(now);
  }
}
