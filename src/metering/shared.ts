// Group budgets and rates shared by several gateways ("hosts"): what admission needs from a shared
// store, whatever engine holds it (store/redis.ts). A host stays the source of truth for what it
// spent (its own ledger); the store holds every host's total, the reservations in flight as leases,
// and the group's request and token windows.

/** `up`: answering. `down`: unreachable (shared-budget calls are refused). `warming`: it lost its data and hosts are restoring it. */
export type StoreState = 'up' | 'down' | 'warming';

/** A group's spend as the store last reported it. */
export interface GroupSpend {
  /** Settled spend of every host, summed. */
  totalUsd: number;
  /** Held by calls in flight on every host. */
  reservedUsd: number;
  /** Settled spend per host id. */
  hosts: Record<string, number>;
}

/** One call's share of a group's shared budget, held as a lease the store renews while the call runs. */
export interface SharedReservation {
  /** Books `costUsd` for this host and ends the lease; idempotent, retried until the store takes it. */
  settle(costUsd: number): void;
}

export type ReserveOutcome =
  | { ok: true; reservation: SharedReservation }
  /**
   * `exhausted`: spent plus this call passes the limit with nothing else in flight; `held`: calls in
   * flight (on any host) hold what this call needs; `warming`: the store is being restored.
   */
  | { ok: false; reason: 'exhausted' | 'held' | 'warming'; spentUsd: number; reservedUsd: number };

export type RateOutcome = { ok: true } | { ok: false; limit: 'rpm' | 'tpm'; retryAfterMs: number };

/** The store could not answer (unreachable, timed out): a shared-budget call is refused, retryably. */
export class StoreUnavailable extends Error {}

export interface SharedBudgets {
  state(): StoreState;
  /** Reserves `usd` of `group`'s budget `limitUsd` for one call, in one atomic step on the store. Rejects with StoreUnavailable. */
  reserve(group: string, usd: number, limitUsd: number): Promise<ReserveOutcome>;
  /** Counts one request against `group`'s shared `rpm` and checks its `tpm` window. Rejects with StoreUnavailable. */
  admitRate(group: string, limits: { rpm?: number; tpm?: number }): Promise<RateOutcome>;
  /** Adds a settled call's tokens to `group`'s token window (best effort). */
  addTokens(group: string, tokens: number): void;
  /** The last spend the store reported for `group` (refreshed every publish interval), if known. */
  groupSpend(group: string): GroupSpend | undefined;
  close(): Promise<void>;
}
