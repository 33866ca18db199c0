// The `gateway` binary, run as a user would.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);
const cli = new URL('../src/cli/main.ts', import.meta.url).pathname;

test('gateway demo --standin streams both providers through a socket and finds no leaked key', async () => {
  const { stdout } = await run(process.execPath, [cli, 'demo', '--standin'], {
    env: { ...process.env, ANTHROPIC_API_KEY: '', OPENAI_API_KEY: '' },
  });
  assert.match(stdout, /STAND-IN PROVIDER/);
  assert.equal(stdout.match(/> \[stand-in provider\] Hello through the gateway/g)?.length, 2);
  assert.match(stdout, /ok {3}the upstream received the real keys/);
  assert.match(stdout, /ok {3}no real key in the \d+ response bytes/);
  assert.match(stdout, /ok {3}key \S+ revoked: directory removed, socket refuses connections/);
  assert.doesNotMatch(stdout, /FAIL/);
});

test('gateway --help lists every command with its summary', async () => {
  const { stdout } = await run(process.execPath, [cli, '--help']);
  const commands = [...stdout.split('Commands:')[1]!.matchAll(/^ {2}(\w+)[^\n]* {2,}\S/gm)].map((match) => match[1]);
  assert.deepEqual(commands, ['serve', 'keys', 'inspect', 'run', 'render', 'demo', 'help']);
});

test('gateway run and render k8s read --user as uid[:gid] the same way: anything else is a usage error before a key is minted', async () => {
  for (const args of [
    ['run', '--user', '1000:abc', '--', 'localhost/agent', 'true'],
    ['render', 'k8s', '--user', 'agent', 'localhost/agent', 'true'],
  ]) {
    const failed = await run(process.execPath, [cli, '--state-dir', '/nonexistent/gw-state', ...args]).then(
      () => assert.fail(`${args.join(' ')} succeeded`),
      (error: { code: number; stderr: string }) => error,
    );
    assert.equal(failed.code, 2, failed.stderr);
    assert.match(failed.stderr, /--user must be a numeric uid\[:gid\]/);
  }
});
