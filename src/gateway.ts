// createGateway: the library entry point. One gateway = one key store, one HTTP request handler
// shared by every key's socket, one upstream connection pool, and the books (limits, budgets,
// audit). No globals, no child processes: it runs in the host's own event loop, and several can
// live in one process.
import { mkdir, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import type { Socket } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino, type Logger } from 'pino';
import { BodyMemory } from './http/body-memory.ts';
import { AuditTrail, type AuditOptions } from './metering/audit.ts';
import { boundRecord, type CallRecord } from './metering/call-record.ts';
import { KeyStore, type KeyInfo, type KeyRecord, type MintOptions, type Owner, type ServiceGrant } from './keys/store.ts';
import { LeaseJournal, type Lease } from './keys/leases.ts';
import { Accounting } from './metering/accounting.ts';
import { Ledger } from './metering/ledger.ts';
import { DEFAULT_PRICES, Pricing, type Price, type PriceTable } from './metering/pricing.ts';
import { DEFAULT_PER_USE_PRICES, type PerUsePrices } from './metering/server-tools.ts';
import { validateLimits, validateServerTools, type KeyLimits, type ServerToolClass } from './keys/limits.ts';
import { checkNonNegative, ValidationError } from './util/validation.ts';
import { DEFAULT_RETRY, Health, type RetryPolicy } from './upstream/retry.ts';
import { createGitHubRelay, type GitHubOptions, type GitHubRelay, gitHubPathHandler } from './github/relay.ts';
import { Router, type RouteConfig } from './upstream/router.ts';
import { closeUpstreams, providersFromEnv, resolveUpstreams, type NetworkOptions, type ProvidersConfig, type Upstream } from './upstream/providers.ts';
import { createRequestHandler, type Routing } from './http/handler.ts';
import { createTokenGuard } from './http/token-guard.ts';
import { Refusals } from './metering/refusals.ts';
import { refuseUpgrade } from './http/upgrade.ts';
import type { EgressSettings } from './egress/admission.ts';
import { EgressBooks, type EgressTotals } from './egress/books.ts';
import { boundEgressRecord } from './egress/record.ts';
import { EgressPolicy } from './egress/policy.ts';
import { createEgressProxy, egressSettings, type EgressOptions } from './egress/proxy.ts';
import { closeServices, createServices, type Service, type ServiceOptions } from './services/service.ts';
import { serviceGranted, servicePathHandler } from './services/relay.ts';
import { writeMcpConfig } from './services/client.ts';
import { SHIM_PORT } from './keys/client-env.ts';
import type { GroupRates } from './metering/accounting.ts';
import type { GroupSpend, SharedBudgets, StoreState } from './metering/shared.ts';
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';

