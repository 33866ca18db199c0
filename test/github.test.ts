// Git smart HTTP and the GitHub API through a key's socket, against a local upstream that serves
// bare repositories with the real `git http-backend` behind Basic auth (test/support/git-upstream.ts).
// The real git client runs on the host through the real shim here; e2e-git.test.ts does the same
// from a --network=none container.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { loadConfig, ConfigError } from '../src/config/load.ts';
import { githubEnv } from '../src/github/env.ts';
import { authorize, classifyApi, classifyGit, GitHubRefusal } from '../src/github/scope.ts';
import type { GitHubScope } from '../src/keys/limits.ts';
import { startDaemon } from '../src/control/daemon.ts';
import { callControl } from '../src/control/socket.ts';
import { eventually } from './support/fixture.ts';
import { request } from './support/http.ts';
import { runs, skipUnless } from './support/requirements.ts';
import { REAL_GITHUB_TOKEN, startGitHubFixture, startGitUpstream } from './support/git-upstream.ts';

const SHIM = new URL('../shim/shim.mjs', import.meta.url).pathname;

const SCOPE: GitHubScope = { read: ['acme/*'], push: ['acme/widgets'], api: true };

function refusal(fn: () => void): number | undefined {
  try {
    fn();
  } catch (error) {
    if (error instanceof GitHubRefusal) return error.status;
    throw error;
  }
  return undefined;
}

test('scope: git paths, API paths, and what each key may do', () => {
  const git = (method: string, rest: string, query = '') => classifyGit(method, rest, query);
  assert.deepEqual(git('GET', '/acme/widgets.git/info/refs', 'service=git-upload-pack'), {
    kind: 'git',
    repo: 'acme/widgets',
    service: 'git-upload-pack',
    upstreamPath: '/acme/widgets.git/info/refs?service=git-upload-pack',
  });
  assert.equal(git('POST', '/acme/widgets/git-receive-pack').repo, 'acme/widgets');
  // Dumb HTTP, LFS, other queries, traversal and encoded slashes are not relayed.
  for (const [method, rest, query] of [
    ['GET', '/acme/widgets.git/info/refs', ''],
    ['GET', '/acme/widgets.git/info/refs', 'service=git-upload-pack&x=1'],
    ['GET', '/acme/widgets.git/HEAD', ''],
    ['POST', '/acme/widgets.git/info/lfs/objects/batch', ''],
    ['GET', '/acme/widgets.git/git-upload-pack', ''],
    ['POST', '/acme/../other/secret.git/git-receive-pack', ''],
    ['POST', '/acme/widgets%2f..%2f/git-receive-pack', ''],
    ['POST', '//acme/widgets/git-receive-pack', ''],
  ] as const) {
    assert.equal(
      refusal(() => git(method, rest, query)),
      404,
      `${method} ${rest}?${query}`,
    );
  }
  const ok = (scope: GitHubScope | undefined, access: ReturnType<typeof classifyGit>) => refusal(() => authorize(scope, access)) === undefined;
  const read = (repo: string) => git('GET', `/${repo}.git/info/refs`, 'service=git-upload-pack');
  const push = (repo: string) => git('GET', `/${repo}.git/info/refs`, 'service=git-receive-pack');
  assert.ok(ok(SCOPE, read('acme/docs')));
  assert.ok(ok(SCOPE, read('ACME/Widgets')), 'names are case-insensitive');
  assert.ok(ok(SCOPE, push('acme/widgets')));
  assert.ok(!ok(SCOPE, push('acme/docs')));
  assert.ok(!ok(SCOPE, read('other/secret')));
  assert.ok(ok({ push: ['acme/widgets'] }, read('acme/widgets')), 'push implies read');
  assert.ok(!ok(undefined, read('acme/widgets')), 'no scope: no GitHub access at all');

  const api = (method: string, rest: string) => classifyApi(method, rest, '');
  assert.equal(
    refusal(() => authorize(SCOPE, api('GET', '/repos/acme/docs/pulls'))),
    undefined,
  );
  assert.equal(
    refusal(() => authorize(SCOPE, api('POST', '/repos/acme/widgets/pulls'))),
    undefined,
  );
  assert.equal(
    refusal(() => authorize(SCOPE, api('POST', '/repos/acme/docs/issues'))),
    403,
  );
  assert.equal(
    refusal(() => authorize(SCOPE, api('GET', '/repos/other/secret'))),
    403,
  );
  assert.equal(
    refusal(() => authorize(SCOPE, api('GET', '/user'))),
    undefined,
  );
  assert.equal(
    refusal(() => authorize({ read: ['acme/*'] }, api('GET', '/repos/acme/docs'))),
    403,
    'api: false refuses every API call',
  );
  assert.equal(
    refusal(() => api('POST', '/graphql')),
    403,
  );
  assert.equal(
    refusal(() => api('GET', '/repositories/123')),
    403,
  );
});

