// Each key's refusals over the last minute. A request the gateway refuses (any `rejected` outcome:
// 400, 403, 404, 405, 413, 415, 429, 402...) costs a parse, an answer and an audit record, and counts
// toward nothing else; past `maxRefusalsPerMinute` the key's next requests are refused at once,
// before their body is read, until the count falls back under the limit.
import { GatewayError } from '../wire/errors.ts';

/** Refusals per key per minute when the key's limits do not set `maxRefusalsPerMinute`. */
const DEFAULT_MAX_REFUSALS_PER_MINUTE = 120;

const BUCKET_MS = 1000;
const BUCKETS = 60;

/**
 * Counts over a sliding minute in one-second buckets: fixed memory however fast refusals arrive
 * (a flood must not grow the thing that counts it).
 */
class RefusalWindow {
  private readonly counts = new Uint32Array(BUCKETS);
  /** The bucket (epoch seconds) the newest count went into. */
  private newest = 0;
  private total = 0;

  private advance(now: number): void {
    const bucket = Math.floor(now / BUCKET_MS);
    if (bucket - this.newest >= BUCKETS) {
      this.counts.fill(0);
      this.total = 0;
    } else {
      for (let b = this.newest + 1; b <= bucket; b++) {
        this.total -= this.counts[b % BUCKETS]!;
        this.counts[b % BUCKETS] = 0;
      }
    }
    if (bucket > this.newest) this.newest = bucket;
  }

  add(now: number): void {
    this.advance(now);
    this.counts[this.newest % BUCKETS]!++;
    this.total++;
  }

  count(now: number): number {
    this.advance(now);
    return this.total;
  }

  /** Milliseconds until fewer than `limit` refusals remain in the window. */
  waitFor(now: number, limit: number): number {
    this.advance(now);
    let excess = this.total - limit + 1;
    for (let b = this.newest - BUCKETS + 1; b <= this.newest; b++) {
      excess -= this.counts[((b % BUCKETS) + BUCKETS) % BUCKETS]!;
      if (excess <= 0) return Math.max(0, (b + BUCKETS) * BUCKET_MS - now);
    }
    return BUCKETS * BUCKET_MS;
  }
}

export class Refusals {
  private readonly windows = new Map<string, RefusalWindow>();

  /** Counts one refusal of the key's. */
  add(keyId: string, now = Date.now()): void {
    let window = this.windows.get(keyId);
    if (!window) {
      window = new RefusalWindow();
      this.windows.set(keyId, window);
    }
    window.add(now);
  }

  lastMinute(keyId: string, now = Date.now()): number {
    return this.windows.get(keyId)?.count(now) ?? 0;
  }

  /** The refusal to answer at once, when the key is over its limit; the connection is closed with it. */
  check(keyId: string, limit = DEFAULT_MAX_REFUSALS_PER_MINUTE, now = Date.now()): GatewayError | undefined {
    const window = this.windows.get(keyId);
    if (!window || window.count(now) < limit) return undefined;
    const seconds = Math.max(1, Math.ceil(window.waitFor(now, limit) / 1000));
    return new GatewayError(
      'rate_limited',
      `this key had ${window.count(now)} requests refused in the last minute (limit ${limit}); further requests are refused until it slows down; retry in ${seconds} s`,
      { 'retry-after': String(seconds), connection: 'close' },
    );
  }

  forget(keyId: string): void {
    this.windows.delete(keyId);
  }
}