export interface GatewayOptions {
  /** Holds `keys/<id>/gateway.sock`, the spend ledger and the audit log. Created (0700) if missing.
   * Keep it short: socket paths are limited to 107 bytes. */
  stateDir: string;
  /** Named upstreams and their real credentials. Default: the standard environment variables (see README). */
  providers?: ProvidersConfig;
  /** Model routes: model globs to providers, renames, fallbacks. Default: each client's own provider. */
  routes?: RouteConfig[];
  /** Retries and fallbacks before the client has seen a byte. */
  retry?: Partial<RetryPolicy>;
  /** Outbound proxy and extra CAs for the upstream connections. */
  network?: NetworkOptions;
  /** Default pino at level `warn` on stderr. Request bodies and credentials are never logged. */
  logger?: Logger;
  /** Largest request body accepted for any key, in bytes. Default 32 MiB (the Messages API's own limit). */
  maxBodyBytes?: number;
  /**
   * Request-body bytes held in memory at once, all keys together (bodies are kept until their call
   * ends). Default 256 MiB. Past it a request is answered 429 with `retry-after`.
   */
  maxBodyMemoryBytes?: number;
  /** One key's share of `maxBodyMemoryBytes`. Default a quarter of it (64 MiB: two 32 MiB bodies). */
  maxBodyMemoryPerKeyBytes?: number;
  /** Open connections one key's socket accepts at once. Default 256. */
  maxConnectionsPerKey?: number;
  /** Client side: time to send all request headers, longest silence while sending the body (30 s each).
   * Upstream timeouts are per provider (`providers.<name>.timeouts`). */
  timeouts?: { clientHeadersMs?: number; clientBodyIdleMs?: number };
  /** Default owner for key directories and sockets (the containers' user). */
  socketOwner?: Owner;
  /** Limits every key gets unless `mint` says otherwise. */
  defaultLimits?: KeyLimits;
  /** USD budgets per group, shared by all the group's keys; spend persists across restarts. */
  groupBudgets?: Record<string, number>;
  /** Model globs per group (its allowed routes), on top of each key's own `models`. */
  groupModels?: Record<string, string[]>;
  /** Prices (USD per million tokens) added to or replacing the shipped table, by model name or prefix. */
  prices?: PriceTable;
  /** Price for models in no table: 'deny' refuses them. Default: charged at $15 / $75 per MTok. */
  unknownModelPrice?: Price | 'deny';
  /**
   * How long a call whose worst case does not fit the budget left, because calls in flight hold
   * the rest, waits for them to settle (in arrival order) before a 429. Default 30 s.
   */
  budgetWaitMs?: number;
  /** Server tool classes per group (e.g. `{ research: ['web_search', 'web_fetch'] }`), on top of each key's `serverTools`. */
  groupServerTools?: Record<string, ServerToolClass[]>;
  /** USD per use of server tools billed per use. Default: web search $0.01, web fetch $0. */
  serverToolPrices?: Partial<PerUsePrices>;
  audit?: AuditOptions;
  /**
   * Record live keys in the state dir and re-create them at start, so containers outlive a gateway
   * restart. Default false: keys die with the gateway.
   */
  persistKeys?: boolean;
  /** Called once per proxied call, after its last byte. */
  onCall?: (record: CallRecord) => void;
  /** Git smart HTTP and the GitHub REST API for keys minted with a `github` scope (docs/github.md). */
  github?: GitHubOptions;
  /**
   * The forward proxy on each key's socket (docs/egress.md): presets, each group's allowlist, pinned
   * hosts, DNS servers, timeouts. A key's own list is its `egress` limit. Default: no egress at all.
   */
  egress?: EgressOptions;
  /**
   * HTTP services and MCP servers behind the sockets, by name (docs/services.md): each with its base
   * URL and the host's credential, reached at `/svc/NAME/` by keys granted it (`mint({ services })`
   * or the service's `groups`).
   */
  services?: Record<string, ServiceOptions>;
  /**
   * Requests and tokens per minute per group, over all its keys: `{ ci: { rpm: 600, tpm: 2_000_000 } }`.
   * Shared by every host with `store`.
   */
  groupRates?: Record<string, GroupRates>;
  /**
   * A store shared with other gateways (docs/scale-out.md): group budgets and group rates then hold
   * across every host that names it. Not reconfigurable (a restart changes it).
   */
  store?: StoreOptions;
}

export interface StoreOptions {
  /** `redis://`, `rediss://` or a Unix socket path. */
  url: string;
  /** This gateway among the hosts. Default: the host name and a hash of the state dir. */
  hostId?: string;
  /** When the store cannot answer a group rate check, let the call through (budgets always fail closed). */
  failOpenRates?: boolean;
  /** A reservation a host stops renewing (it died) frees its budget after this long. Default 30 s. */
  leaseMs?: number;
  /** How often each host publishes its spend (and restores a store that lost its data). Default 1 s. */
  publishIntervalMs?: number;
}

/**
 * What `reconfigure` can change on a running gateway. Each field given replaces the old value whole
 * (`groupBudgets: {}` removes every group budget; an explicit `undefined` restores the default); a
 * field left out keeps its value.
 */
export type Reconfigurable = Partial<
  Pick<
    GatewayOptions,
    | 'providers'
    | 'routes'
    | 'retry'
    | 'network'
    | 'defaultLimits'
    | 'groupBudgets'
    | 'groupModels'
    | 'prices'
    | 'unknownModelPrice'
    | 'budgetWaitMs'
    | 'github'
    | 'groupServerTools'
    | 'serverToolPrices'
    | 'egress'
    | 'services'
    | 'groupRates'
  >
>;

/** Every reconfigurable setting named (a config reload hands these over, so none keeps a stale value). */
export type CompleteSettings = Reconfigurable & Record<keyof Reconfigurable, unknown>;

/** `mint` options: who the key is for, and any limit that differs from the defaults. */
export type MintRequest = MintOptions &
  KeyLimits & {
    /** The shim's port inside the container, for the URLs in the key's `mcp.json`. Default 9460. */
    shimPort?: number;
  };