test('config: [github] is validated, naming the file and the field', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'gh-config-'));
  try {
    const file = path.join(dir, 'gateway.toml');
    const load = async (text: string) => {
      await writeFile(file, text);
      return loadConfig(file);
    };
    const config = await load('[github]\nweb_url = "https://ghe.example.com"\napi_url = "https://ghe.example.com/api/v3"\ntoken_command = "gh auth token"\n');
    assert.deepEqual(config.github, {
      webUrl: 'https://ghe.example.com',
      apiUrl: 'https://ghe.example.com/api/v3',
      host: undefined,
      token: [{ command: 'gh auth token' }],
    });
    await assert.rejects(
      load('[github]\nweb_url = "https://github.com"\n'),
      (e: Error) =>
        e instanceof ConfigError && e.message === `${file}: github: names no token: set token_env, token_file or token_command (e.g. "gh auth token")`,
    );
    await assert.rejects(
      load('[github]\ntoken = "ghp_x"\n'),
      (e: Error) => e instanceof ConfigError && e.message.startsWith(`${file}: github.token: unknown field`),
    );
    await assert.rejects(load('[github]\ntoken_env = "T"\napi_url = "ftp://x"\n'), /github\.api_url: must be an http\(s\) URL/);
    await assert.rejects(load('[github]\ntoken_env = "T"\nweb_url = "https://user:pw@github.com"\n'), /github\.web_url: must not carry credentials/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('API: scope checked before the upstream, client credentials replaced by the token', async () => {
  const s = await startGitHubFixture();
  try {
    const full = await s.gateway.mint({ group: 'g', github: SCOPE });
    const noApi = await s.gateway.mint({ group: 'g', github: { read: ['acme/*'] } });
    const none = await s.gateway.mint({ group: 'g' });
    const get = (socketPath: string, p: string, method = 'GET', body?: string) =>
      request({
        socketPath,
        method,
        path: p,
        body,
        headers: { authorization: 'token from-the-container', 'user-agent': 'octokit', ...(body ? { 'content-type': 'application/json' } : {}) },
      });

    const okay = await get(full.socketPath, '/github-api/repos/acme/docs/pulls?state=open');
    assert.equal(okay.status, 200, okay.body);
    assert.deepEqual(JSON.parse(okay.body), { ok: true, method: 'GET', path: '/api/v3/repos/acme/docs/pulls?state=open', bodyBytes: 0 });
    const seen = s.upstream.seen.at(-1)!;
    assert.equal(seen.headers.authorization, `Bearer ${REAL_GITHUB_TOKEN}`, "the container's credential was replaced");
    assert.equal(seen.headers['user-agent'], 'octokit');
    const created = await get(full.socketPath, '/github-api/repos/acme/widgets/pulls', 'POST', '{"title":"t","head":"b","base":"main"}');
    assert.equal(created.status, 200);
    assert.equal(JSON.parse(created.body).bodyBytes, 38);

    const before = s.upstream.seen.length;
    for (const [key, p, method, why] of [
      [full, '/github-api/repos/acme/docs/issues', 'POST', 'write outside push scope'],
      [full, '/github-api/repos/other/secret', 'GET', 'read outside scope'],
      [full, '/github-api/graphql', 'POST', 'graphql'],
      [noApi, '/github-api/user', 'GET', 'no api scope'],
      [noApi, '/github-api/repos/acme/docs', 'GET', 'no api scope, even in read scope'],
      [none, '/github-api/user', 'GET', 'no GitHub scope'],
      [none, '/git/github.com/acme/docs.git/info/refs?service=git-upload-pack', 'GET', 'no GitHub scope'],
    ] as const) {
      const r = await get(key.socketPath, p, method, method === 'POST' ? '{}' : undefined);
      assert.equal(r.status, 403, `${why}: ${r.body}`);
      assert.equal(r.headers['x-gateway-error'], 'github_not_allowed');
      assert.match(r.body, /gateway: (this key|GraphQL)/);
    }
    assert.equal(s.upstream.seen.length, before, 'no refused request reached the upstream');
    // A host the client names is never dialed: it is a 404, whatever it is.
    const elsewhere = await get(full.socketPath, '/git/evil.example.com/acme/widgets.git/info/refs?service=git-upload-pack');
    assert.equal(elsewhere.status, 404);

    const records = s.calls.filter((c) => c.dialect === 'github');
    assert.equal(records.length, 10);
    const refused = records.find((c) => c.path === '/github-api/repos/other/secret')!;
    assert.equal(refused.status, 403);
    assert.equal(refused.outcome, 'rejected');
    assert.equal(refused.repo, 'other/secret');
    assert.equal(refused.errorKind, 'github_not_allowed');
    assert.ok(records.every((c) => c.costUsd === 0));
    assert.ok(!JSON.stringify(s.calls).includes(REAL_GITHUB_TOKEN));
  } finally {
    await s.close();
  }
});

test('a push body streams to the upstream while the client is still sending it', async () => {
  const s = await startGitHubFixture();
  try {
    const key = await s.gateway.mint({ group: 'g', github: SCOPE });
    let firstChunkUpstream: () => void = () => undefined;
    const arrived = new Promise<void>((resolve) => (firstChunkUpstream = resolve));
    s.upstream.onBodyChunk = () => firstChunkUpstream();
    const req = http.request({
      socketPath: key.socketPath,
      method: 'POST',
      path: '/git/github.com/acme/widgets.git/git-receive-pack',
      headers: { 'content-type': 'application/x-git-receive-pack-request', 'transfer-encoding': 'chunked' },
    });
    const response = new Promise<http.IncomingMessage>((resolve, reject) => {
      req.on('response', resolve);
      req.on('error', reject);
    });
    req.write(Buffer.alloc(64 * 1024, 'a'));
    // The rest of the body is sent only once the first part has reached the upstream: a gateway
    // that buffered the body would wait here forever (bounded by the timeout below).
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('the first chunk never reached the upstream')), 10_000).unref());
    await Promise.race([arrived, timeout]);
    req.end(Buffer.alloc(64 * 1024, 'b'));
    const res = await response;
    res.resume();
    await new Promise((resolve) => res.on('end', resolve));
    const seen = s.upstream.seen.at(-1)!;
    // git http-backend may answer (refusing this junk pack) before the upstream has read the whole
    // body: the last bytes are still on their way when the client's response ends.
    await eventually(() => seen.bodyBytes >= 128 * 1024, 5000).catch(() => undefined);
    assert.equal(seen.bodyBytes, 128 * 1024);
    assert.equal(seen.headers.authorization, `Basic ${Buffer.from(`x-access-token:${REAL_GITHUB_TOKEN}`).toString('base64')}`);
  } finally {
    await s.close();
  }
});

