// The record of one call through the gateway: what the audit trail and `inspect` are built from.
import type { ErrorKind } from './errors.ts';
import type { PriceSource } from './metering/pricing.ts';
import type { Endpoint, ProviderKind } from './routes.ts';

export interface CallRecord {
  /** Epoch milliseconds when the request arrived. */
  time: number;
  keyId: string;
  group: string;
  label?: string;
  /** Claude Code's `x-claude-code-session-id`, or the OpenAI SDKs' session header, when sent. */
  sessionId?: string;
  provider?: ProviderKind | 'github';
  /** `git` (smart HTTP) and `github_api` calls cost nothing and carry `repo` and `service`. */
  endpoint?: Endpoint | 'git' | 'github_api';
  /** GitHub calls: `owner/name` the request names, when it names one. */
  repo?: string;
  /** Git calls: `git-upload-pack` (clone, fetch) or `git-receive-pack` (push). */
  service?: string;
  method: string;
  path: string;
  model?: string;
  /** The provider that served the call (after any fallback). */
  upstream?: string;
  /** The model name sent upstream, when a route renamed it. */
  upstreamModel?: string;
  /** Upstream attempts made (retries and fallbacks included). */
  attempts: number;
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
  /** Token line items, when the call produced any (each priced separately). */
  inputTokens?: number;
  outputTokens?: number;
  cacheWriteTokens?: number;
  cacheWrite1hTokens?: number;
  cacheReadTokens?: number;
  reasoningTokens?: number;
  /** False when a stream was cut before the provider's final counts: output is then estimated. */
  usageReported?: boolean;
  costUsd: number;
  /** 'default' when the model was not in the price table and was charged the default price. */
  priceSource?: PriceSource;
  /** The price-table entry that priced the call (`claude-sonnet-4-5`, or a family such as `claude-opus`). */
  priceEntry?: string;
  /** Budget held for this call while it ran: its worst case, at the dearest candidate's price. */
  reservedUsd?: number;
  /** The output limit (per completion) the gateway lowered the request to, when the budget left could not pay for the one asked. */
  clampedMaxTokens?: number;
}
