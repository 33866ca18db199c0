// Group rates and the shared store's configuration: `[group_rates]` and `[store]` from the file (a
// mistake names the field), a group's rpm held over all its keys on one gateway without a store, and
// the inspect view of a group's spend on every host.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { renderKeys } from '../src/cli/inspect-view.ts';
import { ConfigError, loadConfig } from '../src/config/load.ts';
import { startFixture } from './support/fixture.ts';
import { anthropicHeaders, request } from './support/http.ts';

describe('[group_rates] and [store] in the config file', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-rates-cfg-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const load = async (name: string, text: string) => {
    const file = path.join(dir, name);
    await writeFile(file, text);
    return { file, config: () => loadConfig(file) };
  };

  test('a valid file becomes groupRates and store options', async () => {
    const { config } = await load(
      'ok.toml',
      `[store]
url = "redis://127.0.0.1:6379"
host_id = "agents-3"
fail_open_rates = true
lease = "20s"
publish_interval = "2s"

[group_rates.ci]
rpm = 600
tpm = 4000000
`,
    );
    const loaded = await config();
    assert.deepEqual(loaded.store, { url: 'redis://127.0.0.1:6379', hostId: 'agents-3', failOpenRates: true, leaseMs: 20_000, publishIntervalMs: 2_000 });
    assert.deepEqual(loaded.groupRates, { ci: { rpm: 600, tpm: 4_000_000 } });
  });

  test('GATEWAY_STORE_URL names the store when the file does not', async () => {
    const { config } = await load('env.toml', '');
    const saved = process.env.GATEWAY_STORE_URL;
    process.env.GATEWAY_STORE_URL = 'unix:///run/redis.sock';
    try {
      assert.deepEqual((await config()).store, { url: 'unix:///run/redis.sock' });
    } finally {
      if (saved === undefined) delete process.env.GATEWAY_STORE_URL;
      else process.env.GATEWAY_STORE_URL = saved;
    }
  });

  for (const [name, text, field] of [
    ['no-url.toml', '[store]\nhost_id = "a"\n', 'store.url'],
    ['bad-url.toml', '[store]\nurl = "http://redis:6379"\n', 'store.url'],
    ['bad-flag.toml', '[store]\nurl = "redis://r:6379"\nfail_open_rates = "yes"\n', 'store.fail_open_rates'],
    ['bad-lease.toml', '[store]\nurl = "redis://r:6379"\nlease = "soon"\n', 'store.lease'],
    ['unknown.toml', '[store]\nurl = "redis://r:6379"\npassword = "x"\n', 'store.password'],
    ['bad-rpm.toml', '[group_rates.ci]\nrpm = -1\n', 'group_rates.ci.rpm'],
    ['bad-rate.toml', '[group_rates.ci]\nrps = 5\n', 'group_rates.ci.rps'],
  ] as const) {
    test(`${field}: a mistake names the file and the field (${name})`, async () => {
      const { file, config } = await load(name, text);
      await assert.rejects(config(), (error: unknown) => error instanceof ConfigError && error.message.startsWith(`${file}: ${field}: `));
    });
  }
});

describe('a group rpm without a store: held over all the group keys on this gateway', () => {
  test("the group's requests past its rpm are 429 whichever key sends them; another group is not held", async () => {
    const fixture = await startFixture({}, { groupRates: { team: { rpm: 3 } } });
    try {
      const [a, b] = await Promise.all([fixture.gateway.mint({ group: 'team' }), fixture.gateway.mint({ group: 'team' })]);
      const other = await fixture.gateway.mint({ group: 'solo' });
      const send = (socketPath: string) =>
        request({
          socketPath,
          method: 'POST',
          path: '/v1/messages',
          headers: anthropicHeaders(),
          body: JSON.stringify({ model: 'claude-haiku-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
        });
      const statuses = [];
      for (const key of [a, b, a]) statuses.push((await send(key.socketPath)).status);
      assert.deepEqual(statuses, [200, 200, 200]);
      const refused = await send(b.socketPath);
      assert.equal(refused.status, 429);
      assert.match(refused.body, /group team allows 3 requests per minute/);
      assert.ok(Number(refused.headers['retry-after']) >= 1);
      assert.equal((await send(other.socketPath)).status, 200);
      // Reconfigured away, the group is no longer held.
      fixture.gateway.reconfigure({ groupRates: {} });
      assert.equal((await send(a.socketPath)).status, 200);
    } finally {
      await fixture.close();
    }
  });

  test('groupRates are checked: a bad value throws a ValidationError naming it', async () => {
    const fixture = await startFixture();
    try {
      assert.throws(() => fixture.gateway.reconfigure({ groupRates: { team: { rpm: -2 } } }), /groupRates\.team\.rpm/);
    } finally {
      await fixture.close();
    }
  });
});

describe('inspect: a group on every host', () => {
  test("the store's state, this host's spend and every host's, with no key live", () => {
    const text = renderKeys(
      [],
      [
        {
          group: 'team',
          spentUsd: 1.5,
          reservedUsd: 0.25,
          budgetUsd: 10,
          liveKeys: 0,
          shared: { totalUsd: 4.5, reservedUsd: 0.5, hosts: { 'host-a': 1.5, 'host-b': 3 } },
        },
      ],
      { hostId: 'host-a', state: 'up' },
    );
    assert.match(text, /^shared store: up \(this host: host-a\)/);
    assert.match(text, /no live keys/);
    assert.match(text, /team +0 +\$1\.5000\/\$10\.00 +\$0\.2500 +\$4\.5000\/\$10\.00 \(2 hosts\)/);
    assert.match(text, /team +host-b +\$3\.0000/);
  });
});
