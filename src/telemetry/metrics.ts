// Prometheus metrics for operators: counters and histograms fed by each call record, gauges read from
// `gateway.inspect()` when scraped, on their own loopback listener (never a key's socket). Every label
// a client can influence (model) is cut short and capped in distinct values, so a client cannot grow
// the series without bound; no prompt, completion or credential ever reaches a label.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Gauge as GaugeClass, Registry } from 'prom-client';
import type { Gateway, GatewaySnapshot } from '../gateway.ts';
import { type CallRecord, cut } from '../metering/call-record.ts';
import type { ListenAddress } from '../util/listen.ts';
import type { TelemetrySink } from './sink.ts';

export interface MetricsOptions {
  listen: ListenAddress;
  /** Gauges read at scrape time. */
  gateway: Pick<Gateway, 'inspect'>;
  /** Add a `key` label to per-key series (bounded: at most 1000 live keys get their own series). Default false. */
  keyLabels?: boolean;
}

/** Distinct values kept per label before the rest count as `other`. */
const MAX_MODELS = 200;
const MAX_GROUPS = 200;
const MAX_PROVIDERS = 50;
const MAX_KEY_SERIES = 1000;
/** Longest label value kept (model names are short; anything longer is a client's noise). */
const MAX_LABEL_LENGTH = 128;
const NONE = 'none';
const OTHER = 'other';

/** Seconds: LLM calls run from a fraction of a second to many minutes. */
const DURATION_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640];
const TTFB_BUCKETS = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64];

/** Maps a label's raw values to themselves (cut) until `max` distinct ones are seen, then to `other`. */
class CappedLabel {
  private readonly values = new Map<string, string>();
  private readonly max: number;
  constructor(max: number) {
    this.max = max;
  }

  of(raw: string | undefined): string {
    if (raw === undefined || raw === '') return NONE;
    const known = this.values.get(raw);
    if (known !== undefined) return known;
    if (this.values.size >= this.max) return OTHER;
    const value = cut(raw, MAX_LABEL_LENGTH);
    this.values.set(raw, value);
    return value;
  }
}

type TokenKind = 'input' | 'output' | 'cache_write_5m' | 'cache_write_1h' | 'cache_read' | 'reasoning';

/** The record's field behind each `kind` of the tokens counter. */
const TOKEN_FIELDS: readonly [TokenKind, keyof CallRecord][] = [
  ['input', 'inputTokens'],
  ['output', 'outputTokens'],
  ['cache_write_5m', 'cacheWriteTokens'],
  ['cache_write_1h', 'cacheWrite1hTokens'],
  ['cache_read', 'cacheReadTokens'],
  ['reasoning', 'reasoningTokens'],
];