export interface KeySnapshot extends KeyInfo {
  limits: KeyLimits;
  spentUsd: number;
  /** Held for calls in flight, settled when they end. */
  reservedUsd: number;
  inFlight: number;
  calls: number;
  requestsLastMinute: number;
  tokensLastMinute: number;
  lastCallAt?: number;
  /** Requests refused in the last minute (what `maxRefusalsPerMinute` limits). */
  refusalsLastMinute: number;
  /** Refusals counted in an audit summary line instead of written one by one. */
  refusalsSuppressed: number;
  /** Newest first. */
  recentCalls: CallRecord[];
  /** Tunnels, bytes and refusals through the forward proxy, once the key used it. */
  egressUse?: EgressTotals;
}

export interface GroupSnapshot {
  group: string;
  /** This host's. */
  spentUsd: number;
  reservedUsd: number;
  budgetUsd?: number;
  liveKeys: number;
  /** With a shared store: the group's spend on every host, as the store last reported it. */
  shared?: GroupSpend;
}

export interface GatewaySnapshot {
  keys: KeySnapshot[];
  groups: GroupSnapshot[];
  /** The shared store, when there is one. */
  store?: { hostId: string; state: StoreState };
  totals: { liveKeys: number; inFlight: number; spentUsd: number };
}

export interface Gateway {
  readonly stateDir: string;
  /** Creates a key with its own socket directory. */
  mint(options: MintRequest): Promise<KeyInfo>;
  /** Closes the key's socket and connections and removes its directory. False if no such key. */
  revoke(id: string): Promise<boolean>;
  /** The live keys. */
  keys(): KeyInfo[];
  /**
   * Applies new settings without dropping live keys (config reload, token refresh): providers and
   * credentials for the next calls (calls in flight keep theirs), default limits for keys minted
   * from now on, group budgets, prices. Every field given replaces the old one whole, and all of
   * them are checked first: on a ValidationError nothing has changed.
   */
  reconfigure(settings: Reconfigurable): void;
  /** Sets (or with undefined, removes) a group's shared USD budget. */
  setGroupBudget(group: string, usd: number | undefined): void;
  /** Live keys with spend, limits and recent calls; groups with spend and budgets. */
  inspect(): GatewaySnapshot;
  /** Stops accepting, lets in-flight requests finish (up to `drainMs`, default 10 s), revokes every key. */
  close(options?: { drainMs?: number }): Promise<void>;
}

const MiB = 1024 * 1024;
/** Calls one key may have in flight unless its limits say otherwise (parallel subagents fit). */
const DEFAULT_MAX_CONCURRENT = 32;
const UNKNOWN_MODEL_PRICE: Price = { input: 15, output: 75 };

