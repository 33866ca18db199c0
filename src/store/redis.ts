// Group budgets and rates shared by several gateways ("hosts") through Redis: the SharedBudgets of
// metering/shared.ts on a real, well-known engine (ioredis). Every decision that must be atomic across
// hosts is one Lua script on the server, timed by the server's clock (redis.call('TIME')), so hosts'
// clocks never matter. Each host stays the source of truth for its own spend: it republishes its
// ledger total with max semantics, so a group total never goes backwards when Redis loses its data.
//
// Keys of one group share a hash tag (`{g:GROUP}`), so a group's keys sit in one cluster slot:
//   PREFIX{g:G}:hosts        HASH hostId -> cumulative settled USD of that host
//   PREFIX{g:G}:res          HASH callId -> USD reserved by a call in flight
//   PREFIX{g:G}:leases       ZSET callId -> lease expiry (server ms); an expired lease frees its reservation
//   PREFIX{g:G}:epoch        server ms when the store first saw the group; missing = new or lost data
//   PREFIX{g:G}:done:CALLID  settle marker (24 h): a settle retried after a lost reply books nothing twice
//   PREFIX{g:G}:rpm:W / :tpm:W  request and token counters of one-minute window W (server time)
//
// Lost data: a missing epoch means Redis is new or lost the group. The store then answers `warming`
// for warmupMs while every host publishes (every publishIntervalMs) its own ledger total and the last
// total it saw of every other host (so a dead host's spend survives as long as any host saw it).
// A reserve sums the group's hosts (at most 1024 remembered) and its reservations in flight: O(calls in
// flight), about 0.2 ms with a few, 0.6 ms with a thousand, on loopback.
// Fail closed: while the connection is not ready, reserve and admitRate reject at once with
// StoreUnavailable; a command that times out drops the connection, which reconnects forever.
import { createHash, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import {
  type GroupSpend,
  type RateOutcome,
  type ReserveOutcome,
  type SharedBudgets,
  type SharedReservation,
  type StoreState,
  StoreUnavailable,
} from '../metering/shared.ts';

export interface RedisStoreOptions {
  /** redis://, rediss:// or a Unix socket path (unix:///path or /path). */
  url: string;
  /** This gateway's id among the hosts (config gives hostname + a short hash of the state dir). */
  hostId: string;
  /** This host's settled spend per group so far, from its own durable ledger (cumulative over its life). */
  localSpend(): Record<string, number>;
  /** Groups this host knows budgets for (published each interval even before any spend). */
  groups(): string[];
  /** A reservation not renewed for this long expires (a dead host's). Default 30 s. */
  leaseMs?: number;
  /** How often this host publishes its spend and refreshes the snapshots. Default 1 s. */
  publishIntervalMs?: number;
  /** How long a group stays `warming` after the store lost it. Default 3 x publishIntervalMs. */
  warmupMs?: number;
  /** Longest wait for one command before the store counts as unavailable. Default 1 s. */
  commandTimeoutMs?: number;
  /** Length of a rate window (tests shorten it). Default one minute. */
  rateWindowMs?: number;
  /** Key prefix (tests use a unique one). Default 'llmgw:'. */
  prefix?: string;
  /** State changes at info/warn; never the URL's password. */
  logger?: Logger;
}

export type RedisStore = SharedBudgets & {
  /** Resolves once connected and this host's spend is published; rejects with StoreUnavailable after a few command timeouts. */
  ready(): Promise<void>;
};

const HOST_ID = /^[\x21-\x7e]{1,128}$/;
const SAFE_GROUP = /^[A-Za-z0-9_.-]{1,128}$/;
/** Bound on the other hosts' totals one store remembers per group (and on a host id's length). */
const MAX_HOSTS = 1024;
const MAX_HOST_ID = 128;
const SETTLE_BACKOFF_MS = [100, 200, 400, 800, 1600, 2000];

// Shared by the scripts: server time, the purge of expired leases, the sum of a hash's values.
const LUA_COMMON = `
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function purge(res, leases, now)
  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
  for _, id in ipairs(expired) do redis.call('HDEL', res, id) end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', leases, '-inf', now) end
end
local function sum(key)
  local s = 0
  for _, v in ipairs(redis.call('HVALS', key)) do s = s + (tonumber(v) or 0) end
  return s
end
`;

// KEYS hosts res leases epoch; ARGV callId usd limit leaseMs warmupMs.
// -> { outcome, spent, reserved, warmingLeftMs }
const RESERVE = `${LUA_COMMON}
local now = nowMs()
local epoch = redis.call('GET', KEYS[4])
local warm
if not epoch then
  redis.call('SET', KEYS[4], now)
  warm = math.max(1, tonumber(ARGV[5]))
else
  warm = tonumber(epoch) + tonumber(ARGV[5]) - now
end
purge(KEYS[2], KEYS[3], now)
local spent, reserved = sum(KEYS[1]), sum(KEYS[2])
local usd, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
if warm > 0 then return { 'warming', tostring(spent), tostring(reserved), tostring(warm) } end
if spent + reserved + usd > limit then
  if spent + usd > limit then return { 'exhausted', tostring(spent), tostring(reserved), '0' } end
  return { 'held', tostring(spent), tostring(reserved), '0' }
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
return { 'ok', tostring(spent), tostring(reserved), '0' }
`;

// KEYS hosts res leases done; ARGV hostId callId cost. The marker makes a retried settle book nothing.
const SETTLE = `
if redis.call('SET', KEYS[4], '1', 'NX', 'EX', 86400) then
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[1], ARGV[3])
end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
`;

// KEYS leases; ARGV leaseMs callId... Only leases still there are extended (XX): an expired one stays gone.
const RENEW = `${LUA_COMMON}
local expiry = nowMs() + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i]) end
return 1
`;

// KEYS hosts res leases epoch; ARGV warmupMs then (hostId, total) pairs, each raised to at least total.
// -> { hosts as a flat list, reserved, warmingLeftMs }
const PUBLISH = `${LUA_COMMON}
local now = nowMs()
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  redis.call('SET', KEYS[4], now)
  epoch = now
end
for i = 2, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if not current or tonumber(ARGV[i + 1]) > (tonumber(current) or 0) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
purge(KEYS[2], KEYS[3], now)
return { redis.call('HGETALL', KEYS[1]), tostring(sum(KEYS[2])), tostring(tonumber(epoch) + tonumber(ARGV[1]) - now) }
`;

// KEYS base (PREFIX{g:G}:); ARGV rpm tpm windowMs (a negative limit: none). Window keys are built here
// from the base, which carries the group's hash tag, so they sit in the declared key's slot.
// The estimate over the last minute is current + previous x (1 - elapsed fraction of current).
// -> { 'ok' | 'rpm' | 'tpm', retryAfterMs }
const RATE = `${LUA_COMMON}
local now = nowMs()
local W = tonumber(ARGV[3])
local w = math.floor(now / W)
local t = now - w * W
local function count(kind, win) return tonumber(redis.call('GET', KEYS[1] .. kind .. ':' .. win) or '0') or 0 end
-- ms until current + previous x (1 - elapsed) falls to cap, if no other traffic comes.
local function wait(cur, prev, cap)
  if cap < 0 then return W - t end
  if cur <= cap and prev > 0 then
    local at = W * (1 - (cap - cur) / prev)
    if at < W then return math.max(1, math.ceil(at - t) + 1) end
  end
  local at = 0
  if cur > cap then at = W * (1 - cap / cur) end
  return math.ceil(W - t + at) + 1
end
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm >= 0 then
  local cur, prev = count('tpm', w), count('tpm', w - 1)
  if cur + prev * (1 - t / W) >= tpm then return { 'tpm', wait(cur, prev, tpm) } end
end
if rpm >= 0 then
  local cur, prev = count('rpm', w), count('rpm', w - 1)
  if cur + 1 + prev * (1 - t / W) > rpm then return { 'rpm', wait(cur, prev, rpm - 1) } end
end
local key = KEYS[1] .. 'rpm:' .. w
redis.call('INCR', key)
redis.call('PEXPIRE', key, 2 * W + 1000)
return { 'ok', 0 }
`;

// KEYS base; ARGV tokens windowMs.
const TOKENS = `${LUA_COMMON}
local W = tonumber(ARGV[2])
local key = KEYS[1] .. 'tpm:' .. math.floor(nowMs() / W)
redis.call('INCRBY', key, ARGV[1])
redis.call('PEXPIRE', key, 2 * W + 1000)
return 1
`;

type Args = (string | number)[];
/** The scripts as ioredis defines them (defineCommand adds them to the client and its pipelines). */
interface Scripts {
  llmgwReserve(...args: Args): Promise<[string, string, string, string]>;
  llmgwSettle(...args: Args): Promise<number>;
  llmgwRenew(...args: Args): Promise<number>;
  llmgwPublish(...args: Args): Promise<[string[], string, string]>;
  llmgwRate(...args: Args): Promise<[string, number]>;
  llmgwTokens(...args: Args): Promise<number>;
}

/** The keys of one group. */
interface GroupKeys {
  hosts: string;
  res: string;
  leases: string;
  epoch: string;
  base: string;
}

function groupKeys(prefix: string, group: string): GroupKeys {
  // A name outside the safe set (braces, colons, controls, too long) is hashed, with a marker no safe name has.
  const name = SAFE_GROUP.test(group) ? group : `#${createHash('sha256').update(group).digest('hex').slice(0, 32)}`;
  const base = `${prefix}{g:${name}}:`;
  return {
    hosts: `${base}hosts`,
    res: `${base}res`,
    leases: `${base}leases`,
    epoch: `${base}epoch`,
    base,
  };
}

/** Where the store connects, for logs: never the password. */
function describeTarget(url: string): { target: string; secrets: string[] } {
  if (url.startsWith('/')) return { target: url, secrets: [] };
  try {
    const parsed = new URL(url);
    const secrets = [parsed.password, decodeURIComponent(parsed.password)].filter((s) => s.length > 0);
    const target = parsed.protocol === 'unix:' ? `unix://${parsed.pathname}` : `${parsed.protocol}//${parsed.host}`;
    return { target, secrets };
  } catch {
    return { target: '(unparsable store url)', secrets: [] };
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`${name} must be a finite number >= 0`);
  return value;
}

export function createRedisStore(options: RedisStoreOptions): RedisStore {
  const { hostId, logger } = options;
  if (!HOST_ID.test(hostId)) throw new RangeError('hostId must be 1 to 128 printable characters without spaces');
  const prefix = options.prefix ?? 'llmgw:';
  if (/[{}]/.test(prefix)) throw new RangeError('the store prefix must not contain braces (they would change the hash tag)');
  const leaseMs = positive(options.leaseMs, 30_000, 'leaseMs') || 1;
  const publishIntervalMs = positive(options.publishIntervalMs, 1_000, 'publishIntervalMs') || 1;
  const warmupMs = positive(options.warmupMs, 3 * publishIntervalMs, 'warmupMs');
  const commandTimeoutMs = positive(options.commandTimeoutMs, 1_000, 'commandTimeoutMs') || 1;
  const rateWindowMs = Math.max(1, Math.round(positive(options.rateWindowMs, 60_000, 'rateWindowMs')));
  const { target, secrets } = describeTarget(options.url);
  const redact = (text: string) => secrets.reduce((out, secret) => out.split(secret).join('***'), text);

  const client = new Redis(options.url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    autoResendUnfulfilledCommands: false,
    commandTimeout: commandTimeoutMs,
    connectTimeout: Math.max(commandTimeoutMs, 1_000),
    // A socket we drop (a hung server, below) waits this long for the peer's FIN before it is destroyed.
    disconnectTimeout: commandTimeoutMs,
    retryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times - 1, 5), 2_000),
  });
  client.defineCommand('llmgwReserve', { numberOfKeys: 4, lua: RESERVE });
  client.defineCommand('llmgwSettle', { numberOfKeys: 4, lua: SETTLE });
  client.defineCommand('llmgwRenew', { numberOfKeys: 1, lua: RENEW });
  client.defineCommand('llmgwPublish', { numberOfKeys: 4, lua: PUBLISH });
  client.defineCommand('llmgwRate', { numberOfKeys: 1, lua: RATE });
  client.defineCommand('llmgwTokens', { numberOfKeys: 1, lua: TOKENS });
  const scripts = client as unknown as Scripts;

  let closed = false;
  /** A command timed out: the connection is being dropped and counts as down until a fresh one is ready. */
  let stalled = false;
  let warmingUntil = 0;
  let wasUp = false;
  let lastError = '';
  /** Unsettled reservations, renewed every leaseMs / 3. */
  const live = new Map<string, { keys: GroupKeys }>();
  /** Per group, the USD of settles not yet taken by the store (not republished from the ledger meanwhile). */
  const unsettled = new Map<string, number>();
  const settling = new Set<Promise<void>>();
  /** Per group, the last total seen of every other host. */
  const seen = new Map<string, Map<string, number>>();
  const snapshots = new Map<string, GroupSpend>();
  const touched = new Set<string>();
  /** Settle loops waiting to retry: woken at once when the connection is back (or on close). */
  const sleepers = new Set<() => void>();

  const isReady = () => !closed && !stalled && client.status === 'ready';
  const unavailable = (why: string) => new StoreUnavailable(redact(`shared store ${target} unavailable: ${why}`));
  const failure = (err: unknown): StoreUnavailable => {
    const message = err instanceof Error ? err.message : String(err);
    // A server that stopped answering keeps the socket open: drop it, so the store counts as down until
    // a fresh connection passes its ready check.
    if (message === 'Command timed out' && !stalled && client.status === 'ready') {
      stalled = true;
      logger?.warn({ store: target }, 'shared store timed out; reconnecting');
      client.disconnect(true);
    }
    return err instanceof StoreUnavailable ? err : unavailable(message);
  };

  client.on('error', (err: Error) => {
    const message = redact(err.message);
    if (message !== lastError) logger?.warn({ store: target, err: message }, 'shared store error');
    lastError = message;
  });
  client.on('ready', () => {
    lastError = '';
    stalled = false;
    wasUp = true;
    logger?.info({ store: target, hostId }, 'shared store up');
    for (const wake of [...sleepers]) wake();
    void publish();
  });
  client.on('close', () => {
    if (wasUp && !closed) logger?.warn({ store: target }, 'shared store down; reconnecting');
    wasUp = false;
  });

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      timer.unref();
      sleepers.add(wake);
    });

  const noteWarming = (leftMs: number) => {
    if (!(leftMs > 0)) return;
    if (Date.now() >= warmingUntil) logger?.info({ store: target, leftMs }, 'shared store warming: hosts are restoring its spend');
    warmingUntil = Math.max(warmingUntil, Date.now() + leftMs);
  };

  // Publish: this host's ledger total (less settles still on their way, which add to it when taken)
  // and every other host's last seen total, each raised with max semantics; keeps the snapshot.
  let publishing: Promise<void> | undefined;
  const publish = (): Promise<void> => {
    publishing ??= publishOnce().finally(() => {
      publishing = undefined;
    });
    return publishing;
  };
  const publishOnce = async () => {
    if (!isReady()) return;
    let local: Record<string, number> = {};
    let known: string[] = [];
    try {
      local = options.localSpend();
      known = options.groups();
    } catch (err) {
      logger?.warn({ err: err instanceof Error ? err.message : String(err) }, 'shared store: reading local spend failed');
    }
    const groups = new Set([...known, ...touched]);
    await Promise.all(
      [...groups].map(async (group) => {
        const keys = groupKeys(prefix, group);
        const mine = Math.max(0, (Number(local[group]) || 0) - (unsettled.get(group) ?? 0));
        const args: Args = [keys.hosts, keys.res, keys.leases, keys.epoch, warmupMs, hostId, mine];
        for (const [id, total] of seen.get(group) ?? []) args.push(id, total);
        try {
          const [flat, reserved, warmLeft] = await scripts.llmgwPublish(...args);
          const hosts: Record<string, number> = {};
          let totalUsd = 0;
          for (let i = 0; i + 1 < flat.length; i += 2) {
            const value = Number(flat[i + 1]);
            if (!Number.isFinite(value)) continue;
            hosts[flat[i]!] = value;
            totalUsd += value;
            remember(group, flat[i]!, value);
          }
          snapshots.set(group, {
            totalUsd,
            reservedUsd: Number(reserved) || 0,
            hosts,
          });
          noteWarming(Number(warmLeft));
        } catch (err) {
          failure(err);
        }
      }),
    );
  };
  const remember = (group: string, id: string, value: number) => {
    if (id === hostId || id.length > MAX_HOST_ID) return;
    const hosts = seen.get(group) ?? new Map<string, number>();
    seen.set(group, hosts);
    const before = hosts.get(id);
    if (before === undefined && hosts.size >= MAX_HOSTS) return;
    if (before === undefined || value > before) hosts.set(id, value);
  };

  const renew = async () => {
    if (!isReady() || live.size === 0) return;
    const byGroup = new Map<string, { leases: string; ids: string[] }>();
    for (const [callId, { keys }] of live) {
      const entry = byGroup.get(keys.leases) ?? {
        leases: keys.leases,
        ids: [],
      };
      entry.ids.push(callId);
      byGroup.set(keys.leases, entry);
    }
    const pipeline = client.pipeline() as unknown as Scripts & {
      exec(): Promise<unknown>;
    };
    for (const { leases, ids } of byGroup.values()) pipeline.llmgwRenew(leases, leaseMs, ...ids);
    await pipeline.exec().catch(failure);
  };

  const publishTimer = setInterval(() => void publish(), publishIntervalMs);
  publishTimer.unref();
  const renewTimer = setInterval(() => void renew(), Math.max(1, Math.floor(leaseMs / 3)));
  renewTimer.unref();

  /** Retries one settle until the store takes it, or until close gives up. */
  const settleLoop = async (keys: GroupKeys, callId: string, cost: number) => {
    for (let attempt = 0; ; attempt++) {
      if (!stalled && client.status === 'ready') {
        try {
          await scripts.llmgwSettle(keys.hosts, keys.res, keys.leases, `${keys.base}done:${callId}`, hostId, callId, cost);
          return;
        } catch (err) {
          failure(err);
        }
      }
      if (closed) return;
      await sleep(SETTLE_BACKOFF_MS[Math.min(attempt, SETTLE_BACKOFF_MS.length - 1)]!);
    }
  };
  const enqueueSettle = (keys: GroupKeys, group: string, callId: string, cost: number) => {
    unsettled.set(group, (unsettled.get(group) ?? 0) + cost);
    const done: Promise<void> = settleLoop(keys, callId, cost).finally(() => {
      const left = (unsettled.get(group) ?? 0) - cost;
      if (left > 1e-12) unsettled.set(group, left);
      else unsettled.delete(group);
      settling.delete(done);
    });
    settling.add(done);
  };

  let firstReady: Promise<void> | undefined;

  return {
    ready() {
      firstReady ??= new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          client.off('ready', onReady);
          firstReady = undefined;
          reject(unavailable(lastError || 'no connection'));
        }, 3 * commandTimeoutMs);
        const onReady = () => {
          clearTimeout(timer);
          publish().then(resolve, resolve);
        };
        if (client.status === 'ready') onReady();
        else client.once('ready', onReady);
      });
      return firstReady;
    },

    state(): StoreState {
      if (!isReady()) return 'down';
      return Date.now() < warmingUntil ? 'warming' : 'up';
    },

    async reserve(group, usd, limitUsd) {
      if (!(Number.isFinite(usd) && usd >= 0 && Number.isFinite(limitUsd))) throw new RangeError('reserve needs finite amounts, usd >= 0');
      if (!isReady()) throw unavailable(closed ? 'closed' : 'not connected');
      touched.add(group);
      const keys = groupKeys(prefix, group);
      const callId = randomUUID();
      let reply: [string, string, string, string];
      try {
        reply = await scripts.llmgwReserve(keys.hosts, keys.res, keys.leases, keys.epoch, callId, usd, limitUsd, leaseMs, warmupMs);
      } catch (err) {
        throw failure(err);
      }
      const [outcome, spent, reserved, warmLeft] = reply;
      const spentUsd = Number(spent) || 0;
      const reservedUsd = Number(reserved) || 0;
      if (outcome === 'warming') noteWarming(Number(warmLeft));
      if (outcome === 'warming' || outcome === 'held' || outcome === 'exhausted') return { ok: false, reason: outcome, spentUsd, reservedUsd };
      live.set(callId, { keys });
      let settled = false;
      const reservation: SharedReservation = {
        settle(costUsd: number) {
          if (settled) return;
          settled = true;
          live.delete(callId);
          enqueueSettle(keys, group, callId, Number.isFinite(costUsd) && costUsd > 0 ? costUsd : 0);
        },
      };
      return { ok: true, reservation } satisfies ReserveOutcome;
    },

    async admitRate(group, limits): Promise<RateOutcome> {
      if (!isReady()) throw unavailable(closed ? 'closed' : 'not connected');
      const limit = (value: number | undefined) => (value !== undefined && Number.isFinite(value) ? Math.max(0, value) : -1);
      let reply: [string, number];
      try {
        reply = await scripts.llmgwRate(groupKeys(prefix, group).base, limit(limits.rpm), limit(limits.tpm), rateWindowMs);
      } catch (err) {
        throw failure(err);
      }
      const [outcome, retryAfterMs] = reply;
      if (outcome === 'rpm' || outcome === 'tpm')
        return {
          ok: false,
          limit: outcome,
          retryAfterMs: Number(retryAfterMs),
        };
      return { ok: true };
    },

    addTokens(group, tokens) {
      const whole = Math.round(tokens);
      if (!(whole > 0) || !Number.isSafeInteger(whole) || !isReady()) return;
      scripts.llmgwTokens(groupKeys(prefix, group).base, whole, rateWindowMs).catch(failure);
    },

    groupSpend(group) {
      return snapshots.get(group);
    },

    async close() {
      if (closed) return;
      // Settles still on their way get a bounded last chance before the connection goes.
      const deadline = new Promise<void>((resolve) => setTimeout(resolve, 3 * commandTimeoutMs).unref());
      clearInterval(publishTimer);
      clearInterval(renewTimer);
      await Promise.race([Promise.all([...settling]), deadline]);
      closed = true;
      for (const wake of [...sleepers]) wake();
      if (settling.size > 0) logger?.warn({ store: target, settles: settling.size }, 'shared store closed with settles not taken (the ledger keeps them)');
      try {
        if (!stalled && client.status === 'ready') await client.quit();
        else client.disconnect();
      } catch {
        client.disconnect();
      }
    },
  };
}
