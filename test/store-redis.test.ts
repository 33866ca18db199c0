// The Redis shared store (src/store/redis.ts) against a real redis-server: the limit holds across
// hosts under concurrency, settle books once, leases expire and are renewed, spend survives Redis
// losing its data, the store fails closed (at once, or within the command timeout) and recovers,
// AOF on and off, Unix sockets, shared request windows, and the URL's password never shows.
import assert from 'node:assert/strict';
import net from 'node:net';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { StoreUnavailable } from '../src/metering/shared.ts';
import { createRedisStore, type RedisStore, type RedisStoreOptions } from '../src/store/redis.ts';
import { hasRedisServer, type RedisServer, startRedis } from './support/redis.ts';
import { skipUnless } from './support/requirements.ts';

const skip = skipUnless(hasRedisServer, 'redis-server is not installed');
const TEST_TIMEOUT = { timeout: 30_000 };

let prefixes = 0;
const uniquePrefix = () => `t${process.pid}-${++prefixes}:`;

/** Waits for `condition` (polled), failing after `ms`. */
async function until(condition: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A host: a store plus the ledger it republishes (the test books settled spend into it). */
interface Host {
  store: RedisStore;
  ledger: Record<string, number>;
}

/** Every store a test made, closed after all (close is idempotent) so a failed test leaves no connection behind. */
const made: RedisStore[] = [];
after(() => Promise.all(made.map((store) => store.close())));

function host(url: string, prefix: string, hostId: string, options: Partial<RedisStoreOptions> = {}): Host {
  const ledger: Record<string, number> = {};
  const store = createRedisStore({
    url,
    hostId,
    prefix,
    localSpend: () => ({ ...ledger }),
    groups: () => ['team'],
    warmupMs: 0,
    publishIntervalMs: 100,
    commandTimeoutMs: 500,
    ...options,
  });
  made.push(store);
  return { store, ledger };
}

/** Settles on `h` and books the cost in its ledger, as the gateway does. */
function settle(h: Host, reservation: { settle(cost: number): void }, group: string, cost: number): void {
  reservation.settle(cost);
  h.ledger[group] = (h.ledger[group] ?? 0) + cost;
}

async function hostsHash(admin: Redis, prefix: string, group = 'team'): Promise<Record<string, number>> {
  const raw = await admin.hgetall(`${prefix}{g:${group}}:hosts`);
  return Object.fromEntries(Object.entries(raw).map(([id, value]) => [id, Number(value)]));
}

describe('store/redis', { skip }, () => {
  let server: RedisServer;
  let admin: Redis;
  before(async () => {
    server = await startRedis();
    admin = new Redis(server.url);
  });
  after(async () => {
    admin?.disconnect();
    await server?.close();
  });

  test('200 concurrent reserves from three hosts never pass the limit', TEST_TIMEOUT, async () => {
    const prefix = uniquePrefix();
    const hosts = ['a', 'b', 'c'].map((id) => host(server.url, prefix, id));
    await Promise.all(hosts.map((h) => h.store.ready()));
    const limit = 1;
    const amounts = Array.from({ length: 200 }, (_, i) => 0.01 + (i % 7) * 0.003);
    const outcomes = await Promise.all(amounts.map((usd, i) => hosts[i % 3]!.store.reserve('team', usd, limit)));
    const admitted = amounts.filter((_, i) => outcomes[i]!.ok).reduce((a, b) => a + b, 0);
    assert.ok(admitted <= limit + 1e-9, `admitted ${admitted} > ${limit}`);
    assert.ok(admitted > limit - 0.03, `admitted ${admitted}: the budget was not used`);
    const refused = outcomes.filter((o) => !o.ok);
    assert.ok(refused.length > 0);
    for (const o of refused) assert.equal(!o.ok && o.reason, 'held');
    const held = Object.values(await admin.hgetall(`${prefix}{g:team}:res`)).reduce((a, v) => a + Number(v), 0);
    assert.ok(Math.abs(held - admitted) < 1e-9, `reserved in Redis ${held}, admitted ${admitted}`);
    // Settling everything at its reservation exhausts the group.
    outcomes.forEach((o, i) => {
      if (o.ok) settle(hosts[i % 3]!, o.reservation, 'team', amounts[i]!);
    });
    await Promise.all(hosts.map((h) => h.store.close()));
    const spent = Object.values(await hostsHash(admin, prefix)).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(spent - admitted) < 1e-9, `spent ${spent}, admitted ${admitted}`);
    assert.equal(await admin.hlen(`${prefix}{g:team}:res`), 0);
    const last = host(server.url, prefix, 'd');
    await last.store.ready();
    const outcome = await last.store.reserve('team', 0.05, limit);
    assert.deepEqual(outcome.ok ? 'ok' : outcome.reason, 'exhausted');
    await last.store.close();
  });

  test('settle books once when called twice', TEST_TIMEOUT, async () => {
    const prefix = uniquePrefix();
    const h = host(server.url, prefix, 'a');
    await h.store.ready();
    const outcome = await h.store.reserve('team', 0.5, 10);
    assert.ok(outcome.ok);
    outcome.reservation.settle(0.25);
    outcome.reservation.settle(0.25);
    await h.store.close();
    assert.deepEqual(await hostsHash(admin, prefix), { a: 0.25 });
    assert.equal(await admin.zcard(`${prefix}{g:team}:leases`), 0);
  });

  test('a settle whose reply was lost is retried and booked once', TEST_TIMEOUT, async () => {
    const proxy = await dropProxy(server.port!);
    const prefix = uniquePrefix();
    const h = host(`redis://127.0.0.1:${proxy.port}`, prefix, 'a', {
      publishIntervalMs: 60_000,
    });
    try {
      await h.store.ready();
      const outcome = await h.store.reserve('team', 0.5, 10);
      assert.ok(outcome.ok);
      proxy.dropNextReply();
      outcome.reservation.settle(0.125);
      await h.store.close();
      assert.equal(proxy.dropped(), 1, 'the settle reply was dropped');
      assert.ok(proxy.sent().split('HINCRBYFLOAT').length - 1 >= 2, 'the settle script ran again');
      assert.deepEqual(await hostsHash(admin, prefix), { a: 0.125 });
      assert.equal(await admin.hlen(`${prefix}{g:team}:res`), 0);
    } finally {
      await proxy.close();
    }
  });

  test('a reservation not renewed expires and frees the budget', TEST_TIMEOUT, async () => {
    const prefix = uniquePrefix();
    const dead = host(server.url, prefix, 'dead', { leaseMs: 300 });
    const alive = host(server.url, prefix, 'alive', { leaseMs: 300 });
    await Promise.all([dead.store.ready(), alive.store.ready()]);
    assert.ok((await dead.store.reserve('team', 1, 1)).ok);
    await dead.store.close(); // never settled: its lease is no longer renewed
    const first = await alive.store.reserve('team', 1, 1);
    assert.equal(!first.ok && first.reason, 'held');
    const start = Date.now();
    let freed = false;
    await until(
      async () => {
        const outcome = await alive.store.reserve('team', 1, 1);
        freed = outcome.ok;
        return freed;
      },
      5_000,
      'the lease to expire',
    );
    assert.ok(Date.now() - start < 2_000);
    await alive.store.close();
  });

  test('renewal keeps a long call’s lease', TEST_TIMEOUT, async () => {
    const prefix = uniquePrefix();
    const running = host(server.url, prefix, 'running', { leaseMs: 300 });
    const other = host(server.url, prefix, 'other', { leaseMs: 300 });
    await Promise.all([running.store.ready(), other.store.ready()]);
    const call = await running.store.reserve('team', 1, 1);
    assert.ok(call.ok);
    // Three leases long: without renewal it would have expired twice over.
    const start = Date.now();
    await until(() => Date.now() - start > 900, 2_000, 'three leases');
    const meanwhile = await other.store.reserve('team', 1, 1);
    assert.equal(!meanwhile.ok && meanwhile.reason, 'held');
    settle(running, call.reservation, 'team', 0.5);
    await until(async () => (await admin.hlen(`${prefix}{g:team}:res`)) === 0, 2_000, 'the settle');
    const fits = await other.store.reserve('team', 0.5, 1);
    assert.ok(fits.ok);
    await Promise.all([running.store.close(), other.store.close()]);
  });

  test('after FLUSHALL the store warms, then every seen host’s spend is back', TEST_TIMEOUT, async () => {
    const prefix = uniquePrefix();
    const options = { warmupMs: 600, publishIntervalMs: 100 };
    const a = host(server.url, prefix, 'a', options);
    const b = host(server.url, prefix, 'b', options);
    await Promise.all([a.store.ready(), b.store.ready()]);
    await until(async () => (await a.store.reserve('team', 0, 10)).ok, 3_000, 'the first warmup');
    for (const [h, cost] of [
      [a, 0.75],
      [b, 1.5],
    ] as const) {
      const outcome = await h.store.reserve('team', cost, 10);
      assert.ok(outcome.ok);
      settle(h, outcome.reservation, 'team', cost);
    }
    await until(() => a.store.groupSpend('team')?.hosts.b === 1.5, 3_000, 'a to see b');
    await b.store.close(); // b no longer runs: only a remembers its spend
    await admin.flushall();
    const first = await a.store.reserve('team', 0.1, 10);
    assert.equal(!first.ok && first.reason, 'warming');
    assert.equal(a.store.state(), 'warming');
    let outcome = first;
    await until(
      async () => {
        outcome = await a.store.reserve('team', 0.1, 10);
        if (!outcome.ok) assert.equal(outcome.reason, 'warming');
        return outcome.ok;
      },
      5_000,
      'the warmup to end',
    );
    const restored = await hostsHash(admin, prefix);
    assert.ok(restored.a! >= 0.75 && restored.b! >= 1.5, JSON.stringify(restored));
    await until(() => a.store.state() === 'up', 2_000, 'state up');
    const spend = a.store.groupSpend('team')!;
    assert.ok(spend.totalUsd >= 2.25, JSON.stringify(spend));
    await a.store.close();
  });

  test('admitRate: rpm is shared by two hosts and lets requests through once the window allows', TEST_TIMEOUT, async () => {
    const prefix = uniquePrefix();
    const windowMs = 1_000;
    const a = host(server.url, prefix, 'a', { rateWindowMs: windowMs });
    const b = host(server.url, prefix, 'b', { rateWindowMs: windowMs });
    await Promise.all([a.store.ready(), b.store.ready()]);
    // Start early in a window so the burst below stays inside one.
    const serverMs = async () => {
      const [s, us] = await admin.time();
      return Number(s) * 1000 + Math.floor(Number(us) / 1000);
    };
    await until(async () => (await serverMs()) % windowMs < 300, 3_000, 'the start of a window');
    const results = [];
    for (let i = 0; i < 10; i++) results.push(await (i % 2 ? b : a).store.admitRate('team', { rpm: 6 }));
    assert.equal(results.filter((r) => r.ok).length, 6);
    const refused = results.at(-1)!;
    assert.ok(!refused.ok && refused.limit === 'rpm');
    assert.ok(refused.retryAfterMs > 0 && refused.retryAfterMs <= 2 * windowMs, String(refused.retryAfterMs));
    const wait = refused.retryAfterMs;
    await new Promise((resolve) => setTimeout(resolve, wait));
    assert.deepEqual(await b.store.admitRate('team', { rpm: 6 }), {
      ok: true,
    });
    await Promise.all([a.store.close(), b.store.close()]);
  });

  test('admitRate: tpm refuses once the settled tokens reach it', TEST_TIMEOUT, async () => {
    const prefix = uniquePrefix();
    const a = host(server.url, prefix, 'a');
    await a.store.ready();
    assert.deepEqual(await a.store.admitRate('team', { tpm: 1_000 }), {
      ok: true,
    });
    a.store.addTokens('team', 999);
    assert.deepEqual(await a.store.admitRate('team', { tpm: 1_000 }), {
      ok: true,
    });
    a.store.addTokens('team', 1);
    const refused = await a.store.admitRate('team', { tpm: 1_000, rpm: 100 });
    assert.ok(!refused.ok && refused.limit === 'tpm' && refused.retryAfterMs > 0);
    await a.store.close();
  });

  test('a group name outside the safe set is hashed into the key', TEST_TIMEOUT, async () => {
    const prefix = uniquePrefix();
    const a = host(server.url, prefix, 'a');
    await a.store.ready();
    // A group no host publishes yet: its first reserve sets its epoch and warms (here for no time).
    const first = await a.store.reserve('evil}{x:\n', 0.1, 1);
    assert.equal(!first.ok && first.reason, 'warming');
    assert.ok((await a.store.reserve('evil}{x:\n', 0.1, 1)).ok);
    const keys = await admin.keys(`${prefix}*`);
    assert.ok(
      keys.some((k) => /^t[^{]*\{g:#[0-9a-f]{32}\}:res$/.test(k)),
      keys.join(' '),
    );
    assert.ok(keys.every((k) => !k.includes('evil')));
    await a.store.close();
  });
});

describe('store/redis when Redis dies, hangs or restarts', { skip }, () => {
  for (const aof of [true, false]) {
    test(`SIGKILL: refused at once; restarted (AOF ${aof ? 'on' : 'off'}): up again with its spend`, TEST_TIMEOUT, async () => {
      const server = await startRedis({ aof });
      const prefix = uniquePrefix();
      const a = host(server.url, prefix, 'a', { warmupMs: 500 });
      try {
        await a.store.ready();
        await until(async () => (await a.store.reserve('team', 0, 10)).ok, 3_000, 'the first warmup');
        const call = await a.store.reserve('team', 2, 10);
        assert.ok(call.ok);
        settle(a, call.reservation, 'team', 2);
        await until(() => a.store.groupSpend('team')?.totalUsd === 2, 3_000, 'the settle');
        server.kill('SIGKILL');
        await until(() => a.store.state() === 'down', 2_000, 'state down');
        const start = performance.now();
        await assert.rejects(a.store.reserve('team', 1, 10), StoreUnavailable);
        await assert.rejects(a.store.admitRate('team', { rpm: 10 }), StoreUnavailable);
        assert.ok(performance.now() - start < 50, 'refused at once while down');
        await server.restart();
        await until(() => a.store.state() !== 'down', 5_000, 'reconnection');
        const again = await a.store.reserve('team', 1, 10);
        if (aof) {
          // Everything was on disk: no data lost, no warmup.
          assert.ok(again.ok, JSON.stringify(again));
        } else {
          assert.equal(!again.ok && again.reason, 'warming');
          await until(async () => (await a.store.reserve('team', 1, 10)).ok, 5_000, 'the warmup to end');
        }
        const admin = new Redis(server.url);
        assert.deepEqual(await hostsHash(admin, prefix), { a: 2 });
        admin.disconnect();
        await until(() => a.store.state() === 'up', 3_000, 'state up');
      } finally {
        await a.store.close();
        await server.close();
      }
    });
  }

  test('a hung Redis (SIGSTOP): refused within the command timeout, then down until it answers', TEST_TIMEOUT, async () => {
    const server = await startRedis();
    const a = host(server.url, uniquePrefix(), 'a', {
      commandTimeoutMs: 300,
    });
    try {
      await a.store.ready();
      server.kill('SIGSTOP');
      const start = performance.now();
      await assert.rejects(a.store.reserve('team', 1, 10), StoreUnavailable);
      const took = performance.now() - start;
      assert.ok(took >= 250 && took < 600, `took ${took} ms`);
      // Down at once: the next call is refused without waiting another timeout.
      assert.equal(a.store.state(), 'down');
      const again = performance.now();
      await assert.rejects(a.store.reserve('team', 1, 10), StoreUnavailable);
      assert.ok(performance.now() - again < 50);
      server.kill('SIGCONT');
      await until(() => a.store.state() === 'up', 5_000, 'state up');
      assert.ok((await a.store.reserve('team', 1, 10)).ok);
    } finally {
      server.kill('SIGCONT');
      await a.store.close();
      await server.close();
    }
  });

  test('ready() rejects with StoreUnavailable when nothing answers, and close() does not hang', TEST_TIMEOUT, async () => {
    const port = await closedPort();
    const a = host(`redis://127.0.0.1:${port}`, uniquePrefix(), 'a', {
      commandTimeoutMs: 200,
    });
    await assert.rejects(a.store.ready(), StoreUnavailable);
    assert.equal(a.store.state(), 'down');
    await assert.rejects(a.store.reserve('team', 1, 10), StoreUnavailable);
    await a.store.close();
  });
});

describe('store/redis over a Unix socket, with a password', { skip }, () => {
  test('unix:// and a bare path both work', TEST_TIMEOUT, async () => {
    const server = await startRedis({ unixSocket: true });
    try {
      for (const url of [server.url, server.socketPath!]) {
        const a = host(url, uniquePrefix(), 'a');
        await a.store.ready();
        const outcome = await a.store.reserve('team', 1, 10);
        assert.ok(outcome.ok);
        settle(a, outcome.reservation, 'team', 1);
        await a.store.close();
      }
      const admin = new Redis({ path: server.socketPath! });
      const totals = await admin.keys('*{g:team}:hosts');
      assert.equal(totals.length, 2);
      admin.disconnect();
    } finally {
      await server.close();
    }
  });

  test('the password is used but never logged nor put in an error', TEST_TIMEOUT, async () => {
    const password = 'Sekr3t-pa55word';
    const server = await startRedis({ password });
    const lines: string[] = [];
    const logger = pino(
      { level: 'debug' },
      new Writable({
        write(chunk, _encoding, done) {
          lines.push(String(chunk));
          done();
        },
      }),
    );
    try {
      const good = host(server.url, uniquePrefix(), 'a', { logger });
      await good.store.ready();
      assert.ok((await good.store.reserve('team', 1, 10)).ok);
      await good.store.close();
      const wrong = host(server.url.replace(password, 'not-the-pass'), uniquePrefix(), 'a', { logger, commandTimeoutMs: 200 });
      const error = await wrong.store.ready().then(
        () => undefined,
        (err: unknown) => err,
      );
      assert.ok(error instanceof StoreUnavailable);
      await wrong.store.close();
      const killed = host(server.url, uniquePrefix(), 'b', {
        logger,
        commandTimeoutMs: 200,
      });
      await killed.store.ready();
      server.kill('SIGKILL');
      const refusal = await killed.store.reserve('team', 1, 10).catch((err: unknown) => err);
      assert.ok(refusal instanceof StoreUnavailable);
      await killed.store.close();
      const everything = [...lines, String(error), String(refusal)].join('\n');
      assert.ok(
        lines.some((l) => l.includes('shared store up')),
        'state changes are logged',
      );
      assert.ok(!everything.includes(password), everything);
      assert.ok(!everything.includes('not-the-pass'), everything);
    } finally {
      await server.close();
    }
  });
});

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A TCP relay to Redis that can swallow the next reply and cut the connection (a reply lost on the way). */
async function dropProxy(targetPort: number) {
  let dropNext = false;
  let dropped = 0;
  let sent = '';
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    client.on('data', (chunk: Buffer) => {
      sent += chunk.toString();
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (dropNext) {
        dropNext = false;
        dropped++;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(chunk);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    dropNextReply: () => {
      dropNext = true;
    },
    dropped: () => dropped,
    sent: () => sent,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