export async function createGateway(userOptions: GatewayOptions): Promise<Gateway> {
  const options = { ...userOptions };
  checkSettings(options);
  const stateDir = path.resolve(options.stateDir);
  const keysDir = path.join(stateDir, 'keys');
  await mkdir(keysDir, { recursive: true, mode: 0o700 });

  const logger = options.logger ?? pino({ level: 'warn' }, pino.destination(2));
  let outbound = buildOutbound(options);
  const keyOfSocket = new WeakMap<Socket, KeyRecord>();
  // Connections that came to a key's TCP listener: each of their requests must show the key's token.
  const tcpSockets = new WeakSet<Socket>();
  const leases = options.persistKeys ? await LeaseJournal.open(path.join(stateDir, 'leases.jsonl')) : undefined;
  const ledger = await Ledger.open(path.join(stateDir, 'spend.jsonl'), new Set(leases?.live.map((lease) => lease.id)), (error) =>
    logger.error({ err: error }, 'spend ledger write failed'),
  );
  const books: Books = {
    accounting: new Accounting({
      pricing: pricingFor(options),
      ledger,
      defaults: withDefaultLimits(options.defaultLimits),
      groupBudgets: options.groupBudgets ?? {},
      groupModels: options.groupModels ?? {},
      budgetWaitMs: options.budgetWaitMs,
      groupRates: options.groupRates,
      failOpenRates: options.store?.failOpenRates,
    }),
    audit: new AuditTrail(stateDir, options.audit),
    refusals: new Refusals(),
    egress: new EgressBooks(),
    egressRefusals: new Refusals(),
  };
  const { accounting, audit, refusals } = books;
  const shared = options.store && (await openStore(options.store, stateDir, ledger, accounting, logger));
  accounting.share(shared?.budgets);

  const server = createServer(options, books, logger, {
    keyOf: (socket) => keyOfSocket.get(socket),
    isTcp: (socket) => tcpSockets.has(socket),
    routing: () => outbound.routing,
    github: () => outbound.github,
    egress: () => outbound.egress,
    services: () => outbound.services,
  });

  const store = new KeyStore({
    keysDir,
    maxConnectionsPerKey: options.maxConnectionsPerKey ?? 256,
    keepDirsOnClose: options.persistKeys,
    onConnection(socket, key, transport) {
      keyOfSocket.set(socket, key);
      if (transport === 'tcp') tcpSockets.add(socket);
      server.emit('connection', socket);
    },
    onRefusedSource: refusalLog(logger, 'TCP connections from an address the key does not allow refused'),
    onRevoked(key, reason) {
      accounting.close(key.id);
      audit.forget(key.id);
      refusals.forget(key.id);
      books.egress.forget(key.id);
      books.egressRefusals.forget(key.id);
      // On close, leases stay: the next start re-creates the keys.
      if (reason !== 'closed') leases?.journal.revoked(key.id).catch((error: unknown) => logger.error({ err: error }, 'lease journal write failed'));
      logger.info({ key: key.id, group: key.group, reason }, 'key revoked');
    },
  });
  await restoreKeys(keysDir, leases, store, accounting, ledger, logger);

  /** The configured services the key may use. */
  const grantsOf = (record: KeyRecord, limits: KeyLimits): ServiceGrant[] =>
    [...outbound.services.values()].filter((service) => serviceGranted(service, record, limits)).map(({ name, kind }) => ({ name, kind }));
  /** What a host needs of a key, with whether its limits or group give it egress, and its services. */
  const info = (record: KeyRecord): KeyInfo => {
    const limits = accounting.get(record.id)?.limits ?? {};
    const services = grantsOf(record, limits);
    return { ...keyInfo(record), egress: outbound.egress.policy.grants(record.group, limits.egress), ...(services.length > 0 ? { services } : {}) };
  };

  let closed = false;
  return {
    stateDir,
    async mint(request) {
      if (closed) throw new Error('gateway is closed');
      const { group, label, ttlMs, owner, shimPort = SHIM_PORT, tcp, ...limits } = request;
      if (limits.egress !== undefined) outbound.egress.policy.check(limits.egress);
      checkServiceNames(limits.services, outbound.services);
      if (!Number.isInteger(shimPort) || shimPort < 1 || shimPort > 65535) throw new ValidationError('mint `shimPort`', 'must be a TCP port (1-65535)');
      const { record, token } = await store.mint({ group, label, ttlMs, owner: owner ?? options.socketOwner, tcp });
      try {
        const account = accounting.open(record.id, record.group, limits);
        // A TCP-mode container has no mount: its MCP config comes in its env (runner/contribute.ts).
        if (!record.tcp) await writeMcpConfig(record.dir, shimPort, grantsOf(record, account.limits), owner ?? options.socketOwner);
        const lease: Lease = {
          id: record.id,
          group,
          label,
          createdAt: record.createdAt,
          expiresAt: record.expiresAt,
          owner: owner ?? options.socketOwner,
          limits: account.limits,
          ...(record.tcp && { tcp: record.tcp, tokenSha256: record.tokenDigest!.toString('hex') }),
        };
        await leases?.journal.minted(lease);
      } catch (error) {
        await store.revoke(record.id);
        throw error;
      }
      logger.info({ key: record.id, group: record.group, label: record.label, tcp: record.tcp }, 'key minted');
      const minted = info(record);
      // The token leaves the gateway here, once; it is kept only as a digest.
      return minted.tcp ? { ...minted, tcp: { ...minted.tcp, token } } : minted;
    },
    revoke: (id) => store.revoke(id, 'revoked'),
    keys: () => store.list().map(info),
    reconfigure(settings) {
      const given = (field: keyof Reconfigurable) => Object.hasOwn(settings, field);
      const next: GatewayOptions = { ...options, ...settings };
      // Check and build everything before changing anything; what was opened for nothing is closed.
      checkSettings(next);
      const nextOutbound = buildOutbound(next, { current: outbound, given });
      const pricing = pricingFor(next);
      // Swap. Calls in flight finish on the old pools; close() waits for them.
      closeReplaced(outbound, nextOutbound);
      outbound = nextOutbound;
      Object.assign(options, settings);
      if (given('prices') || given('unknownModelPrice') || given('serverToolPrices')) accounting.setPricing(pricing);
      if (given('defaultLimits')) accounting.setDefaults(withDefaultLimits(next.defaultLimits));
      if (given('groupBudgets')) accounting.setGroupBudgets(next.groupBudgets ?? {});
      if (given('groupModels')) accounting.setGroupModels(next.groupModels ?? {});
      if (given('budgetWaitMs')) accounting.setBudgetWait(next.budgetWaitMs);
      if (given('groupRates')) accounting.setGroupRates(next.groupRates ?? {});
    },
    setGroupBudget: (group, usd) => accounting.setGroupBudget(group, usd),
    inspect: () => snapshotGateway(store.list(), books, info, shared),
    async close({ drainMs = 10_000 } = {}) {
      if (closed) return;
      closed = true;
      store.stopAccepting();
      const deadline = Date.now() + drainMs;
      while (store.list().some((key) => key.inFlight > 0) && Date.now() < deadline) await sleep(25);
      await Promise.all(store.list().map((key) => store.revoke(key.id, 'closed')));
      server.close();
      await closeUpstreams(outbound.upstreams);
      await outbound.github?.close();
      await closeServices(outbound.services);
      // Settles not yet taken by the store are flushed (bounded) before the ledger closes.
      await shared?.budgets.close();
      await Promise.all([ledger.close(), audit.close()]);
    },
  };
}

