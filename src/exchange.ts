// One exchange on a key's socket, from arrival to its last byte: the key's in-flight count (which
// close() drains on), the timings and byte counts every audit record carries, and the guarantee
// that the exchange is reported exactly once. LLM calls and GitHub calls each add their own fields.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CallRecord } from './calls.ts';
import type { GatewayError } from './errors.ts';
import type { KeyRecord } from './keys.ts';
import type { RelayOutcome, ResponseObserver } from './relay.ts';

/** The fields every call record has, measured by the exchange itself. */
export type ExchangeFields = Pick<
  CallRecord,
  'time' | 'keyId' | 'group' | 'label' | 'method' | 'path' | 'status' | 'outcome' | 'latencyMs' | 'ttfbMs' | 'upstreamRequestId' | 'errorKind' | 'requestBytes' | 'responseBytes'
>;

export abstract class Exchange implements ResponseObserver {
  requestBytes = 0;
  protected responseBytes = 0;
  private ttfbMs: number | undefined;
  private upstreamRequestId: string | undefined;
  private done = false;
  protected readonly key: KeyRecord;
  protected readonly req: IncomingMessage;
  private readonly path: string;
  private readonly started: number;
  /** Response headers that carry the upstream's request id, first found wins. */
  private readonly requestIdHeaders: readonly string[];

  constructor(key: KeyRecord, req: IncomingMessage, res: ServerResponse, path: string, started: number, requestIdHeaders: readonly string[]) {
    this.key = key;
    this.req = req;
    this.path = path;
    this.started = started;
    this.requestIdHeaders = requestIdHeaders;
    key.inFlight++;
    // Whatever happens to the exchange, the key's in-flight count comes back down exactly once.
    res.once('close', () => {
      key.inFlight--;
      this.finish('client_closed', res.statusCode);
    });
  }

  onResponseStart(_status: number, headers: Record<string, string | string[] | undefined>): void {
    this.ttfbMs = performance.now() - this.started;
    for (const name of this.requestIdHeaders) {
      const id = headers[name];
      if (id !== undefined) {
        this.upstreamRequestId = Array.isArray(id) ? id[0] : id;
        break;
      }
    }
  }

  onResponseData(chunk: Buffer): Buffer {
    this.responseBytes += chunk.length;
    return chunk;
  }

  onResponseEnd(outcome: RelayOutcome, status: number, error?: GatewayError): void {
    this.finish(outcome, status, error);
  }

  finish(outcome: CallRecord['outcome'], status: number, error?: GatewayError): void {
    if (this.done) return;
    this.done = true;
    const elapsed = performance.now() - this.started;
    this.report({
      time: Date.now() - Math.round(elapsed),
      keyId: this.key.id,
      group: this.key.group,
      label: this.key.label,
      method: this.req.method ?? 'GET',
      path: this.path,
      status,
      outcome,
      latencyMs: elapsed,
      ttfbMs: this.ttfbMs,
      upstreamRequestId: this.upstreamRequestId,
      errorKind: error?.kind,
      requestBytes: this.requestBytes,
      responseBytes: this.responseBytes,
    });
  }

  /** Completes and hands on the record; called once. */
  protected abstract report(fields: ExchangeFields): void;
}
