// Settings reload whole (issue 13): every setting `reconfigure` is given replaces the old one, all of
// them are checked before any is applied, and the daemon's SIGHUP reload hands over the complete
// settings built from the config file. A budget set at runtime lasts until the budgets are reloaded.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { startDaemon } from '../src/control/daemon.ts';
import { startStandin } from '../src/dev/standin.ts';
import type { Gateway, Reconfigurable } from '../src/gateway.ts';
import { ValidationError } from '../src/util/validation.ts';
import { REAL_ANTHROPIC_KEY, startFixture } from './support/fixture.ts';
import { anthropicHeaders, request } from './support/http.ts';

const message = (model = 'claude-sonnet-4-5') => JSON.stringify({ model, max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] });

async function status(socketPath: string, model?: string): Promise<number> {
  return (await request({ socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message(model) })).status;
}

const budgetOf = (gateway: Gateway, group: string) => gateway.inspect().groups.find((g) => g.group === group)?.budgetUsd;

describe('reconfigure replaces each setting whole', () => {
  test('a group removed from groupBudgets has no budget any more', async () => {
    const fx = await startFixture({}, { groupBudgets: { team: 0 } });
    try {
      const key = await fx.gateway.mint({ group: 'team' });
      assert.equal(await status(key.socketPath), 402);
      fx.gateway.reconfigure({ groupBudgets: {} });
      assert.equal(budgetOf(fx.gateway, 'team'), undefined);
      assert.equal(await status(key.socketPath), 200);
    } finally {
      await fx.close();
    }
  });

  test('groupModels, groupServerTools and prices are replaced, not merged', async () => {
    const fx = await startFixture(
      {},
      { groupModels: { team: ['claude-haiku-*'] }, groupServerTools: { team: [] }, prices: { 'claude-sonnet-4-5': { input: 1000, output: 1000 } } },
    );
    try {
      const key = await fx.gateway.mint({ group: 'team' });
      assert.equal(await status(key.socketPath), 403, 'sonnet is not in the group list');
      fx.gateway.reconfigure({ groupModels: { other: ['x'] }, prices: {} });
      assert.equal(await status(key.socketPath), 200);
      // The configured price is gone: the call was charged the shipped sonnet rate, far below $1000/MTok.
      assert.ok(fx.calls.at(-1)!.costUsd! < 0.01, `cost ${fx.calls.at(-1)!.costUsd}`);
    } finally {
      await fx.close();
    }
  });

  test('an explicit undefined restores the default; a field left out keeps its value', async () => {
    const fx = await startFixture({}, { unknownModelPrice: 'deny', groupBudgets: { team: 0 } });
    try {
      const key = await fx.gateway.mint({ group: 'solo' });
      assert.equal(await status(key.socketPath, 'no-such-model'), 403);
      fx.gateway.reconfigure({ unknownModelPrice: undefined });
      assert.equal(await status(key.socketPath, 'no-such-model'), 200);
      assert.equal(budgetOf(fx.gateway, 'team'), 0, 'groupBudgets was not given: it stays');
    } finally {
      await fx.close();
    }
  });

  const invalid: [string, Reconfigurable][] = [
    ['a negative default limit', { defaultLimits: { rpm: -1 } }],
    ['a bad provider URL', { providers: { anthropic: { baseUrl: 'ftp://x', apiKey: 'k' } } }],
    ['a route to no provider', { routes: [{ models: ['x'], provider: 'nowhere' }] }],
    ['an unknown server tool class', { groupServerTools: { team: ['teleport' as 'mcp'] } }],
    ['a negative price', { prices: { m: { input: -1, output: 1 } } }],
    ['a negative group budget', { groupBudgets: { other: -5 } }],
    ['a GitHub host that is no host name', { github: { host: 'a b' } }],
  ];
  for (const [what, bad] of invalid) {
    test(`a reload with ${what} changes nothing`, async () => {
      const fx = await startFixture({}, { groupBudgets: { team: 0 }, groupModels: { team: ['claude-*'] } });
      try {
        const key = await fx.gateway.mint({ group: 'team' });
        assert.equal(await status(key.socketPath), 402);
        // Every other field is valid and would lift the refusal.
        assert.throws(() => fx.gateway.reconfigure({ groupBudgets: {}, groupModels: {}, unknownModelPrice: 'deny', ...bad }), ValidationError);
        assert.equal(budgetOf(fx.gateway, 'team'), 0);
        assert.equal(await status(key.socketPath), 402);
        const solo = await fx.gateway.mint({ group: 'solo' });
        assert.equal(await status(solo.socketPath, 'no-such-model'), 200, 'unknownModelPrice was not applied');
      } finally {
        await fx.close();
      }
    });
  }

  test('a budget set at runtime lasts until the budgets are reloaded; then the configuration wins', async () => {
    const fx = await startFixture({}, { groupBudgets: { team: 0 } });
    try {
      const team = await fx.gateway.mint({ group: 'team' });
      const other = await fx.gateway.mint({ group: 'other' });
      fx.gateway.setGroupBudget('team', 5);
      fx.gateway.setGroupBudget('other', 0);
      assert.equal(await status(team.socketPath), 200);
      assert.equal(await status(other.socketPath), 402);
      // A reconfigure that does not name the budgets (a credential refresh) keeps them.
      fx.gateway.reconfigure({ retry: { attempts: 1 } });
      assert.equal(await status(team.socketPath), 200);
      assert.equal(await status(other.socketPath), 402);
      // A reload of the budgets replaces the runtime ones: team's is the config's again, other's is gone.
      fx.gateway.reconfigure({ groupBudgets: { team: 0 } });
      assert.equal(await status(team.socketPath), 402);
      assert.equal(await status(other.socketPath), 200);
    } finally {
      await fx.close();
    }
  });
});

describe("the daemon's reload", () => {
  test('a [budgets] entry removed from the file is gone after reload; a reload with one bad field changes nothing', async () => {
    const standin = await startStandin({ anthropicApiKey: REAL_ANTHROPIC_KEY });
    const dir = await mkdtemp(path.join(tmpdir(), 'gw-rl-'));
    const keyFile = path.join(dir, 'key');
    const configFile = path.join(dir, 'gateway.toml');
    await writeFile(keyFile, REAL_ANTHROPIC_KEY, { mode: 0o600 });
    const config = (extra: string) => `state_dir = "${dir}/state"\n[providers.anthropic]\nbase_url = "${standin.url}"\napi_key_file = "${keyFile}"\n${extra}`;
    await writeFile(configFile, config('[budgets]\nteam = 0\n'));
    const daemon = await startDaemon({ configFile, logger: pino({ level: 'silent' }) });
    try {
      const key = await daemon.gateway.mint({ group: 'team' });
      assert.equal(await status(key.socketPath), 402);
      await writeFile(configFile, config('[budgets]\nteam = 0\n[limits]\nrpm = -1\n'));
      await assert.rejects(daemon.reload(), ValidationError);
      assert.equal(await status(key.socketPath), 402);
      await writeFile(configFile, config(''));
      await daemon.reload();
      assert.equal(budgetOf(daemon.gateway, 'team'), undefined);
      assert.equal(await status(key.socketPath), 200);
    } finally {
      await daemon.shutdown();
      await standin.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