/** The shared store and this host's id in it. */
interface OpenStore {
  hostId: string;
  budgets: SharedBudgets;
}

/**
 * Connects to the shared store without waiting for it: a gateway whose store is down still serves
 * keys of groups without a shared budget, and the store's client reconnects on its own.
 */
async function openStore(options: StoreOptions, stateDir: string, ledger: Ledger, accounting: Accounting, logger: Logger): Promise<OpenStore> {
  // Loaded only when a store is configured: a gateway on its own never pays for the Redis client.
  const { createRedisStore } = await import('./store/redis.ts');
  const hostId = options.hostId ?? `${hostname()}-${createHash('sha256').update(stateDir).digest('hex').slice(0, 8)}`;
  const budgets = createRedisStore({
    url: options.url,
    hostId,
    localSpend: () => ledger.spentByGroup(),
    groups: () => accounting.budgetGroups(),
    leaseMs: options.leaseMs,
    publishIntervalMs: options.publishIntervalMs,
    logger,
  });
  budgets.ready().catch(() => logger.warn({ hostId }, 'shared store not reachable yet: calls of groups with a shared budget wait for it'));
  return { hostId, budgets };
}

/** The gateway's books: spend and limits, the audit trail, each key's recent refusals and its egress. */
interface Books {
  accounting: Accounting;
  audit: AuditTrail;
  refusals: Refusals;
  egress: EgressBooks;
  /**
   * Egress refusals, counted apart from API calls' against the same per-key limit: an agent whose
   * tool retries a refused install (pip: six CONNECTs) must not lock its own model calls out.
   */
  egressRefusals: Refusals;
}

/** Where calls go: the upstream pools, the routing over them, the GitHub relay, the services and the egress policy. Swapped whole. */
interface Outbound {
  upstreams: Map<string, Upstream>;
  routing: Routing;
  github: GitHubRelay | undefined;
  services: Map<string, Service>;
  egress: EgressSettings;
}

/**
 * Builds the outbound side from `settings`: all of it, or with `change`, only what the given fields
 * touch (the rest is `change.current`'s). On a failure whatever it opened is closed again.
 */
function buildOutbound(settings: GatewayOptions, change?: { current: Outbound; given(field: keyof Reconfigurable): boolean }): Outbound {
  const given = change?.given ?? (() => true);
  const rebuild = !change || given('providers') || given('network');
  const regitHub = !change || given('github') || (given('network') && settings.github !== undefined);
  const reservices = !change || given('services') || (given('network') && settings.services !== undefined);
  let upstreams = change?.current.upstreams;
  let services: Map<string, Service> | undefined;
  try {
    if (rebuild || !upstreams) upstreams = resolveUpstreams(settings.providers ?? providersFromEnv(), settings.network);
    const routing = !change || rebuild || given('routes') || given('retry') ? routingFor(upstreams, settings) : change.current.routing;
    const github = regitHub ? (settings.github ? createGitHubRelay(settings.github, settings.network) : undefined) : change?.current.github;
    const egress = !change || given('egress') || given('network') ? egressSettings(settings.egress, settings.network) : change.current.egress;
    services = reservices ? createServices(settings.services, settings.network) : change!.current.services;
    return { upstreams, routing, github, services, egress };
  } catch (error) {
    if (upstreams && upstreams !== change?.current.upstreams) void closeUpstreams(upstreams);
    if (services && services !== change?.current.services) void closeServices(services);
    throw error;
  }
}

