// Per-group spend that outlives keys and gateway restarts: an append-only JSON-lines file under the
// state dir. One process appends through one ordered stream; a line torn by a crash is skipped on load.
import { createWriteStream, type WriteStream } from 'node:fs';
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
  private readonly stream: WriteStream;

  private constructor(totals: Map<string, number>, stream: WriteStream) {
    this.totals = totals;
    this.stream = stream;
  }

  static async open(file: string): Promise<Ledger> {
    const totals = new Map<string, number>();
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
        }
      } catch {
        // A line torn by a crash mid-append: its amount was never confirmed.
      }
    }
    if (lines > COMPACT_AFTER_LINES) {
      const now = Date.now();
      const snapshot = [...totals].map(([group, usd]) => `${JSON.stringify({ t: now, group, usd })}\n`).join('');
      await writeFile(`${file}.tmp`, snapshot, { mode: 0o600 });
      await rename(`${file}.tmp`, file);
    }
    return new Ledger(totals, createWriteStream(file, { flags: 'a', mode: 0o600 }));
  }

  spent(group: string): number {
    return this.totals.get(group) ?? 0;
  }

  record(group: string, key: string, usd: number): void {
    if (!(usd > 0)) return;
    this.totals.set(group, this.spent(group) + usd);
    this.stream.write(`${JSON.stringify({ t: Date.now(), group, key, usd } satisfies LedgerLine)}\n`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.stream.end(resolve));
  }
}