export async function startMetricsServer(options: MetricsOptions): Promise<TelemetrySink & { url: string }> {
  // Loaded here, not at the top: a gateway without metrics never pays for prom-client at start.
  const { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } = await import('prom-client');
  const register = new Registry();
  collectDefaultMetrics({ register });
  const models = new CappedLabel(MAX_MODELS);
  const groups = new CappedLabel(MAX_GROUPS);
  const providers = new CappedLabel(MAX_PROVIDERS);

  const requests = new Counter({
    name: 'llm_gateway_requests_total',
    help: 'Calls through the gateway, refusals included (error_kind says why).',
    labelNames: ['group', 'provider', 'model', 'status', 'error_kind'] as const,
    registers: [register],
  });
  const tokens = new Counter({
    name: 'llm_gateway_tokens_total',
    help: 'Tokens metered, by line item.',
    labelNames: ['group', 'provider', 'model', 'kind'] as const,
    registers: [register],
  });
  const cost = new Counter({
    name: 'llm_gateway_cost_usd_total',
    help: 'USD charged for calls.',
    labelNames: ['group', 'provider', 'model'] as const,
    registers: [register],
  });
  const duration = new Histogram({
    name: 'llm_gateway_request_duration_seconds',
    help: 'Time from the request arriving to the call ending.',
    labelNames: ['group', 'provider'] as const,
    buckets: DURATION_BUCKETS,
    registers: [register],
  });
  const ttfb = new Histogram({
    name: 'llm_gateway_time_to_first_byte_seconds',
    help: "Time until the upstream's response headers arrived.",
    labelNames: ['group', 'provider'] as const,
    buckets: TTFB_BUCKETS,
    registers: [register],
  });

  // One snapshot per scrape, taken by the handler before the registry collects: every gauge then
  // reads the same moment, and `inspect()` runs once instead of once per gauge.
  let snapshot: GatewaySnapshot | undefined;
  registerGauges(Gauge, register, () => snapshot, groups, options.keyLabels ?? false);

  const server = http.createServer((req, res) => {
    const path = req.url?.split('?', 1)[0];
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    snapshot = options.gateway.inspect();
    register.metrics().then(
      (body) => res.writeHead(200, { 'content-type': register.contentType }).end(body),
      () => res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics failed\n'),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.listen.port, options.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const host = options.listen.host.includes(':') ? `[${options.listen.host}]` : options.listen.host;

  return {
    url: `http://${host}:${port}/metrics`,
    onCall(record) {
      try {
        const group = groups.of(record.group);
        const provider = providers.of(record.upstream);
        const model = models.of(record.model);
        requests.inc({ group, provider, model, status: String(record.status), error_kind: record.errorKind ?? NONE });
        for (const [kind, field] of TOKEN_FIELDS) {
          const count = record[field];
          if (typeof count === 'number' && count > 0) tokens.inc({ group, provider, model, kind }, count);
        }
        if (record.costUsd > 0) cost.inc({ group, provider, model }, record.costUsd);
        if (record.latencyMs >= 0) duration.observe({ group, provider }, record.latencyMs / 1000);
        if (record.ttfbMs !== undefined && record.ttfbMs >= 0) ttfb.observe({ group, provider }, record.ttfbMs / 1000);
      } catch {
        // A metric that cannot be counted must never fail the call it describes.
      }
    },
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      register.clear();
    },
  };
}

/** The gauges that describe now: groups' budgets and spend, live keys, calls in flight (and per-key spend). */
function registerGauges(
  Gauge: typeof GaugeClass,
  register: Registry,
  current: () => GatewaySnapshot | undefined,
  groups: CappedLabel,
  keyLabels: boolean,
): void {
  const perGroup = (name: string, help: string, value: (group: GatewaySnapshot['groups'][number]) => number | undefined) =>
    new Gauge({
      name,
      help,
      labelNames: ['group'] as const,
      registers: [register],
      collect() {
        this.reset();
        for (const group of current()?.groups ?? []) {
          const usd = value(group);
          // inc, not set: groups past the cap add up under `other`.
          if (usd !== undefined) this.inc({ group: groups.of(group.group) }, usd);
        }
      },
    });
  perGroup('llm_gateway_group_budget_usd', "The group's USD budget (groups with one).", (group) => group.budgetUsd);
  perGroup('llm_gateway_group_spent_usd', "The group's settled spend on this host.", (group) => group.spentUsd);
  perGroup('llm_gateway_group_reserved_usd', 'USD held for calls of the group in flight on this host.', (group) => group.reservedUsd);
  perGroup('llm_gateway_group_remaining_usd', 'Budget left to reserve (every host, with a shared store); groups with a budget.', (group) => {
    if (group.budgetUsd === undefined) return undefined;
    const spent = group.shared?.totalUsd ?? group.spentUsd;
    const reserved = group.shared?.reservedUsd ?? group.reservedUsd;
    return Math.max(0, group.budgetUsd - spent - reserved);
  });
  new Gauge({
    name: 'llm_gateway_live_keys',
    help: 'Keys minted and not yet revoked or expired.',
    registers: [register],
    collect() {
      this.set(current()?.totals.liveKeys ?? 0);
    },
  });
  new Gauge({
    name: 'llm_gateway_in_flight_calls',
    help: 'Calls being served right now.',
    registers: [register],
    collect() {
      this.set(current()?.totals.inFlight ?? 0);
    },
  });
  if (!keyLabels) return;
  new Gauge({
    name: 'llm_gateway_key_spent_usd',
    help: `Each live key's spend (at most ${MAX_KEY_SERIES} keys).`,
    labelNames: ['key', 'group'] as const,
    registers: [register],
    collect() {
      this.reset();
      for (const key of (current()?.keys ?? []).slice(0, MAX_KEY_SERIES)) {
        this.set({ key: key.id, group: groups.of(key.group) }, key.spentUsd);
      }
    },
  });
}
