// The record of one call through the gateway: what the audit trail and `inspect` are built from.
import type { ErrorKind } from './errors.ts';
import type { Endpoint, ProviderKind } from './routes.ts';

export interface CallRecord {
  /** Epoch milliseconds when the request arrived. */
  time: number;
  keyId: string;
  group: string;
  label?: string;
  /** Claude Code's `x-claude-code-session-id`, or the OpenAI SDKs' session header, when sent. */
  sessionId?: string;
  provider?: ProviderKind;
  endpoint?: Endpoint;
  method: string;
  path: string;
  model?: string;
  stream: boolean;
  status: number;
  /** How the call ended: a complete response, the client hanging up, or an upstream failure. */
  outcome: 'complete' | 'client_closed' | 'upstream_failed' | 'rejected';
  latencyMs: number;
  /** Time until the upstream's response headers arrived. */
  ttfbMs?: number;
  upstreamRequestId?: string;
  errorKind?: ErrorKind;
  requestBytes: number;
  responseBytes: number;
}
