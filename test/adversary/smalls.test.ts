// Class 9 of the containment issue, the smaller ones: values a container runtime could read as
// flags, request targets the providers would resolve differently (`/v1/models/..`, `#fragment`), and
// the permissions of the directories the gateway creates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../../src/config/load.ts';
import { createGateway } from '../../src/gateway.ts';
import { contribute } from '../../src/runner/contribute.ts';
import { embeddedGateway } from '../../src/runner/embedded.ts';
import { render } from '../../src/runner/render.ts';
import { request } from '../support/http.ts';
import { startFixture } from '../support/fixture.ts';

test('render: a hostile image, name, user, path or env name is refused; the image always follows --', async () => {
  const fx = await startFixture();
  try {
    const c = await contribute(fx.gateway, { group: 'g' });
    for (const runtime of ['podman', 'docker'] as const) {
      const argv = render(runtime, c, { image: 'localhost/agent', command: ['--privileged'] });
      const at = argv.indexOf('localhost/agent');
      assert.equal(argv[at - 1], '--', `${runtime}: -- right before the image`);
      assert.ok(!argv.slice(0, at).includes('--privileged'), 'the command is after the image, never a runtime flag');
      assert.throws(() => render(runtime, c, { image: '--privileged', command: ['true'] }), /image "--privileged" must not start with "-"/);
      assert.throws(() => render(runtime, c, { image: '-v=/:/host', command: ['true'] }), /image/);
      assert.throws(() => render(runtime, c, { image: 'alpine\n--privileged', command: ['true'] }), /image/);
      assert.throws(() => render(runtime, c, { image: 'alpine --privileged', command: ['true'] }), /image/);
    }
    const bad: [string, Parameters<typeof render>[2]][] = [
      ['container name', { image: 'a', command: ['x'], name: '--privileged' }],
      ['container name', { image: 'a', command: ['x'], name: 'a\nb' }],
      ['user', { image: 'a', command: ['x'], user: '--privileged' }],
      ['user', { image: 'a', command: ['x'], user: '0 --privileged' }],
      ['workdir', { image: 'a', command: ['x'], workdir: '/src:/etc' }],
      ['workdir', { image: 'a', command: ['x'], workdir: '-/x' }],
      ['mount source', { image: 'a', command: ['x'], mounts: [{ source: '/x,rw', target: '/y', readOnly: true }] }],
      ['mount target', { image: 'a', command: ['x'], mounts: [{ source: '/x', target: '/etc:rw', readOnly: true }] }],
      ['mount target', { image: 'a', command: ['x'], mounts: [{ source: '/x', target: 'relative', readOnly: true }] }],
      ['env name', { image: 'a', command: ['x'], env: { 'A=B': 'c' } }],
      ['env name', { image: 'a', command: ['x'], env: { '--privileged': 'c' } }],
      ['env SECRET: value', { image: 'a', command: ['x'], env: { SECRET: 'a\0b' } }],
    ];
    for (const [what, spec] of bad) {
      for (const runtime of ['podman', 'bwrap'] as const) {
        assert.throws(
          () => render(runtime, c, spec),
          (e: Error) => e instanceof TypeError && e.message.startsWith(what),
          `${runtime} ${what} ${JSON.stringify(spec)}`,
        );
      }
    }
    // A newline in an env value is passed whole, in its own argv entry.
    const argv = render('podman', c, { image: 'a', command: ['x'], env: { NOTE: 'line one\nline two' } });
    assert.ok(argv.includes('NOTE=line one\nline two'));
    assert.equal(argv[argv.indexOf('NOTE=line one\nline two') - 1], '-e');
    const bw = render('bwrap', c, { command: ['x'], env: { NOTE: 'a\nb' } });
    assert.deepEqual(bw.slice(bw.indexOf('NOTE') - 1, bw.indexOf('NOTE') + 2), ['--setenv', 'NOTE', 'a\nb']);
    await c.close();
  } finally {
    await fx.close();
  }
});

test('/v1/models/.., odd model ids and # in the request target are refused and never forwarded', async () => {
  const fx = await startFixture();
  try {
    const key = await fx.gateway.mint({ group: 'g' });
    const body = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] });
    for (const [method, target, status, anthropic] of [
      ['GET', '/v1/models/..', 404, true],
      ['GET', '/v1/models/.', 404, false],
      ['GET', '/v1/models/.hidden', 404, false],
      ['GET', '/v1/models/-x', 404, false],
      ['GET', '/v1/models/%2e%2e', 404, false],
      ['GET', '/v1/models/a%2fb', 404, false],
      ['GET', '/v1/models/gpt-5#x', 400, false],
      ['GET', '/v1/models?limit=1#x', 400, true],
      ['POST', '/v1/messages?beta=true#frag', 400, true],
      ['POST', '/v1/chat/completions#x', 400, false],
    ] as const) {
      const r = await request({
        socketPath: key.socketPath,
        method,
        path: target,
        headers: { 'content-type': 'application/json', ...(anthropic ? { 'anthropic-version': '2023-06-01' } : {}) },
        body: method === 'POST' ? body : undefined,
      });
      assert.equal(r.status, status, `${method} ${target}: ${r.body}`);
      const error = JSON.parse(r.body) as { type?: string; error: { type: string; message: string } };
      if (anthropic) assert.equal(error.type, 'error', "Anthropic's shape");
      else assert.equal(error.type, undefined, "OpenAI's shape");
      assert.equal(error.error.type, status === 400 ? 'invalid_request_error' : anthropic ? 'not_found_error' : 'invalid_request_error');
    }
    assert.deepEqual(
      fx.standin.requests.map((q) => q.url),
      [],
      'nothing reached the provider',
    );
    // Real model ids still go through.
    const ok = await request({ socketPath: key.socketPath, path: '/v1/models/claude-sonnet-4-5', headers: { 'anthropic-version': '2023-06-01' } });
    assert.notEqual(ok.status, 400);
    assert.equal(fx.standin.requests.at(-1)!.url, '/v1/models/claude-sonnet-4-5');
  } finally {
    await fx.close();
  }
});

test("directories the gateway creates are 0700: gateway run's state dir, the daemon's, an audit file's", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gw-modes-'));
  const modeOf = async (p: string) => (await stat(p)).mode & 0o777;
  try {
    // `gateway run` without a daemon: the config's state dir holds the audit file.
    const configFile = path.join(dir, 'gateway.toml');
    await writeFile(configFile, `state_dir = "${dir}/run-state"\n[providers.anthropic]\nbase_url = "http://127.0.0.1:9"\napi_key_env = "SMALLS_TEST_KEY"\n`);
    process.env.SMALLS_TEST_KEY = 'not-a-real-key';
    const embedded = await embeddedGateway(await loadConfig(configFile));
    await embedded.close();
    assert.equal(await modeOf(path.join(dir, 'run-state')), 0o700);

    // A library gateway on a fresh nested state dir, with its audit file somewhere else.
    const gateway = await createGateway({
      stateDir: path.join(dir, 'a', 'b', 'state'),
      logger: pino({ level: 'silent' }),
      providers: {},
      audit: { file: path.join(dir, 'logs', 'nested', 'audit.jsonl') },
    });
    await gateway.close();
    for (const p of ['a', 'a/b', 'a/b/state', 'a/b/state/keys', 'logs', 'logs/nested']) assert.equal(await modeOf(path.join(dir, p)), 0o700, p);
  } finally {
    delete process.env.SMALLS_TEST_KEY;
    await rm(dir, { recursive: true, force: true });
  }
});
