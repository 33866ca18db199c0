// The control socket's `PUT /v1/groups/G/budget`: it sets and removes a group's budget while the
// group's keys are live (each key is then refused or served accordingly), and a bad body is a 400
// that changes nothing.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { startDaemon, type Daemon } from '../src/control/daemon.ts';
import { controlSocketPath } from '../src/control/socket.ts';
import { startStandin, type Standin } from '../src/dev/standin.ts';
import { anthropicHeaders, request } from './support/http.ts';

const REAL_KEY = 'real-control-test-key-41c7';
const message = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });

interface GroupSnapshot {
  group: string;
  budgetUsd?: number;
  liveKeys: number;
}

describe('PUT /v1/groups/G/budget on the control socket', () => {
  let dir: string;
  let standin: Standin;
  let daemon: Daemon;
  let control: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-ctl-'));
    standin = await startStandin({ anthropicApiKey: REAL_KEY });
    const keyFile = path.join(dir, 'anthropic.key');
    await writeFile(keyFile, REAL_KEY, { mode: 0o600 });
    const configFile = path.join(dir, 'gateway.toml');
    await writeFile(configFile, `state_dir = "${path.join(dir, 's')}"\n[providers.anthropic]\nbase_url = "${standin.url}"\napi_key_file = "${keyFile}"\n`);
    daemon = await startDaemon({ configFile, logger: pino({ level: 'silent' }) });
    control = controlSocketPath(daemon.gateway.stateDir);
  });
  after(async () => {
    await daemon.shutdown();
    await standin.close();
    await rm(dir, { recursive: true, force: true });
  });

  const put = (group: string, body: string) =>
    request({
      socketPath: control,
      method: 'PUT',
      path: `/v1/groups/${encodeURIComponent(group)}/budget`,
      headers: { 'content-type': 'application/json' },
      body,
    });
  const call = (socketPath: string) => request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message });
  const groupOf = (group: string) => daemon.gateway.inspect().groups.find((g) => g.group === group);

  test('a budget set on a group with a live key refuses that key at once; other groups are served', async () => {
    const key = await daemon.gateway.mint({ group: 'team a' });
    const other = await daemon.gateway.mint({ group: 'team b' });
    assert.equal((await call(key.socketPath)).status, 200);

    const set = await put('team a', '{"usd":0}');
    assert.equal(set.status, 200);
    const snapshot = JSON.parse(set.body) as GroupSnapshot;
    assert.deepEqual([snapshot.group, snapshot.budgetUsd, snapshot.liveKeys], ['team a', 0, 1]);
    assert.equal(groupOf('team a')?.budgetUsd, 0);

    const refused = await call(key.socketPath);
    assert.equal(refused.status, 402);
    assert.equal(refused.headers['x-gateway-error'], 'budget_exhausted');
    assert.match(refused.body, /budget exhausted for group team a/);
    assert.equal((await call(other.socketPath)).status, 200, 'another group keeps its own (absent) budget');

    // Raised above what it spent: served again.
    const raised = await put('team a', '{"usd":5}');
    assert.equal((JSON.parse(raised.body) as GroupSnapshot).budgetUsd, 5);
    assert.equal((await call(key.socketPath)).status, 200);
  });

  test('usd: null removes the budget: the group is served without a limit', async () => {
    const key = await daemon.gateway.mint({ group: 'removed' });
    await put('removed', '{"usd":0}');
    assert.equal((await call(key.socketPath)).status, 402);

    const removed = await put('removed', '{"usd":null}');
    assert.equal(removed.status, 200);
    assert.ok(!('budgetUsd' in (JSON.parse(removed.body) as GroupSnapshot)), 'no budget in the answer');
    assert.equal(groupOf('removed')?.budgetUsd, undefined);
    assert.equal((await call(key.socketPath)).status, 200);
  });

  test('a bad body is a 400 with a message, and the budget stays as it was', async () => {
    const key = await daemon.gateway.mint({ group: 'guarded' });
    await put('guarded', '{"usd":0}');
    for (const [body, error] of [
      ['not json', /request body must be a JSON object/],
      ['[0]', /request body must be a JSON object/],
      ['"5"', /request body must be a JSON object/],
      ['{"usd":"5"}', /non-negative number/],
      ['{"usd":-1}', /non-negative number/],
      ['{"usd":1e999}', /non-negative number/],
      ['{}', /body must be \{"usd": number\} or \{"usd": null\}/],
    ] as const) {
      const res = await put('guarded', body);
      assert.equal(res.status, 400, body);
      assert.match((JSON.parse(res.body) as { error: string }).error, error, body);
      assert.equal(groupOf('guarded')?.budgetUsd, 0, `${body} left the budget alone`);
    }
    assert.equal((await call(key.socketPath)).status, 402);
  });

  test('only PUT: another method on the path is a 404', async () => {
    const res = await request({
      socketPath: control,
      method: 'POST',
      path: '/v1/groups/guarded/budget',
      headers: { 'content-type': 'application/json' },
      body: '{"usd":9}',
    });
    assert.equal(res.status, 404);
    assert.equal(groupOf('guarded')?.budgetUsd, 0);
  });
});