/** Closes what `next` replaced of `previous`; calls in flight on it finish first (its pools drain). */
function closeReplaced(previous: Outbound, next: Outbound): void {
  if (next.upstreams !== previous.upstreams) void closeUpstreams(previous.upstreams);
  if (next.github !== previous.github) void previous.github?.close();
  if (next.services !== previous.services) void closeServices(previous.services);
}

/** The one HTTP server every key's socket hands its connections to, with the request handler. */
function createServer(
  options: GatewayOptions,
  books: Books,
  logger: Logger,
  live: {
    keyOf(socket: Socket): KeyRecord | undefined;
    isTcp(socket: Socket): boolean;
    routing(): Routing;
    github(): GitHubRelay | undefined;
    egress(): EgressSettings;
    services(): ReadonlyMap<string, Service>;
  },
): http.Server {
  const { accounting, audit, refusals } = books;
  const onInternalError = (error: unknown) => logger.error({ err: error }, 'internal error while handling a request');
  const bodyMemoryBytes = options.maxBodyMemoryBytes ?? 256 * MiB;
  const timeouts = { clientHeadersMs: 30_000, clientBodyIdleMs: 30_000, ...options.timeouts };
  const llm = createRequestHandler({
    keyOf: live.keyOf,
    routing: live.routing,
    accounting,
    maxBodyBytes: options.maxBodyBytes ?? 32 * MiB,
    bodyMemory: new BodyMemory({ totalBytes: bodyMemoryBytes, perKeyBytes: options.maxBodyMemoryPerKeyBytes ?? bodyMemoryBytes / 4 }),
    timeouts,
    refusals,
    onCall(record) {
      const bounded = boundRecord(record);
      // A call that ends after its key was revoked is logged, but nothing is kept for a dead key.
      const isLive = accounting.get(bounded.keyId) !== undefined;
      if (isLive && bounded.outcome === 'rejected') refusals.add(bounded.keyId);
      audit.write(bounded, isLive);
      options.onCall?.(bounded);
    },
    pathHandlers: [gitHubPathHandler(live.github), servicePathHandler(live.services)],
    // Read at each call: reconfigure replaces `options.groupServerTools`.
    groupServerTools: () => options.groupServerTools ?? {},
    // Server tools that make the provider fetch URLs follow the key's egress policy (host and port).
    egressAllows(key) {
      const { policy } = live.egress();
      const entries = accounting.get(key.id)?.limits.egress;
      if (!policy.grants(key.group, entries)) return undefined;
      return (host, port) => policy.decide(key.group, entries, { host, port }).allowed;
    },
    onInternalError,
  });
  const egress = createEgressProxy({
    keyOf: live.keyOf,
    limitsOf: (keyId) => accounting.get(keyId)?.limits,
    settings: live.egress,
    books: books.egress,
    refusals: books.egressRefusals,
    onRecord(unbounded) {
      const record = boundEgressRecord(unbounded);
      const isLive = accounting.get(record.keyId) !== undefined;
      if (isLive && record.decision === 'denied' && record.status !== 200) {
        books.egressRefusals.add(record.keyId);
        books.egress.account(record.keyId).refused(record);
      }
      audit.writeRecord('egress', record, record.decision === 'denied' && record.status !== 200 && isLive);
    },
    onInternalError,
    api: llm,
  });
  const guard = createTokenGuard({ keyOf: live.keyOf, isTcp: live.isTcp, onRefused: refusalLog(logger, "TCP requests without the key's token refused") });
  const server = http.createServer(
    {
      // Streams can run for many minutes: no overall request deadline, but slow headers are cut.
      requestTimeout: 0,
      headersTimeout: timeouts.clientHeadersMs,
      connectionsCheckingInterval: Math.min(5000, timeouts.clientHeadersMs),
      keepAliveTimeout: 60_000,
      noDelay: true,
    },
    guard.request(egress.request),
  );
  server.on('connect', guard.connect(egress.connect));
  server.on('upgrade', (req, socket) => refuseUpgrade(req, socket as Socket));
  // The server never listens itself (each key's listener hands it connections), but Node only
  // tracks connections for headersTimeout once a server has emitted 'listening'.
  server.emit('listening');
  return server;
}

/**
 * Warns about refusals on a key's TCP listener (requests without its token, connections from a
 * source its allowFrom does not list), at most once per key every 10 s with the count since:
 * whoever can reach a port can send many, and a log must not grow with them.
 */
