// Several gateways ("hosts") sharing one group's budget and rates through a real redis-server (issue
// 17): three gateway processes, each with its own state dir and ledger, and one stand-in provider in
// this process whose streams the tests can hold open. Concurrent streams on every host stay within the
// budget and the store's total is the sum of the hosts' records; a host SIGKILLed mid-stream frees
// what it held within its lease; a store that lost its data is restored from the hosts' ledgers before
// it admits anything; a store that is gone refuses shared-budget calls fast with a retryable 503 while
// other keys go on; AOF and a Unix socket work; a group's rpm holds across the hosts.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http, { type IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { startStandin, type Standin } from '../src/dev/standin.ts';
import type { GatewayOptions, KeyInfo } from '../src/index.ts';
import type { GroupRates } from '../src/metering/accounting.ts';
import { type ChildGateway, startChildGateway } from './support/child-gateway.ts';
import { REAL_ANTHROPIC_KEY } from './support/fixture.ts';
import { anthropicHeaders } from './support/http.ts';
import { hasRedisServer, type RedisServer, startRedis } from './support/redis.ts';
import { skipUnless } from './support/requirements.ts';

const HOST_IDS = ['host-a', 'host-b', 'host-c'];
const GROUP = 'team';
// Short, so the tests see leases expire and spend restored in seconds.
const LEASE_MS = 2000;
const PUBLISH_MS = 200;
/** Pause between a stand-in stream's events: a call stays in flight long enough to overlap others. */
const EVENT_MS = 5;
/** Spend compared across the hosts' records, their ledgers and the store (floats summed in different orders). */
const EPSILON_USD = 1e-6;
// The store's layout (src/store/redis.ts): a hash of every host's settled spend, one of the
// reservations in flight, and the moment the store first saw the group (missing: data lost).
const HOSTS_KEY = `llmgw:{g:${GROUP}}:hosts`;
const RESERVATIONS_KEY = `llmgw:{g:${GROUP}}:res`;
const EPOCH_KEY = `llmgw:{g:${GROUP}}:epoch`;

const messageBody = (stream: boolean) =>
  JSON.stringify({ model: 'claude-sonnet-4-5-20250929', max_tokens: 64, stream, messages: [{ role: 'user', content: 'hi' }] });

/** Holds every stand-in stream at its next event while shut: calls in flight stay in flight. */
class Gate {
  private held: { promise: Promise<void>; open: () => void } | undefined;
  shut(): void {
    if (this.held) return;
    let open!: () => void;
    const promise = new Promise<void>((resolve) => (open = resolve));
    this.held = { promise, open };
  }
  open(): void {
    this.held?.open();
    this.held = undefined;
  }
  pass(): Promise<void> {
    return this.held?.promise ?? sleep(EVENT_MS);
  }
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  ms: number;
}

/** One call on a key's socket, answered in full or failed within `timeoutMs`. */
function call(socketPath: string, { stream = true, timeoutMs = 45_000 } = {}): Promise<Answer> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const fail = (error: Error) => {
      clearTimeout(timer);
      reject(error);
    };
    const req = http.request({ socketPath, path: '/v1/messages', method: 'POST', headers: anthropicHeaders(), agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, ms: performance.now() - started });
      });
      res.on('error', fail);
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', fail);
    req.end(messageBody(stream));
  });
}

/** Polls `probe` until it returns a value (not undefined), failing after `timeoutMs`. */
async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

/** A plain read of the store with a client of its own (the hosts' are not ours to use). */
async function readStore<T>(redis: RedisServer, read: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
  try {
    await client.connect();
    return await read(client);
  } finally {
    client.disconnect();
  }
}

/** Every host's settled spend of the group, as the store holds it. */
const storedHosts = (redis: RedisServer) =>
  readStore(redis, async (client) => Object.fromEntries(Object.entries(await client.hgetall(HOSTS_KEY)).map(([host, usd]) => [host, Number(usd)])));

const sum = (values: Iterable<number>) => [...values].reduce((a, b) => a + b, 0);

interface Host {
  id: string;
  gateway: ChildGateway;
  stateDir: string;
  /** A key of the group with the shared budget. */
  team: KeyInfo;
  /** A key of a group without a budget. */
  free: KeyInfo;
}

