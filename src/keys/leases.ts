// Live keys recorded on disk, so a restarted gateway re-creates each key's socket in the same
// directory and containers that mounted it carry on. A lease holds no secret: the socket is the
// identity, and a TCP key's token is kept as its SHA-256 only. The journal is append-only (one line per mint or revoke) and compacted when opened.
import { appendFile, readFile, rename, writeFile } from 'node:fs/promises';
import type { Owner } from './store.ts';
import type { KeyLimits } from './limits.ts';
import type { TcpEndpoint } from './tcp-listen.ts';

export interface Lease {
  id: string;
  group: string;
  label?: string;
  createdAt: number;
  expiresAt?: number;
  owner?: Owner;
  limits: KeyLimits;
  /** TCP mode: the listener to re-open (same port: the container knows it) and the token's digest (hex). */
  tcp?: TcpEndpoint;
  tokenSha256?: string;
}

type JournalLine = { mint: Lease } | { revoke: string };

export class LeaseJournal {
  private readonly file: string;

  private constructor(file: string) {
    this.file = file;
  }

  /** Opens the journal and returns the leases still live (unexpired), rewriting the file to just those. */
  static async open(file: string, now = Date.now()): Promise<{ journal: LeaseJournal; live: Lease[] }> {
    const leases = new Map<string, Lease>();
    const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return '';
      throw error;
    });
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const entry = JSON.parse(line) as JournalLine;
        if ('mint' in entry) leases.set(entry.mint.id, entry.mint);
        else leases.delete(entry.revoke);
      } catch {
        // A line torn by a crash mid-append: that mint never returned to its caller.
      }
    }
    const live = [...leases.values()].filter((lease) => lease.expiresAt === undefined || lease.expiresAt > now);
    await writeFile(`${file}.tmp`, live.map((lease) => `${JSON.stringify({ mint: lease })}\n`).join(''), { mode: 0o600 });
    await rename(`${file}.tmp`, file);
    return { journal: new LeaseJournal(file), live };
  }

  minted(lease: Lease): Promise<void> {
    return appendFile(this.file, `${JSON.stringify({ mint: lease } satisfies JournalLine)}\n`, { mode: 0o600 });
  }

  revoked(id: string): Promise<void> {
    return appendFile(this.file, `${JSON.stringify({ revoke: id } satisfies JournalLine)}\n`, { mode: 0o600 });
  }
}