/** Starts the real shim on a free port for `socketPath`; resolves with its port. */
async function startShim(socketPath: string): Promise<{ port: number; proc: ChildProcess }> {
  const proc = spawn(process.execPath, [SHIM, '--port', '0', '--socket', socketPath], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const port = await new Promise<number>((resolve, reject) => {
    proc.stderr!.on('data', (b: Buffer) => {
      err += b;
      const m = /^shim: listening on 127\.0\.0\.1:(\d+) -> /m.exec(err);
      if (m) resolve(Number(m[1]));
    });
    proc.on('exit', (code) => reject(new Error(`shim exited ${code}: ${err}`)));
  });
  return { port, proc };
}

function gitIn(cwd: string, env: Record<string, string>, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('git', args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b));
    child.stderr.on('data', (b: Buffer) => (out += b));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

test('real git on the host through the shim: clone and push in scope, refusals outside', {
  skip: skipUnless(runs('git'), 'git is not installed'),
}, async () => {
  const s = await startGitHubFixture();
  const work = await mkdtemp(path.join(tmpdir(), 'gh-work-'));
  const key = await s.gateway.mint({ group: 'g', github: SCOPE });
  const shim = await startShim(key.socketPath);
  try {
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: work,
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_AUTHOR_NAME: 'agent',
      GIT_AUTHOR_EMAIL: 'agent@example.com',
      GIT_COMMITTER_NAME: 'agent',
      GIT_COMMITTER_EMAIL: 'agent@example.com',
      ...githubEnv(shim.port),
    };
    const clone = await gitIn(work, env, ['clone', 'https://github.com/acme/widgets.git', 'widgets']);
    assert.equal(clone.code, 0, clone.out);
    const dir = path.join(work, 'widgets');
    await writeFile(path.join(dir, 'change.txt'), 'from the agent\n');
    assert.equal((await gitIn(dir, env, ['add', 'change.txt'])).code, 0);
    assert.equal((await gitIn(dir, env, ['commit', '-q', '-m', 'agent change'])).code, 0);
    const pushed = await gitIn(dir, env, ['push', 'origin', 'HEAD:main']);
    assert.equal(pushed.code, 0, pushed.out);
    assert.equal(s.upstream.git('acme/widgets', ['log', '-1', '--format=%s', 'main']).trim(), 'agent change');

    // The SSH spelling goes the same way.
    const ssh = await gitIn(work, env, ['clone', 'git@github.com:acme/docs.git', 'docs']);
    assert.equal(ssh.code, 0, ssh.out);
    const seenBefore = s.upstream.seen.length;
    const docs = path.join(work, 'docs');
    await writeFile(path.join(docs, 'x.txt'), 'x\n');
    await gitIn(docs, env, ['add', 'x.txt']);
    await gitIn(docs, env, ['commit', '-q', '-m', 'not allowed']);
    const refusedPush = await gitIn(docs, env, ['push', 'origin', 'HEAD:main']);
    assert.notEqual(refusedPush.code, 0);
    assert.match(refusedPush.out, /gateway: this key may not push to acme\/docs/);
    assert.match(refusedPush.out, /403/);
    const refusedRead = await gitIn(work, env, ['clone', 'https://github.com/other/secret.git', 'secret']);
    assert.notEqual(refusedRead.code, 0);
    assert.match(refusedRead.out, /gateway: this key may not read other\/secret/);
    assert.equal(s.upstream.seen.length, seenBefore, 'the refused push and clone never reached the upstream');
    assert.equal(s.upstream.git('acme/docs', ['log', '-1', '--format=%s', 'main']).trim(), 'seed acme/docs');
    for (const out of [clone.out, pushed.out, refusedPush.out, refusedRead.out]) assert.ok(!out.includes(REAL_GITHUB_TOKEN));

    const records = s.calls.filter((c) => c.endpoint === 'git');
    const push = records.find((c) => c.service === 'git-receive-pack' && c.method === 'POST' && c.repo === 'acme/widgets')!;
    assert.equal(push.status, 200);
    assert.ok(push.requestBytes > 0 && push.responseBytes > 0);
    const refused = records.filter((c) => c.status === 403).map((c) => `${c.repo} ${c.service}`);
    assert.deepEqual(refused, ['acme/docs git-receive-pack', 'other/secret git-upload-pack']);
  } finally {
    shim.proc.kill('SIGTERM');
    await s.close();
    await rm(work, { recursive: true, force: true });
  }
});

