// Each key's egress books: tunnels open, bytes each way against its byte budget, and its last
// refusals for `inspect`. Kept beside the USD accounting (metering/) because they count a different
// thing; forgotten when the key is revoked.
import type { EgressRecord } from './record.ts';

/** What one key did through the proxy, for `inspect`. */
export interface EgressTotals {
  tunnelsOpen: number;
  /** Tunnels and plain HTTP requests allowed since the key was minted. */
  tunnels: number;
  requests: number;
  bytesUp: number;
  bytesDown: number;
  refusals: number;
  /** Newest first, at most RECENT_REFUSALS. */
  recentRefusals: Pick<EgressRecord, 'time' | 'kind' | 'host' | 'port' | 'method' | 'path' | 'reason' | 'status'>[];
}

const RECENT_REFUSALS = 10;

/** One key's egress in flight and in total; `close` cuts everything it has open. */
export class EgressAccount {
  readonly totals: EgressTotals = { tunnelsOpen: 0, tunnels: 0, requests: 0, bytesUp: 0, bytesDown: 0, refusals: 0, recentRefusals: [] };
  private readonly open = new Set<() => void>();

  /** Counts bytes; false once `budgetBytes` (if any) is spent. */
  add(up: number, down: number, budgetBytes: number | undefined): boolean {
    this.totals.bytesUp += up;
    this.totals.bytesDown += down;
    return !this.spent(budgetBytes);
  }

  spent(budgetBytes: number | undefined): boolean {
    return budgetBytes !== undefined && this.totals.bytesUp + this.totals.bytesDown >= budgetBytes;
  }

  /** A tunnel or request opened; `cut` ends it (on revoke). Returns the function that marks it closed. */
  opened(kind: 'tunnel' | 'http', cut: () => void): () => void {
    this.totals.tunnelsOpen++;
    if (kind === 'tunnel') this.totals.tunnels++;
    else this.totals.requests++;
    this.open.add(cut);
    let closed = false;
    return () => {
      if (closed) return;
      closed = true;
      this.totals.tunnelsOpen--;
      this.open.delete(cut);
    };
  }

  refused(record: EgressRecord): void {
    this.totals.refusals++;
    const { time, kind, host, port, method, path, reason, status } = record;
    this.totals.recentRefusals.unshift({ time, kind, host, port, method, path, reason, status });
    this.totals.recentRefusals.length = Math.min(this.totals.recentRefusals.length, RECENT_REFUSALS);
  }

  /** Cuts every tunnel and request still open. */
  close(): void {
    for (const cut of [...this.open]) cut();
  }
}

export class EgressBooks {
  private readonly accounts = new Map<string, EgressAccount>();

  account(keyId: string): EgressAccount {
    let account = this.accounts.get(keyId);
    if (!account) {
      account = new EgressAccount();
      this.accounts.set(keyId, account);
    }
    return account;
  }

  totals(keyId: string): EgressTotals | undefined {
    return this.accounts.get(keyId)?.totals;
  }

  /** The key is gone: its tunnels are cut and its books dropped. */
  forget(keyId: string): void {
    this.accounts.get(keyId)?.close();
    this.accounts.delete(keyId);
  }
}