function refusalLog(logger: Logger, message: string): (key: KeyRecord, remote: string | undefined) => void {
  const last = new WeakMap<KeyRecord, { at: number; unlogged: number }>();
  return (key, remote) => {
    const entry = last.get(key) ?? { at: 0, unlogged: 0 };
    entry.unlogged++;
    last.set(key, entry);
    if (Date.now() - entry.at < 10_000) return;
    logger.warn({ key: key.id, group: key.group, remote, refused: entry.unlogged }, message);
    entry.at = Date.now();
    entry.unlogged = 0;
  };
}

/**
 * Key directories left by an earlier run are stale, unless their lease brings them back: those are
 * re-created. A TCP key whose address is gone (its network was removed) is not, and its lease ends.
 */
async function restoreKeys(
  keysDir: string,
  leases: { journal: LeaseJournal; live: Lease[] } | undefined,
  store: KeyStore,
  accounting: Accounting,
  ledger: Ledger,
  logger: Logger,
): Promise<void> {
  const live = leases?.live ?? [];
  const restoring = new Set(live.map((lease) => lease.id));
  for (const entry of await readdir(keysDir)) {
    if (!restoring.has(entry)) await rm(path.join(keysDir, entry), { recursive: true, force: true });
  }
  for (const lease of live) {
    const minted = await store
      .mint(
        { group: lease.group, label: lease.label, owner: lease.owner, tcp: lease.tcp },
        {
          id: lease.id,
          createdAt: lease.createdAt,
          expiresAt: lease.expiresAt,
          tokenDigest: lease.tokenSha256 ? Buffer.from(lease.tokenSha256, 'hex') : undefined,
        },
      )
      .catch((error: unknown) => {
        // A socket key that cannot come back stops the start, as it always has.
        if (!lease.tcp) throw error;
        logger.error({ err: error, key: lease.id, tcp: lease.tcp }, 'key not restored: its TCP address is not available');
        // Its lease ends: so does its directory (the store keeps a restored key's on failure).
        return rm(path.join(keysDir, lease.id), { recursive: true, force: true })
          .then(() => leases!.journal.revoked(lease.id))
          .then(() => undefined);
      });
    if (!minted) continue;
    accounting.open(minted.record.id, minted.record.group, lease.limits).own.spentUsd = ledger.spentByRestoredKey(minted.record.id);
    logger.info({ key: minted.record.id, group: minted.record.group }, 'key restored');
  }
}

/** What `inspect` shows: each live key, each group, and the totals. */
function snapshotGateway(records: KeyRecord[], books: Books, info: (record: KeyRecord) => KeyInfo, shared: OpenStore | undefined): GatewaySnapshot {
  const { accounting } = books;
  const keys = records.map((record) => snapshotKey(record, books, info(record)));
  const groups = accounting.groupNames().map((group): GroupSnapshot => {
    const account = accounting.group(group);
    return {
      group,
      spentUsd: account.spentUsd,
      reservedUsd: account.reservedUsd,
      budgetUsd: account.limitUsd,
      liveKeys: keys.filter((key) => key.group === group).length,
      ...(shared ? { shared: shared.budgets.groupSpend(group) } : {}),
    };
  });
  return {
    keys,
    groups,
    ...(shared ? { store: { hostId: shared.hostId, state: shared.budgets.state() } } : {}),
    totals: {
      liveKeys: keys.length,
      inFlight: keys.reduce((sum, key) => sum + key.inFlight, 0),
      spentUsd: groups.reduce((sum, group) => sum + group.spentUsd, 0),
    },
  };
}

function snapshotKey(record: KeyRecord, { accounting, audit, refusals, egress }: Books, info: KeyInfo): KeySnapshot {
  const account = accounting.get(record.id)!;
  const recentCalls = audit.recentCalls(record.id);
  return {
    ...info,
    limits: account.limits,
    spentUsd: account.own.spentUsd,
    reservedUsd: account.own.reservedUsd,
    inFlight: record.inFlight,
    calls: account.calls,
    requestsLastMinute: account.rates.requestsLastMinute(),
    tokensLastMinute: account.rates.tokensLastMinute(),
    lastCallAt: recentCalls[0]?.time,
    refusalsLastMinute: refusals.lastMinute(record.id),
    refusalsSuppressed: audit.suppressedRefusals(record.id),
    recentCalls,
    egressUse: egress.totals(record.id),
  };
}

/** Limits every key has unless told otherwise: a bounded number of calls in flight. */
function withDefaultLimits(limits: KeyLimits = {}): KeyLimits {
  return { maxConcurrent: DEFAULT_MAX_CONCURRENT, ...limits };
}

