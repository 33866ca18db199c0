// The audit trail: one JSON line per call, to a file under the state dir and/or stdout, plus
// each key's most recent calls in memory for `inspect`. Records carry no bodies and no credentials:
// they are built field by field from what the gateway measured (calls.ts), never from headers, so
// there is nothing to redact (tests grep the file for the real keys).
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import { pino } from 'pino';
import type { CallRecord } from './calls.ts';

export interface AuditOptions {
  /** JSON-lines file. Default `<stateDir>/audit.jsonl`; false for none. */
  file?: string | false;
  /** Also write each record to stdout. Default false. */
  stdout?: boolean;
  /** Calls kept in memory per key for inspection. Default 20. */
  recentPerKey?: number;
}

/**
 * Lines go to pino's asynchronous destinations (sonic-boom: buffered appends, flushed off the hot
 * path). The records are flat and built by the gateway, so one native JSON.stringify per call is all
 * the serialization they need; pino's logger layer on top cost a sixth of a request's CPU (bench).
 */
export class AuditTrail {
  private readonly destinations: ReturnType<typeof pino.destination>[] = [];
  private readonly recentPerKey: number;
  private readonly recent = new Map<string, LRUCache<number, CallRecord>>();
  private sequence = 0;

  constructor(stateDir: string, options: AuditOptions = {}) {
    const file = options.file === undefined ? path.join(stateDir, 'audit.jsonl') : options.file;
    if (file) {
      // Private like the state dir (pino's own mkdir would make it 0755); an existing one is left as it is.
      mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      this.destinations.push(pino.destination({ dest: file, sync: false, mode: 0o600 }));
    }
    if (options.stdout) this.destinations.push(pino.destination({ dest: 1, sync: false }));
    this.recentPerKey = options.recentPerKey ?? 20;
  }

  write(record: CallRecord): void {
    if (this.destinations.length > 0) {
      const line = `${JSON.stringify({ record: 'call', ...record, time: new Date(record.time).toISOString() })}\n`;
      for (const destination of this.destinations) destination.write(line);
    }
    let calls = this.recent.get(record.keyId);
    if (!calls) {
      calls = new LRUCache({ max: this.recentPerKey });
      this.recent.set(record.keyId, calls);
    }
    calls.set(this.sequence++, record);
  }

  /** The key's recent calls, newest first. */
  recentCalls(keyId: string): CallRecord[] {
    return [...(this.recent.get(keyId)?.values() ?? [])];
  }

  forget(keyId: string): void {
    this.recent.delete(keyId);
  }

  /** Writes out what is buffered and closes the files. */
  async close(): Promise<void> {
    await Promise.all(
      this.destinations.map(
        (destination) =>
          new Promise<void>((resolve) => {
            destination.once('close', () => resolve());
            destination.once('error', () => resolve());
            destination.end();
          }),
      ),
    );
  }
}