/** This host's spend of the group from its own ledger (what it republishes to the store). */
async function ledgerSpend(host: Host): Promise<number> {
  const text = await readFile(path.join(host.stateDir, 'spend.jsonl'), 'utf8').catch(() => '');
  const lines = text.split('\n').filter(Boolean);
  return sum(
    lines
      .map((line) => JSON.parse(line) as { group: string; usd: number })
      .filter((entry) => entry.group === GROUP)
      .map((entry) => entry.usd),
  );
}

/** This host's audit records of the group's calls. */
async function callRecords(host: Host): Promise<{ status: number; costUsd: number }[]> {
  const text = await readFile(path.join(host.stateDir, 'audit.jsonl'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { record: string; group: string; status: number; costUsd: number })
    .filter((record) => record.record === 'call' && record.group === GROUP);
}

interface HostsOptions {
  budgetUsd?: number;
  budgetWaitMs: number;
  groupRates?: Record<string, GroupRates>;
}

describe('three gateway hosts share a group budget through redis-server', { skip: skipUnless(hasRedisServer, 'redis-server is not installed') }, () => {
  const gate = new Gate();
  let standin: Standin;
  let dir: string;
  /** Everything started, so a failing test still ends it all. */
  const running = new Set<ChildGateway>();
  const servers = new Set<RedisServer>();
  const killAll = () => {
    for (const server of servers) server.kill('SIGKILL');
  };

  before(async () => {
    process.on('exit', killAll);
    dir = await mkdtemp(path.join(tmpdir(), 'gw-scale-out-'));
    standin = await startStandin({ anthropicApiKey: REAL_ANTHROPIC_KEY, pace: () => gate.pass(), record: false });
  });
  after(async () => {
    gate.open();
    await standin?.close();
    await rm(dir, { recursive: true, force: true });
    process.off('exit', killAll);
  });

  async function redisServer(options: { aof?: boolean; unixSocket?: boolean } = {}): Promise<RedisServer> {
    const server = await startRedis(options);
    servers.add(server);
    return server;
  }

  /** Starts the three hosts on `redis` and waits until each has published to it and sees it up. */
  async function startHosts(redis: RedisServer, options: HostsOptions): Promise<Host[]> {
    const gatewayOptions: Partial<GatewayOptions> = {
      providers: { anthropic: { baseUrl: standin.url, apiKey: REAL_ANTHROPIC_KEY } },
      groupBudgets: options.budgetUsd === undefined ? {} : { [GROUP]: options.budgetUsd },
      budgetWaitMs: options.budgetWaitMs,
      groupRates: options.groupRates,
      defaultLimits: { maxConcurrent: 128 },
    };
    const hosts = await Promise.all(
      HOST_IDS.map(async (id) => {
        const stateDir = await mkdtemp(path.join(dir, `${id}-`));
        const gateway = await startChildGateway({
          heapMb: 256,
          stateDir,
          gateway: { ...gatewayOptions, store: { url: redis.url, hostId: id, leaseMs: LEASE_MS, publishIntervalMs: PUBLISH_MS } },
          keys: [{ group: GROUP, label: id }, { group: 'free' }],
        });
        running.add(gateway);
        return { id, gateway, stateDir, team: gateway.keys[0]!, free: gateway.keys[1]! };
      }),
    );
    await Promise.all(hosts.map((host) => serving(host)));
    return hosts;
  }

  /** Until the host's store is up (not warming) and it has published the group at least once. */
  const serving = (host: Host) =>
    until(
      `${host.id} serving with its store up`,
      async () => {
        const snapshot = await host.gateway.snapshot();
        const ok = snapshot.store?.state === 'up' && snapshot.groups.some((group) => group.group === GROUP && group.shared);
        return ok || undefined;
      },
      15_000,
    );

  /** Closes every host (SIGKILL for one that does not close in time). */
  async function stopHosts(): Promise<void> {
    gate.open();
    await Promise.all(
      [...running].map(async (gateway) => {
        running.delete(gateway);
        const timeout = new AbortController();
        const closed = gateway.close().then(() => true);
        const late = sleep(10_000, false, { signal: timeout.signal }).catch(() => false);
        if (!(await Promise.race([closed, late]))) await gateway.kill('SIGKILL');
        timeout.abort();
      }),
    );
  }

  /** Every host, then every redis-server. */
  async function stopAll(): Promise<void> {
    await stopHosts();
    await Promise.all([...servers].map((server) => server.close()));
    servers.clear();
  }

  test('64 concurrent streams on each of three hosts spend at most the group budget, and the store holds the sum of their records', {
    timeout: 120_000,
  }, async () => {
    try {
      const redis = await redisServer();
      // About forty calls: each reserves its worst case (about $0.00115) and spends about $0.0002.
      const budgetUsd = 0.01;
      const hosts = await startHosts(redis, { budgetUsd, budgetWaitMs: 30_000 });
      const started = performance.now();
      const answers = await Promise.all(
        hosts.flatMap((host) => Array.from({ length: 64 }, () => call(host.team.socketPath).then((answer) => ({ host, answer })))),
      );
      const elapsedMs = performance.now() - started;
      const statuses = answers.map(({ answer }) => answer.status);
      // Served, refused as exhausted, or refused while calls in flight held the rest: never a 5xx.
      assert.ok(
        statuses.every((status) => status === 200 || status === 402 || status === 429),
        `statuses ${JSON.stringify(statuses)}`,
      );
      const served = answers.filter(({ answer }) => answer.status === 200);
      const exhausted = answers.filter(({ answer }) => answer.status === 402);
      assert.ok(served.length > 10 && exhausted.length > 0, `served ${served.length}, exhausted ${exhausted.length}`);
      // Which hosts served is not asserted: waiters on other hosts ask the store again every 250 ms,
      // while a host whose call settles admits its next waiter at once, so one host may take it all.
      // Refused by the store (every host's spend), or first by a host that alone spent near the budget.
      for (const { answer } of exhausted) assert.match(answer.body, /budget exhausted for group team/);
      assert.ok(
        exhausted.some(({ answer }) => /across its hosts/.test(answer.body)),
        'at least one refusal came from the shared total',
      );

      for (const host of hosts) {
        await until(`${host.id} settled`, async () => ((await host.gateway.inspect(host.team.id)).inFlight === 0 ? true : undefined), 10_000);
      }
      // Audit records are written asynchronously: wait for one per served call.
      const records = await until(
        'a record for every served call',
        async () => {
          const perHost = await Promise.all(hosts.map((host) => callRecords(host)));
          const servedRecords = perHost.flat().filter((record) => record.status === 200).length;
          return servedRecords === served.length ? perHost : undefined;
        },
        10_000,
      );
      const spentPerHost = records.map((list) => sum(list.map((record) => record.costUsd)));
      const spent = sum(spentPerHost);
      // Each reservation was the call's worst case and was taken on the store only where it fit beside
      // every host's spend and reservations: the bound (what calls in flight could spend past their
      // reservation) is zero, as on one host (test/budget.test.ts).
      assert.ok(spent <= budgetUsd, `spent ${spent} > budget ${budgetUsd}`);
      const ledgers = await Promise.all(hosts.map((host) => ledgerSpend(host)));
      assert.ok(Math.abs(sum(ledgers) - spent) < EPSILON_USD, `ledgers ${sum(ledgers)} against records ${spent}`);

      // The store's total, read from Redis, is the sum of the hosts' records, host by host.
      const stored = await until(
        "the store's total equal to the records",
        async () => {
          const hostsInStore = await storedHosts(redis);
          return Math.abs(sum(Object.values(hostsInStore)) - spent) < EPSILON_USD ? hostsInStore : undefined;
        },
        5_000,
      );
      for (const [i, host] of hosts.entries()) {
        assert.ok(Math.abs((stored[host.id] ?? 0) - spentPerHost[i]!) < EPSILON_USD, `${host.id}: store ${stored[host.id]}, records ${spentPerHost[i]}`);
      }
      // And every host's inspect view shows that total (refreshed each publish interval).
      for (const host of hosts) {
        await until(
          `${host.id} shows the total`,
          async () => {
            const group = (await host.gateway.snapshot()).groups.find((g) => g.group === GROUP);
            return group?.shared && Math.abs(group.shared.totalUsd - spent) < EPSILON_USD ? true : undefined;
          },
          5_000,
        );
      }
      console.log(
        `# budget $${budgetUsd} over 3 hosts x 64 streams: served ${served.length} (${served
          .map(({ host }) => host.id.slice(-1))
          .sort()
          .join('')}), ` + `402 ${exhausted.length}, 429 ${statuses.filter((s) => s === 429).length}; spent $${spent.toFixed(6)} in ${elapsedMs.toFixed(0)} ms`,
      );
    } finally {
      await stopAll();
    }
  });

  test('a host SIGKILLed mid-stream: its reservations expire within the lease, the others use that budget, its spend still counts (even after the store loses its data)', {
    timeout: 60_000,
  }, async () => {
    try {
      const redis = await redisServer();
      // One call settled and four held fit; a fifth held beside them does not.
      const budgetUsd = 0.005;
      const [a, b] = await startHosts(redis, { budgetUsd, budgetWaitMs: 0 });
      assert.equal((await call(a!.team.socketPath)).status, 200);

      gate.shut();
      const held = Array.from({ length: 4 }, () => call(a!.team.socketPath).catch((error: Error) => error));
      await until(
        'four reservations of host-a in the store',
        async () => ((await readStore(redis, (c) => c.hlen(RESERVATIONS_KEY))) === 4 ? true : undefined),
        10_000,
      );
      const perCallUsd = (await a!.gateway.inspect(a!.team.id)).reservedUsd / 4;
      const spentA = await ledgerSpend(a!);
      assert.ok(spentA > 0 && spentA + 4 * perCallUsd <= budgetUsd && spentA + 5 * perCallUsd > budgetUsd, `spent ${spentA}, $${perCallUsd} per call`);

      const before = await call(b!.team.socketPath);
      assert.equal(before.status, 429, 'the rest of the budget is held by host-a');
      assert.match(before.body, /held by calls in flight on its hosts/);

      const killedAt = performance.now();
      await a!.gateway.kill('SIGKILL');
      running.delete(a!.gateway);
      // Renewed at most a third of a lease ago: the dead host's reservations still hold.
      assert.equal((await call(b!.team.socketPath)).status, 429, 'the lease outlives the host for a while');
      gate.open();
      const freed = await until(
        'host-b fits again',
        async () => {
          const answer = await call(b!.team.socketPath);
          if (answer.status === 200) return answer;
          assert.equal(answer.status, 429, answer.body);
          return undefined;
        },
        LEASE_MS + PUBLISH_MS + 5_000,
        50,
      );
      const freedMs = performance.now() - killedAt;
      assert.ok(freed.body.includes('message_stop'), 'the call that fits is served in full');
      assert.ok(freedMs <= LEASE_MS + PUBLISH_MS + 1_500, `freed after ${freedMs} ms`);
      for (const result of await Promise.all(held)) assert.ok(result instanceof Error || result.status === 200, 'held calls were served until the kill');

      // The dead host's spend so far stays in the store and in every living host's view.
      const stored = await storedHosts(redis);
      assert.ok(Math.abs((stored['host-a'] ?? 0) - spentA) < EPSILON_USD, `store has ${stored['host-a']} for host-a, its ledger ${spentA}`);
      await until(
        'host-b sees host-a',
        async () => {
          const group = (await b!.gateway.snapshot()).groups.find((g) => g.group === GROUP);
          return group?.shared && Math.abs((group.shared.hosts['host-a'] ?? 0) - spentA) < EPSILON_USD ? true : undefined;
        },
        5_000,
      );
      // Even when the store then loses its data: the living hosts publish the dead one's total back.
      await redis.restart({ empty: true });
      await until(
        "host-a's spend restored by the others",
        async () => {
          const restored = await storedHosts(redis).catch(() => ({}) as Record<string, number>);
          return Math.abs((restored['host-a'] ?? 0) - spentA) < EPSILON_USD ? true : undefined;
        },
        5_000,
      );
      console.log(`# host-a SIGKILLed holding 4 reservations (lease ${LEASE_MS} ms): its budget came free after ${freedMs.toFixed(0)} ms`);
    } finally {
      await stopAll();
    }
  });

  test('redis-server SIGKILLed and restarted empty: the hosts restore the total within seconds, and nothing is admitted past the bound meanwhile', {
    timeout: 60_000,
  }, async () => {
    try {
      const redis = await redisServer();
      const budgetUsd = 0.004;
      const hosts = await startHosts(redis, { budgetUsd, budgetWaitMs: 0 });
      // Spend until the group is exhausted, round the hosts. Near the end a host may still see the
      // previous call's reservation in the store (its settle is on its way): a 429 then, try again.
      for (let i = 0; ; i++) {
        assert.ok(i < 200, 'the budget runs out');
        const answer = await call(hosts[i % 3]!.team.socketPath);
        if (answer.status === 402) break;
        if (answer.status === 429) {
          await sleep(50);
          continue;
        }
        assert.equal(answer.status, 200, answer.body);
      }
      const spentBefore = sum(await Promise.all(hosts.map((host) => ledgerSpend(host))));
      await until('the store has it all', async () => (sum(Object.values(await storedHosts(redis))) >= spentBefore - EPSILON_USD ? true : undefined), 5_000);
      // What calls in flight hold when the store loses its data is all that could pass the budget.
      const snapshots = await Promise.all(hosts.map((host) => host.gateway.snapshot()));
      const boundUsd = sum(snapshots.map((snapshot) => snapshot.groups.find((g) => g.group === GROUP)!.reservedUsd));

      // Every host keeps calling while the store dies, comes back empty, and is restored.
      const answers: (Answer & { host: string; at: number })[] = [];
      let calling = true;
      const callers = hosts.map(async (host) => {
        while (calling) {
          const answer = await call(host.team.socketPath, { timeoutMs: 10_000 });
          answers.push({ ...answer, host: host.id, at: performance.now() });
          await sleep(10);
        }
      });
      let restartedAt = 0;
      let restoredMs = 0;
      try {
        await until('calls answered before the kill', async () => (answers.length >= 3 ? true : undefined), 5_000);
        await redis.restart({ empty: true });
        restartedAt = performance.now();
        assert.equal(await readStore(redis, (c) => c.exists(EPOCH_KEY)).catch(() => 0), 0, 'the store came back empty');
        await until(
          'the total restored',
          async () => (sum(Object.values(await storedHosts(redis).catch(() => ({})))) >= spentBefore - EPSILON_USD ? true : undefined),
          5_000,
          20,
        );
        restoredMs = performance.now() - restartedAt;
        // Then every host refuses as exhausted again: the store is up and holds the restored total.
        await until(
          'every host refusing as exhausted',
          async () => (new Set(answers.filter((x) => x.at > restartedAt + restoredMs && x.status === 402).map((x) => x.host)).size === 3 ? true : undefined),
          10_000,
        );
      } finally {
        calling = false;
        await Promise.all(callers);
      }
      const during = answers.filter((answer) => answer.status !== 402);
      const unavailable = during.filter((answer) => answer.status === 503);
      assert.ok(unavailable.length > 0, 'some calls came while the store was down or warming');
      for (const answer of unavailable) assert.equal(answer.headers['x-gateway-error'], 'store_unavailable');
      // Nothing was in flight when the store lost its data (bound 0): no call may have been admitted.
      assert.equal(boundUsd, 0);
      assert.deepEqual(
        during.filter((answer) => answer.status !== 503 && answer.status !== 429).map((answer) => answer.status),
        [],
        'no call admitted, no other refusal',
      );
      const spentAfter = sum(await Promise.all(hosts.map((host) => ledgerSpend(host))));
      assert.ok(spentAfter <= budgetUsd + boundUsd && Math.abs(spentAfter - spentBefore) < EPSILON_USD, `spent ${spentBefore} then ${spentAfter}`);
      const stored = await storedHosts(redis);
      for (const host of hosts) assert.ok((stored[host.id] ?? 0) >= (await ledgerSpend(host)) - EPSILON_USD, `${host.id} restored`);
      console.log(
        `# redis restarted empty: total $${spentBefore.toFixed(6)} restored after ${restoredMs.toFixed(0)} ms; ${unavailable.length} calls got 503 meanwhile, none admitted`,
      );
    } finally {
      await stopAll();
    }
  });

  test('redis-server stopped: shared-budget calls get a fast 503 store_unavailable, keys without a budget go on; back, it all recovers', {
    timeout: 60_000,
  }, async () => {
    try {
      const redis = await redisServer();
      const hosts = await startHosts(redis, { budgetUsd: 1, budgetWaitMs: 0 });
      for (const host of hosts) assert.equal((await call(host.team.socketPath)).status, 200);

      const refusedFast = async (host: Host, withinMs: number) => {
        const answer = await call(host.team.socketPath, { timeoutMs: 10_000 });
        assert.equal(answer.status, 503, answer.body);
        assert.equal(answer.headers['x-gateway-error'], 'store_unavailable');
        assert.ok(answer.headers['retry-after'], 'retryable');
        const error = JSON.parse(answer.body) as { type: string; error: { type: string; message: string } };
        assert.equal(error.type, 'error');
        assert.equal(error.error.type, 'overloaded_error');
        assert.match(error.error.message, /shared budget store/);
        assert.ok(answer.ms < withinMs, `${host.id} answered in ${answer.ms} ms`);
        return answer.ms;
      };
      // Frozen: it accepts connections and answers nothing. A command times out in a second.
      redis.kill('SIGSTOP');
      const frozenMs = [];
      for (const host of hosts) frozenMs.push(await refusedFast(host, 3_000));
      for (const host of hosts) assert.equal((await call(host.free.socketPath, { timeoutMs: 10_000 })).status, 200, 'a key without a group budget goes on');
      // Gone: connections refused.
      redis.kill('SIGCONT');
      redis.kill('SIGKILL');
      const goneMs = [];
      for (const host of hosts) goneMs.push(await refusedFast(host, 1_000));
      for (const host of hosts) assert.equal((await call(host.free.socketPath, { timeoutMs: 10_000 })).status, 200);

      const pids = hosts.map((host) => host.gateway.pid);
      await redis.restart();
      const backAt = performance.now();
      for (const host of hosts) {
        await until(
          `${host.id} serving shared calls again`,
          async () => {
            const answer = await call(host.team.socketPath, { timeoutMs: 10_000 });
            if (answer.status === 200) return true;
            assert.equal(answer.status, 503, answer.body);
            return undefined;
          },
          10_000,
        );
      }
      const recoveredMs = performance.now() - backAt;
      assert.deepEqual(
        hosts.map((host) => host.gateway.pid),
        pids,
      );
      assert.ok(
        hosts.every((host) => host.gateway.alive()),
        'no gateway restarted',
      );
      console.log(
        `# store frozen: 503 in ${Math.max(...frozenMs).toFixed(0)} ms at most; gone: ${Math.max(...goneMs).toFixed(1)} ms; back: every host serving after ${recoveredMs.toFixed(0)} ms`,
      );
    } finally {
      await stopAll();
    }
  });

  test('AOF on, over a Unix socket: a SIGKILLed redis-server replays its file and the total is intact', { timeout: 60_000 }, async () => {
    try {
      const redis = await redisServer({ aof: true, unixSocket: true });
      assert.match(redis.url, /^unix:\/\//);
      const hosts = await startHosts(redis, { budgetUsd: 1, budgetWaitMs: 0 });
      for (let i = 0; i < 6; i++) assert.equal((await call(hosts[i % 3]!.team.socketPath)).status, 200);
      // A call is settled (in the ledger) just after its last byte reached the client.
      for (const host of hosts) {
        await until(`${host.id} settled`, async () => ((await host.gateway.inspect(host.team.id)).inFlight === 0 ? true : undefined), 10_000);
      }
      const ledgers = Object.fromEntries(await Promise.all(hosts.map(async (host) => [host.id, await ledgerSpend(host)] as const)));
      await until(
        'the store has every host',
        async () => {
          const stored = await storedHosts(redis);
          return hosts.every((host) => Math.abs((stored[host.id] ?? 0) - ledgers[host.id]!) < EPSILON_USD) ? true : undefined;
        },
        5_000,
      );
      // The hosts go first, so nothing republishes: what comes back is the AOF's alone.
      await stopHosts();
      await redis.restart();
      const stored = await storedHosts(redis);
      for (const host of hosts) assert.ok(Math.abs((stored[host.id] ?? 0) - ledgers[host.id]!) < EPSILON_USD, `${host.id}: ${stored[host.id]} after replay`);
      assert.equal(await readStore(redis, (c) => c.exists(EPOCH_KEY)), 1, 'the group is not seen as lost (no warming)');
    } finally {
      await stopAll();
    }
  });

  test('a group rpm holds across the hosts: N calls in the window pass on any of them, the next are 429', { timeout: 60_000 }, async () => {
    try {
      const redis = await redisServer();
      const rpm = 5;
      const hosts = await startHosts(redis, { budgetUsd: 1, budgetWaitMs: 0, groupRates: { [GROUP]: { rpm } } });
      const statuses = [];
      for (let i = 0; i < rpm + 3; i++) {
        const answer = await call(hosts[i % 3]!.team.socketPath);
        statuses.push(answer.status);
        if (answer.status === 429) assert.match(answer.body, /group team allows 5 requests per minute across its hosts/);
      }
      // Each host took at most two: alone, none of them would have refused.
      assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
      for (const host of hosts) assert.equal((await call(host.free.socketPath)).status, 200, 'other groups are not limited');
    } finally {
      await stopAll();
    }
  });
});
