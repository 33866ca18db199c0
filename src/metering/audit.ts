// The audit trail: one JSON line per call, to a file under the state dir and/or stdout, plus
// each key's most recent calls in memory for `inspect`. Records carry no bodies and no credentials:
// they are built field by field from what the gateway measured (call-record.ts), never from headers, so
// there is nothing to redact (tests grep the file for the real keys). Their volume is bounded
// whatever a client sends: records arrive with their strings cut (boundRecord), a line has a hard
// size cap, and past a per-key rate refusals are counted in one summary line instead of written
// one by one.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { LRUCache } from 'lru-cache';
import { pino } from 'pino';
import { cut, RECORD_STRING_LIMITS, type CallRecord } from './call-record.ts';

export interface AuditOptions {
  /** JSON-lines file. Default `<stateDir>/audit.jsonl`; false for none. */
  file?: string | false;
  /** Also write each record to stdout. Default false. */
  stdout?: boolean;
  /** Calls kept in memory per key for inspection. Default 20. */
  recentPerKey?: number;
  /**
   * Refused calls written one line each, per key and minute. Past it, the minute's further refusals
   * are counted in one `refusals_suppressed` line. Default 20.
   */
  refusalLinesPerMinute?: number;
}

/** No audit line is longer than this, in bytes (newline included). */
export const MAX_AUDIT_LINE_BYTES = 4096;
/** What each string field is cut to in the rare line that bounded fields still make too long. */
const SHRUNK_STRING = 32;
const REFUSAL_WINDOW_MS = 60_000;
/**
 * Lines are gathered and written together at most this long after the first of them, or at
 * BATCH_BYTES: one write (a thread-pool round trip) per batch instead of per call (issue 20).
 * The spend ledger, not the audit trail, is what a crash must not lose: it is written at once.
 */
const BATCH_MS = 100;
const BATCH_BYTES = 64 * 1024;

/** One key's refusal lines in the current window. */
interface RefusalLog {
  keyId: string;
  group: string;
  windowStart: number;
  written: number;
  suppressed: number;
  /** Suppressed refusals by status, for the summary. */
  byStatus: Record<string, number>;
  lastSuppressedAt: number;
  /** Ends the window even if no refusal follows, so the summary is never held back. */
  timer: NodeJS.Timeout | undefined;
}

/** What every audited record carries. */
export interface AuditedRecord {
  time: number;
  keyId: string;
  group: string;
  status: number;
}

// The second last formatted, as `2026-12-02T15:40:12.`: V8 formats a date through a printf, about
// 1 µs per call (issue 20's profile), and at load every line of a second shares it.
let formattedSecond = Number.NaN;
let secondPrefix = '';

/** `new Date(ms).toISOString()`, formatting each second once. */
export function isoTime(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second !== formattedSecond) {
    secondPrefix = new Date(second * 1000).toISOString().slice(0, -4);
    formattedSecond = second;
  }
  const millis = Math.floor(ms - second * 1000);
  return `${secondPrefix}${millis < 10 ? '00' : millis < 100 ? '0' : ''}${millis}Z`;
}

/**
 * `{"record":KIND,"time":"<ISO>",...}`. Records are built with `time` first, so the line is the
 * record's own JSON with its head replaced, with no copy of the record per line (a spread copy with
 * `time` overwritten: the audit's share of a JSON call's CPU went from 4.2% to 3.3% under perf,
 * issue 20). A record of any other order is copied, to the same line.
 */
function recordJson(kind: string, record: { time: number }): string {
  const time = isoTime(record.time);
  const json = JSON.stringify(record);
  const head = `{"time":${record.time},`;
  if (json.startsWith(head)) return `{"record":${JSON.stringify(kind)},"time":"${time}",${json.slice(head.length)}`;
  const { time: _epoch, ...fields } = record;
  return JSON.stringify({ record: kind, time, ...fields });
}

/** Whether a line is within MAX_AUDIT_LINE_BYTES: its UTF-16 length bounds its UTF-8 bytes from below, three times it from above. */
function fits(line: string): boolean {
  return line.length * 3 <= MAX_AUDIT_LINE_BYTES || Buffer.byteLength(line) <= MAX_AUDIT_LINE_BYTES;
}

/** A record of another kind as one JSON line of at most MAX_AUDIT_LINE_BYTES. */
function boundedLine(kind: string, record: AuditedRecord): string {
  const line = `${recordJson(kind, record)}\n`;
  if (fits(line)) return line;
  const shrunk = Object.fromEntries(Object.entries(record).map(([field, value]) => [field, typeof value === 'string' ? cut(value, SHRUNK_STRING) : value]));
  return `${JSON.stringify({ record: kind, ...shrunk, time: isoTime(record.time), truncated: true })}\n`;
}

/** A call as one JSON line of at most MAX_AUDIT_LINE_BYTES. */
function auditLine(record: CallRecord): string {
  const line = `${recordJson('call', record)}\n`;
  if (fits(line)) return line;
  // Strings full of characters that JSON escapes (\u0000 is six bytes) can still pass the cap: cut harder.
  const shrunk: Record<string, unknown> = { ...record };
  for (const field of [...Object.keys(RECORD_STRING_LIMITS), 'keyId', 'group']) {
    if (typeof shrunk[field] === 'string') shrunk[field] = cut(shrunk[field], SHRUNK_STRING);
  }
  return `${JSON.stringify({ record: 'call', ...shrunk, time: isoTime(record.time), truncated: true })}\n`;
}

/**
 * Lines go to pino's asynchronous destinations (sonic-boom: buffered appends, flushed off the hot
 * path), in batches (BATCH_MS). The records are flat and built by the gateway, so one native
 * JSON.stringify per call is all the serialization they need; pino's logger layer on top cost a
 * sixth of a request's CPU (bench).
 */
