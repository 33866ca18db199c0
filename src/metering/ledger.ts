// Per-group spend that outlives keys and gateway restarts: an append-only JSON-lines file under the
// state dir. Each settled call is appended with one synchronous write before the call is reported, so
// a SIGKILL right after a client saw its answer loses no spend (the kernel holds the bytes; a few µs
// per metered call). A line torn by a power loss mid-append is skipped on load.
import { closeSync, openSync, writeSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';

interface LedgerLine {
  /** Epoch ms. */
  t: number;
  group: string;
  key?: string;
  usd: number;
}

// Past this many lines at start-up the file is rewritten as one line per group.
const COMPACT_AFTER_LINES = 10_000;

export class Ledger {
  private readonly totals: Map<string, number>;
  private readonly keyTotals: Map<string, number>;
  private fd: number | undefined;
  private readonly onWriteError: (error: unknown) => void;

  private constructor(totals: Map<string, number>, keyTotals: Map<string, number>, fd: number, onWriteError: (error: unknown) => void) {
    this.totals = totals;
    this.keyTotals = keyTotals;
    this.fd = fd;
    this.onWriteError = onWriteError;
  }

  /** `liveKeys`: keys restored after a restart, whose own spend is summed too. */
  static async open(file: string, liveKeys: ReadonlySet<string>, onWriteError: (error: unknown) => void): Promise<Ledger> {
    const totals = new Map<string, number>();
    const keyTotals = new Map<string, number>();
    const groupOfKey = new Map<string, string>();
    let lines = 0;
    const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return '';
      throw error;
    });
    for (const line of text.split('\n')) {
      if (!line) continue;
      lines++;
      try {
        const entry = JSON.parse(line) as LedgerLine;
        if (typeof entry.group === 'string' && Number.isFinite(entry.usd)) {
          totals.set(entry.group, (totals.get(entry.group) ?? 0) + entry.usd);
          if (entry.key !== undefined && liveKeys.has(entry.key)) {
            keyTotals.set(entry.key, (keyTotals.get(entry.key) ?? 0) + entry.usd);
            groupOfKey.set(entry.key, entry.group);
          }
        }
      } catch {
        // A line torn by a crash mid-append: its amount was never confirmed.
      }
    }
    if (lines > COMPACT_AFTER_LINES) {
      // One line per group, less what its live keys spent, which keep a line each.
      const now = Date.now();
      const rest = new Map(totals);
      const entries: LedgerLine[] = [];
      for (const [key, usd] of keyTotals) {
        const group = groupOfKey.get(key)!;
        rest.set(group, rest.get(group)! - usd);
        entries.push({ t: now, group, key, usd });
      }
      for (const [group, usd] of rest) entries.push({ t: now, group, usd });
      const snapshot = entries.map((entry) => `${JSON.stringify(entry)}\n`).join('');
      await writeFile(`${file}.tmp`, snapshot, { mode: 0o600 });
      await rename(`${file}.tmp`, file);
    }
    return new Ledger(totals, keyTotals, openSync(file, 'a', 0o600), onWriteError);
  }

  spent(group: string): number {
    return this.totals.get(group) ?? 0;
  }

  /** This host's spend per group so far (what it publishes to a shared store). */
  spentByGroup(): Record<string, number> {
    return Object.fromEntries(this.totals);
  }

  /** What a key restored at start had spent before the restart. */
  spentByRestoredKey(key: string): number {
    return this.keyTotals.get(key) ?? 0;
  }

  record(group: string, key: string, usd: number): void {
    if (!(usd > 0)) return;
    this.totals.set(group, this.spent(group) + usd);
    if (this.fd === undefined) return;
    try {
      writeSync(this.fd, `${JSON.stringify({ t: Date.now(), group, key, usd } satisfies LedgerLine)}\n`);
    } catch (error) {
      // A full disk must not fail the call: the spend still counts in memory, and the host hears of it.
      this.onWriteError(error);
    }
  }

  async close(): Promise<void> {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