test('daemon: [github] token from a file, mint with a github scope over the control socket', async () => {
  const upstream = await startGitUpstream();
  upstream.createRepo('acme/widgets');
  const dir = await mkdtemp(path.join(tmpdir(), 'ghd-'));
  try {
    await writeFile(path.join(dir, 'token'), `${REAL_GITHUB_TOKEN}\n`, { mode: 0o600 });
    const file = path.join(dir, 'gateway.toml');
    await writeFile(
      file,
      `state_dir = "${dir}/s"\n[github]\nhost = "github.com"\nweb_url = "${upstream.url}"\napi_url = "${upstream.url}/api/v3"\ntoken_file = "${dir}/token"\n[audit]\nfile = false\n`,
    );
    const daemon = await startDaemon({ configFile: file, logger: pino({ level: 'silent' }) });
    try {
      const key = await callControl<{ socketPath: string; env: Record<string, string> }>(`${dir}/s`, 'POST', '/v1/keys', {
        group: 'g',
        github: { read: ['acme/*'], api: true },
      });
      assert.equal(key.env.GIT_CONFIG_KEY_0, 'url.http://127.0.0.1:9460/git/github.com/.insteadOf');
      assert.equal(key.env.GITHUB_API_URL, 'http://127.0.0.1:9460/github-api');
      assert.ok(!JSON.stringify(key).includes(REAL_GITHUB_TOKEN));
      const r = await request({ socketPath: key.socketPath, path: '/github-api/repos/acme/widgets' });
      assert.equal(r.status, 200, r.body);
      const refs = await request({ socketPath: key.socketPath, path: '/git/github.com/acme/widgets.git/info/refs?service=git-upload-pack' });
      assert.equal(refs.status, 200);
      assert.match(refs.body, /# service=git-upload-pack/);
      await assert.rejects(callControl(`${dir}/s`, 'POST', '/v1/keys', { group: 'g', github: { read: 'acme/*' } }), /github\.read/);
    } finally {
      await daemon.shutdown();
    }
  } finally {
    await upstream.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('contribute: GitHub env only for keys with a GitHub scope, never a token', async () => {
  const s = await startGitHubFixture();
  try {
    const { contribute } = await import('../src/runner/contribute.ts');
    const plain = await contribute(s.gateway, { group: 'g' });
    assert.equal(plain.env.GIT_CONFIG_COUNT, undefined);
    assert.equal(plain.env.GITHUB_API_URL, undefined);
    const scoped = await contribute(s.gateway, { group: 'g', port: 9555, githubHost: 'ghe.example.com', github: { read: ['acme/*'] } });
    assert.deepEqual(Object.fromEntries(Object.entries(scoped.env).filter(([k]) => k.startsWith('GIT'))), {
      GIT_CONFIG_COUNT: '3',
      GIT_CONFIG_KEY_0: 'url.http://127.0.0.1:9555/git/ghe.example.com/.insteadOf',
      GIT_CONFIG_VALUE_0: 'https://ghe.example.com/',
      GIT_CONFIG_KEY_1: 'url.http://127.0.0.1:9555/git/ghe.example.com/.insteadOf',
      GIT_CONFIG_VALUE_1: 'git@ghe.example.com:',
      GIT_CONFIG_KEY_2: 'url.http://127.0.0.1:9555/git/ghe.example.com/.insteadOf',
      GIT_CONFIG_VALUE_2: 'ssh://git@ghe.example.com/',
      GIT_TERMINAL_PROMPT: '0',
      GITHUB_API_URL: 'http://127.0.0.1:9555/github-api',
    });
    assert.ok(!JSON.stringify(scoped.env).includes(REAL_GITHUB_TOKEN));
    await assert.rejects(s.gateway.mint({ group: 'g', github: { push: ['no-slash'] } }), /github\.push/);
    await plain.close();
    await scoped.close();
  } finally {
    await s.close();
  }
});