export class AuditTrail {
  private readonly destinations: ReturnType<typeof pino.destination>[] = [];
  private readonly recentPerKey: number;
  private readonly refusalLinesPerMinute: number;
  private readonly recent = new Map<string, LRUCache<number, CallRecord>>();
  private readonly refusals = new Map<string, RefusalLog>();
  /** Refusal lines suppressed per key since the key was opened, for `inspect`. */
  private readonly suppressedTotal = new Map<string, number>();
  private sequence = 0;
  private batch: string[] = [];
  private batchBytes = 0;
  private batchTimer: NodeJS.Timeout | undefined;

  constructor(stateDir: string, options: AuditOptions = {}) {
    const file = options.file === undefined ? path.join(stateDir, 'audit.jsonl') : options.file;
    if (file) {
      // Private like the state dir (pino's own mkdir would make it 0755); an existing one is left as it is.
      mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
      this.destinations.push(pino.destination({ dest: file, sync: false, mode: 0o600 }));
    }
    if (options.stdout) this.destinations.push(pino.destination({ dest: 1, sync: false }));
    this.recentPerKey = options.recentPerKey ?? 20;
    this.refusalLinesPerMinute = options.refusalLinesPerMinute ?? 20;
  }

  /**
   * Logs a record of another kind (`egress`): one line of at most MAX_AUDIT_LINE_BYTES, its strings
   * already bounded by its maker; with `refused`, counted against the key's refusal lines like calls'.
   */
  writeRecord(kind: string, record: AuditedRecord, refused: boolean): void {
    if (refused && !this.mayWriteRefusal(record)) return;
    this.writeLine(boundedLine(kind, record));
  }

  /** Logs the call; with `remember`, also keeps it among the key's recent calls (not for a revoked key). */
  write(record: CallRecord, remember = true): void {
    // Refusals of a revoked key are rare and written as they come: no window is opened for a dead key.
    if (record.outcome !== 'rejected' || !remember || this.mayWriteRefusal(record)) this.writeLine(auditLine(record));
    if (!remember) return;
    let calls = this.recent.get(record.keyId);
    if (!calls) {
      calls = new LRUCache({ max: this.recentPerKey });
      this.recent.set(record.keyId, calls);
    }
    calls.set(this.sequence++, record);
  }

  /** Whether this refusal gets its own line; if not, it is counted for the window's summary. */
  private mayWriteRefusal(record: AuditedRecord, now = Date.now()): boolean {
    let log = this.refusals.get(record.keyId);
    if (log && now - log.windowStart >= REFUSAL_WINDOW_MS) {
      this.endWindow(log);
      log = undefined;
    }
    if (!log) {
      log = { keyId: record.keyId, group: record.group, windowStart: now, written: 0, suppressed: 0, byStatus: {}, lastSuppressedAt: now, timer: undefined };
      this.refusals.set(record.keyId, log);
    }
    if (log.written < this.refusalLinesPerMinute) {
      log.written++;
      return true;
    }
    log.suppressed++;
    log.byStatus[record.status] = (log.byStatus[record.status] ?? 0) + 1;
    log.lastSuppressedAt = now;
    this.suppressedTotal.set(record.keyId, (this.suppressedTotal.get(record.keyId) ?? 0) + 1);
    if (!log.timer) {
      const ending = log;
      log.timer = setTimeout(() => this.endWindow(ending), log.windowStart + REFUSAL_WINDOW_MS - now);
      log.timer.unref();
    }
    return false;
  }

  /** Writes the window's summary line, if it suppressed anything, and forgets the window. */
  private endWindow(log: RefusalLog): void {
    clearTimeout(log.timer);
    if (this.refusals.get(log.keyId) === log) this.refusals.delete(log.keyId);
    if (log.suppressed === 0) return;
    const summary = {
      record: 'refusals_suppressed',
      time: isoTime(log.windowStart),
      until: isoTime(log.lastSuppressedAt),
      keyId: log.keyId,
      group: cut(log.group, SHRUNK_STRING * 4),
      written: log.written,
      suppressed: log.suppressed,
      byStatus: log.byStatus,
    };
    this.writeLine(`${JSON.stringify(summary)}\n`);
  }

  private writeLine(line: string): void {
    if (this.destinations.length === 0) return;
    this.batch.push(line);
    this.batchBytes += line.length;
    if (this.batchBytes >= BATCH_BYTES) this.flush();
    else if (!this.batchTimer) {
      this.batchTimer = setTimeout(() => this.flush(), BATCH_MS);
      this.batchTimer.unref();
    }
  }

  private flush(): void {
    clearTimeout(this.batchTimer);
    this.batchTimer = undefined;
    if (this.batch.length === 0) return;
    const lines = this.batch.join('');
    this.batch = [];
    this.batchBytes = 0;
    for (const destination of this.destinations) destination.write(lines);
  }

  /** The key's recent calls, newest first. */
  recentCalls(keyId: string): CallRecord[] {
    return [...(this.recent.get(keyId)?.values() ?? [])];
  }

  /** Refusals of the key's counted in a summary line instead of written one by one. */
  suppressedRefusals(keyId: string): number {
    return this.suppressedTotal.get(keyId) ?? 0;
  }

  forget(keyId: string): void {
    const log = this.refusals.get(keyId);
    if (log) this.endWindow(log);
    this.recent.delete(keyId);
    this.suppressedTotal.delete(keyId);
  }

  /** Writes out what is buffered and closes the files. */
  async close(): Promise<void> {
    for (const log of [...this.refusals.values()]) this.endWindow(log);
    this.flush();
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
