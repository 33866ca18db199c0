// What every telemetry output (Prometheus metrics, OpenTelemetry traces, the live page) takes from
// the gateway: each call's record once it is over (the gateway's `onCall`), and the gateway itself
// for what is true now (`inspect()`: live keys, groups, budgets, calls in flight).
import type { CallRecord } from '../metering/call-record.ts';

export interface TelemetrySink {
  /** One finished call (or refusal). Must not throw and must not block: it runs on the request path. */
  onCall(record: CallRecord): void;
  /** Stops listening or exporting; flushes what is pending (bounded). */
  close(): Promise<void>;
}
