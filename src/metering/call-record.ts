// The record of one call through the gateway: what the audit trail and `inspect` are built from.
// Many of its strings come from the client (path, model, session id) or the upstream (request id):
// boundRecord cuts each to a fixed length before the record is stored, logged or handed on.
import type { ErrorKind } from '../wire/errors.ts';
import type { PriceSource } from './pricing.ts';
import type { Dialect } from '../wire/dialect.ts';
import type { Endpoint } from '../wire/endpoints.ts';

export interface CallRecord {
  /** Epoch milliseconds when the request arrived. */
  time: number;
  keyId: string;
  group: string;
  label?: string;
  /** Claude Code's `x-claude-code-session-id`, or the OpenAI SDKs' session header, when sent. */
  sessionId?: string;
  /** The API the client spoke (`github` for git and GitHub API calls, `service` for a configured service's). */
  dialect?: Dialect | 'github' | 'service';
  /**
   * `git` (smart HTTP) and `github_api` calls cost nothing and carry `repo` and `service`; `service`
   * calls (`/svc/NAME/...`) cost nothing and name the service in `upstream`.
   */
  endpoint?: Endpoint | 'git' | 'github_api' | 'service';
  /** GitHub calls: `owner/name` the request names, when it names one. */
  repo?: string;
  /** Git calls: `git-upload-pack` (clone, fetch) or `git-receive-pack` (push). */
  service?: string;
  method: string;
  path: string;
  model?: string;
  /** The provider that served the call (after any fallback). */
  upstream?: string;
  /** That provider's kind (`anthropic`, `openai`, `azure-openai`, `bedrock`, `vertex`, `foundry`). */
  upstreamKind?: string;
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
  /** Server-side web searches and fetches the call made (billed per use), when any. */
  webSearchRequests?: number;
  webFetchRequests?: number;
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

/** Longest kept value of each string field a client or an upstream can influence. */
export const RECORD_STRING_LIMITS = {
  label: 256,
  sessionId: 128,
  repo: 256,
  service: 64,
  method: 16,
  path: 256,
  model: 256,
  upstream: 128,
  upstreamModel: 256,
  upstreamRequestId: 128,
  priceEntry: 256,
} as const satisfies Partial<Record<keyof CallRecord, number>>;

const LIMITED_FIELDS = Object.entries(RECORD_STRING_LIMITS) as [keyof typeof RECORD_STRING_LIMITS, number][];

/** Appended to a value that was cut. */
const CUT_MARK = '…';

/** `value` cut to at most `max` UTF-16 units (mark included), never inside a surrogate pair. */
export function cut(value: string, max: number): string {
  if (value.length <= max) return value;
  let end = max - CUT_MARK.length;
  const last = value.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return value.slice(0, end) + CUT_MARK;
}

/** The record with every client- or upstream-influenced string cut to its limit: the one place records are bounded. */
export function boundRecord(record: CallRecord): CallRecord {
  let bounded: CallRecord | undefined;
  for (const [field, max] of LIMITED_FIELDS) {
    const value: unknown = record[field];
    if (value === undefined) continue;
    // A non-string here (a header sent twice, say) is made a string first: the record's types must hold.
    const text = typeof value === 'string' ? value : String(value);
    if (text === value && text.length <= max) continue;
    bounded ??= { ...record };
    (bounded as unknown as Record<string, string>)[field] = cut(text, max);
  }
  return bounded ?? record;
}