function routingFor(upstreams: Map<string, Upstream>, options: Pick<GatewayOptions, 'routes' | 'retry'>): Routing {
  const retry = { ...DEFAULT_RETRY, ...options.retry };
  return { router: new Router(upstreams, options.routes), health: new Health(retry), retry };
}

function pricingFor(options: Pick<GatewayOptions, 'prices' | 'unknownModelPrice' | 'serverToolPrices'>): Pricing {
  // A configured entry replaces a shipped one's rates and keeps its limits unless it names them.
  const configured = Object.entries(options.prices ?? {}).map(([model, price]) => [model, { ...DEFAULT_PRICES[model], ...price }]);
  return new Pricing(
    { ...DEFAULT_PRICES, ...Object.fromEntries(configured) },
    options.unknownModelPrice === 'deny' ? undefined : (options.unknownModelPrice ?? UNKNOWN_MODEL_PRICE),
    { ...DEFAULT_PER_USE_PRICES, ...options.serverToolPrices },
  );
}

/** The settings that are plain values, checked (the others are checked as they are built). */
function checkSettings(settings: GatewayOptions): void {
  validateLimits({ ...settings.defaultLimits });
  for (const [group, usd] of Object.entries(settings.groupBudgets ?? {})) checkNonNegative(usd, `groupBudgets.${group}`);
  for (const [group, globs] of Object.entries(settings.groupModels ?? {})) {
    if (!Array.isArray(globs) || !globs.every((glob) => typeof glob === 'string'))
      throw new ValidationError(`groupModels.${group}`, 'must be an array of model globs');
  }
  for (const [group, classes] of Object.entries(settings.groupServerTools ?? {})) validateServerTools(classes, `groupServerTools.${group}`);
  for (const [model, price] of Object.entries(settings.prices ?? {})) checkPrice(price, `prices.${model}`);
  if (settings.unknownModelPrice !== undefined && settings.unknownModelPrice !== 'deny') checkPrice(settings.unknownModelPrice, 'unknownModelPrice');
  for (const [tool, usd] of Object.entries(settings.serverToolPrices ?? {})) checkNonNegative(usd, `serverToolPrices.${tool}`);
  if (settings.budgetWaitMs !== undefined) checkNonNegative(settings.budgetWaitMs, 'budgetWaitMs');
  if (settings.defaultLimits?.egress !== undefined) new EgressPolicy(settings.egress).check(settings.defaultLimits.egress, 'defaultLimits.egress');
  for (const [group, rates] of Object.entries(settings.groupRates ?? {})) {
    if (rates === null || typeof rates !== 'object') throw new ValidationError(`groupRates.${group}`, 'must be { rpm?, tpm? }');
    for (const [name, value] of Object.entries(rates)) {
      if ((name !== 'rpm' && name !== 'tpm') || !Number.isInteger(value) || (value as number) < 0) {
        throw new ValidationError(`groupRates.${group}.${name}`, 'rpm and tpm are non-negative integers');
      }
    }
  }
  if (settings.store !== undefined && (typeof settings.store?.url !== 'string' || settings.store.url === '')) {
    throw new ValidationError('store.url', 'is required: redis://HOST:PORT, rediss://..., or a Unix socket path');
  }
}

/** A key's `services` name configured services only (a typo would otherwise grant nothing, silently). */
function checkServiceNames(names: readonly string[] | undefined, services: ReadonlyMap<string, Service>): void {
  for (const name of names ?? []) {
    if (!services.has(name)) {
      const configured = services.size > 0 ? `configured: ${[...services.keys()].join(', ')}` : 'none is configured';
      throw new ValidationError('mint `services`', `no service "${String(name).slice(0, 64)}" (${configured})`);
    }
  }
}

/** Every rate and token count of a price (and of its `longContext` tier) is a non-negative number. */
function checkPrice(price: unknown, field: string): void {
  if (price === null || typeof price !== 'object') throw new ValidationError(field, 'must be a price { input, output, ... } in USD per million tokens');
  for (const [name, value] of Object.entries(price)) {
    if (typeof value === 'object' && value !== null) checkPrice(value, `${field}.${name}`);
    else if (value !== undefined) checkNonNegative(value, `${field}.${name}`);
  }
}

function keyInfo(record: KeyRecord): KeyInfo {
  const { id, group, label, dir, socketPath, createdAt, expiresAt, tcp } = record;
  return { id, group, label, dir, socketPath, createdAt, expiresAt, ...(tcp && { tcp }) };
}
