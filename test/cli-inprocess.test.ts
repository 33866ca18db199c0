// The `gateway` program run in this process (createProgram/runCli), against a control server in this
// process too: the list flags' one spelling, exit codes, and where the output goes.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { startControlServer } from '../src/control/socket.ts';
import { createGateway, type Gateway } from '../src/gateway.ts';
import { gateway } from './support/cli.ts';

describe('gateway CLI in-process', () => {
  let dir: string;
  let gw: Gateway;
  let server: Server;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-cli-'));
    gw = await createGateway({ stateDir: dir, logger: pino({ level: 'silent' }), providers: {} });
    server = await startControlServer(gw, { info: () => ({}), logger: pino({ level: 'silent' }) });
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    await gw.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('keys mint: --model and --server-tool repeat and take comma lists; the old plurals still work', async () => {
    const minted = await gateway([
      'keys',
      'mint',
      '--state-dir',
      dir,
      '--group',
      'ci',
      '--model',
      'claude-*',
      '--model',
      'gpt-5*,o4*',
      '--server-tool',
      'web_search',
      '--server-tool',
      'web_fetch',
      '--json',
    ]);
    assert.equal(minted.code, 0, minted.stderr);
    const key = JSON.parse(minted.stdout) as { id: string; env: Record<string, string> };
    const limits = gw.inspect().keys.find((k) => k.id === key.id)!.limits;
    assert.deepEqual(limits.models, ['claude-*', 'gpt-5*', 'o4*']);
    assert.deepEqual(limits.serverTools, ['web_search', 'web_fetch']);

    const old = await gateway(['keys', 'mint', '--state-dir', dir, '--group', 'ci', '--models', 'a,b', '--server-tools', '', '--json']);
    assert.equal(old.code, 0, old.stderr);
    const oldLimits = gw.inspect().keys.find((k) => k.id === (JSON.parse(old.stdout) as { id: string }).id)!.limits;
    assert.deepEqual(oldLimits.models, ['a', 'b']);
    assert.deepEqual(oldLimits.serverTools, [], '"" is none');
  });

  test('exit codes: a refused limit and a bad config are 2, an unknown key 1, help 0', async () => {
    const badTool = await gateway(['keys', 'mint', '--state-dir', dir, '--group', 'ci', '--server-tool', 'teleport']);
    assert.equal(badTool.code, 2, 'the daemon answered 400: a usage error');
    assert.match(badTool.stderr, /^gateway: limit `serverTools`: must be an array of server tool classes/);
    const configFile = path.join(dir, 'bad.toml');
    await writeFile(configFile, '[limits]\nrpm = -1\n');
    const badConfig = await gateway(['keys', 'list', '--config', configFile]);
    assert.equal(badConfig.code, 2);
    assert.equal(badConfig.stderr, `gateway: ${configFile}: limits.rpm: must be a non-negative integer\n`);
    const unknown = await gateway(['keys', 'revoke', 'nosuchkey', '--state-dir', dir]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no live key nosuchkey/);
    const help = await gateway(['run', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--model <globs> +models the key may use \(repeatable or/);
    assert.doesNotMatch(help.stdout, /--models/, 'the old spelling is hidden');
  });
});
