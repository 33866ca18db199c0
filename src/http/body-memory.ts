// A bound on request-body bytes held in memory at once: bodies are kept whole until the call ends
// (undici holds them until the response is done, and a retry may resend them), so without a bound
// one key's concurrent 32 MiB bodies could take the host's memory. Each key also has a share of the
// pool, so one key cannot take all of it from the others.
import { GatewayError } from '../wire/errors.ts';

export interface BodyMemoryLimits {
  /** All keys together. */
  totalBytes: number;
  /** One key. */
  perKeyBytes: number;
}

/** One request body's charge against the pool; grows as bytes arrive, released once. */
export interface BodyHold {
  /** Charges the body up to `bytes` in all; throws 413 or 429 when that cannot be held. */
  grow(bytes: number): void;
  release(): void;
}

export class BodyMemory {
  private readonly limits: BodyMemoryLimits;
  private used = 0;
  private readonly usedByKey = new Map<string, number>();

  constructor(limits: BodyMemoryLimits) {
    this.limits = limits;
  }

  /** Bytes held now (all keys, or one key). */
  inUse(keyId?: string): number {
    return keyId === undefined ? this.used : (this.usedByKey.get(keyId) ?? 0);
  }

  hold(keyId: string): BodyHold {
    let held = 0;
    const charge = (delta: number) => {
      this.used += delta;
      const mine = (this.usedByKey.get(keyId) ?? 0) + delta;
      if (mine === 0) this.usedByKey.delete(keyId);
      else this.usedByKey.set(keyId, mine);
      held += delta;
    };
    return {
      grow: (bytes) => {
        const delta = bytes - held;
        if (delta <= 0) return;
        const { totalBytes, perKeyBytes } = this.limits;
        if (bytes > Math.min(totalBytes, perKeyBytes)) {
          throw new GatewayError(
            'body_too_large',
            `request body of ${bytes} bytes is larger than this gateway can hold for one key (${Math.min(totalBytes, perKeyBytes)} bytes)`,
            { connection: 'close' },
          );
        }
        if (this.inUse(keyId) + delta > perKeyBytes)
          throw busy(`this key's request bodies in flight already hold ${this.inUse(keyId)} of its ${perKeyBytes} bytes`);
        if (this.used + delta > totalBytes) throw busy(`request bodies in flight already hold ${this.used} of the gateway's ${totalBytes} bytes`);
        charge(delta);
      },
      release: () => charge(-held),
    };
  }
}

function busy(message: string): GatewayError {
  // The body is not read further: the connection closes after the answer.
  return new GatewayError('rate_limited', `${message}; retry in 1 s`, { 'retry-after': '1', connection: 'close' });
}
