// One exchange on a key's socket, from arrival to its last byte: the key's in-flight count (which
// close() drains on), the timings and byte counts every audit record carries, and the guarantee
// that the exchange is reported exactly once. LLM calls and GitHub calls each add their own fields.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CallRecord } from '../metering/call-record.ts';
import type { GatewayError } from '../wire/errors.ts';
import type { KeyRecord } from '../keys/store.ts';
import type { RelayControl, RelayOutcome, ResponseObserver } from '../upstream/relay.ts';

/** The fields every call record has, measured by the exchange itself. */
export type ExchangeFields = Pick<
  CallRecord,
  | 'time'
  | 'keyId'
  | 'group'
  | 'label'
  | 'method'
  | 'path'
  | 'status'
  | 'outcome'
  | 'latencyMs'
  | 'ttfbMs'
  | 'upstreamRequestId'
  | 'errorKind'
  | 'requestBytes'
  | 'responseBytes'
>;

export abstract class Exchange implements ResponseObserver {
  requestBytes = 0;
  protected responseBytes = 0;
  private ttfbMs: number | undefined;
  private upstreamRequestId: string | undefined;
  private done = false;
  /** The client's connection closed. */
  protected clientGone = false;
  private released = false;
  /** The relay of the attempt under way: it may keep the exchange open after the client leaves. */
  protected relayed: RelayControl | undefined;
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
    // Whatever happens to the exchange, the key's in-flight count comes back down exactly once:
    // when the client leaves, or, for a call the relay drains after that, when the upstream is done
    // (so a client cannot start unlimited calls by hanging up on them).
    res.once('close', () => {
      this.clientGone = true;
      if (!this.done && this.relayed?.drainsOnClientClose()) return; // the relay ends the exchange
      this.release();
      this.finish('client_closed', res.statusCode);
    });
  }

  private release(): void {
    if (this.released) return;
    this.released = true;
    this.key.inFlight--;
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
    if (this.clientGone) this.release();
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
