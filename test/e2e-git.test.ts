// The real git client in a real `--network=none` podman container (uid 1000), cloning and pushing
// through the shim and its key's socket to a local GitHub stand-in: bare repositories served by the
// real `git http-backend` behind Basic auth with the real token (test/support/git-upstream.ts).
// The container gets the key's directory, the env from contribute() and the host's git, read-only;
// no token and no git config file. test/e2e/git.sh runs the steps, test/e2e/report.mjs scans the
// container's files for the token (given only its hash) afterwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { contribute } from '../src/runner/contribute.ts';
import { eventually } from './support/fixture.ts';
import { REAL_GITHUB_TOKEN, startGitHubFixture } from './support/git-upstream.ts';
import { writeNeedles } from './support/needles.ts';
import { runs, skipUnless } from './support/requirements.ts';
import { buildTestImage, podmanAvailable, podmanRun, type Mount } from './support/podman.ts';

const E2E_DIR = new URL('./e2e', import.meta.url).pathname;
const HOME = '/tmp/home';

/** The output of each `== STEP` block of git.sh, with its exit status. */
function steps(output: string): Map<string, { out: string; rc: number | undefined }> {
  const map = new Map<string, { out: string; rc: number | undefined }>();
  for (const block of output.split(/^== /m).slice(1)) {
    const newline = block.indexOf('\n');
    const name = block.slice(0, newline === -1 ? undefined : newline).trim();
    const out = newline === -1 ? '' : block.slice(newline + 1);
    const rc = /^rc=(\d+)$/m.exec(out);
    map.set(name, { out, rc: rc ? Number(rc[1]) : undefined });
  }
  return map;
}

test('real git in a --network=none container: clone and push in scope, refusals outside, no token inside', { timeout: 5 * 60_000 }, async (t) => {
  const skip =
    skipUnless(podmanAvailable(), 'podman is not installed (CI installs it: .ci/run)') ||
    skipUnless(runs('git'), 'git is not installed on the host (container/install-host-packages.sh installs it)');
  if (skip) {
    t.skip(skip);
    return;
  }
  const { image, mounts: libMounts } = buildTestImage();
  const fixture = await startGitHubFixture();
  const { upstream, gateway, calls, stateDir } = fixture;
  const needles = writeNeedles({ github: REAL_GITHUB_TOKEN });
  t.after(async () => {
    await fixture.close();
    needles.remove();
  });

  const c = await contribute(gateway, {
    group: 'e2e',
    label: 'git',
    owner: { uid: 1000, gid: 1000 },
    ttlMs: 10 * 60_000,
    github: { read: ['acme/*'], push: ['acme/widgets'], api: true },
  });
  // The image has no git: the host's is lent read-only (its helpers are in /usr/lib/git-core, which
  // comes with the library mounts), like the libraries themselves.
  const mounts: Mount[] = [
    ...libMounts,
    { source: '/usr/bin/git', target: '/usr/local/bin/git', readOnly: true },
    ...(existsSync('/usr/share/git-core') ? [{ source: '/usr/share/git-core', target: '/usr/share/git-core', readOnly: true }] : []),
    { source: E2E_DIR, target: '/opt/clients/e2e', readOnly: true },
    { source: needles.dir, target: '/opt/clients/needles', readOnly: true },
    ...c.mounts,
  ];
  const started = Date.now();
  const r = await podmanRun({
    image,
    mounts,
    env: {
      ...c.env,
      PATH: '/usr/local/bin:/bin',
      HOME,
      TERM: 'dumb',
      E2E_DIRECT_PORT: new URL(upstream.url).port,
      E2E_NEEDLES: '/opt/clients/needles/needles.json',
    },
    user: '1000:1000',
    network: c.network,
    args: c.wrap(['sh', '/opt/clients/e2e/run.sh', 'sh', '/opt/clients/e2e/git.sh']),
    timeoutMs: 180_000,
  });
  await c.close();
  t.diagnostic(`container: ${Date.now() - started} ms`);
  assert.ok(!r.timedOut, `container timed out\n${r.stdout}\n${r.stderr}`);
  assert.equal(r.code, 0, `container failed: ${r.stdout}\n${r.stderr}`);
  const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
    stdout: string;
    stderr: string;
    env: string;
    uid: number;
    direct: string;
    scan: { paths: string[]; hits: { file: string; needle: string }[] };
  };
  const s = steps(report.stdout);
  if (process.env.E2E_DUMP) writeFileSync(join(process.env.E2E_DUMP, 'git.txt'), report.stdout);
  const show = `${report.stdout}\n--- stderr\n${report.stderr}`;
  assert.equal(report.uid, 1000);
  assert.ok(s.has('end'), `git.sh did not finish:\n${show}`);

  // Git's only configuration is the env's URL rewrite, and it holds no token.
  const config = s.get('config')!.out;
  assert.match(config, /^command line:\s+url\.http:\/\/127\.0\.0\.1:9460\/git\/github\.com\/\.insteadof=https:\/\/github\.com\/$/m, show);
  assert.match(config, /^command line:\s+url\.http:\/\/127\.0\.0\.1:9460\/git\/github\.com\/\.insteadof=git@github\.com:$/m, show);
  assert.ok(!/^file:/m.test(config), `git read a config file:\n${config}`);

  // In scope: clone, push, and a push of a 4 MB packfile, through container -> shim -> socket -> gateway -> http-backend.
  assert.equal(s.get('clone')!.rc, 0, show);
  assert.equal(s.get('push')!.rc, 0, show);
  assert.equal(s.get('push-big')!.rc, 0, show);
  assert.equal(s.get('clone-ssh-spelling')!.rc, 0, show);
  assert.deepEqual(upstream.git('acme/widgets', ['log', '--format=%s', 'main']).trim().split('\n'), ['big file', 'agent change', 'seed acme/widgets']);
  const bigPush = upstream.seen.find((q) => q.method === 'POST' && q.url === '/acme/widgets.git/git-receive-pack' && q.bodyBytes > 3_900_000);
  assert.ok(bigPush, `no large receive-pack reached the upstream: ${JSON.stringify(upstream.seen.map((q) => [q.method, q.url, q.bodyBytes]))}`);
  // git sends a packfile this large chunked (over http.postBuffer): it went through as a stream.
  assert.equal(bigPush.headers['transfer-encoding'], 'chunked');
  assert.ok(
    upstream.seen.every((q) => q.authorized),
    'every request that reached the upstream carried the real token',
  );

  // Outside the scope: refused with a message git shows, and the upstream never saw the request.
  assert.notEqual(s.get('push-outside')!.rc, 0, show);
  assert.match(s.get('push-outside')!.out, /remote: gateway: this key may not push to acme\/docs/, show);
  assert.notEqual(s.get('clone-outside')!.rc, 0, show);
  assert.match(s.get('clone-outside')!.out, /remote: gateway: this key may not read other\/secret/, show);
  assert.ok(
    !upstream.seen.some(
      (q) => q.url.includes('other/secret') || q.url.includes('docs.git/info/refs?service=git-receive-pack') || q.url.includes('docs.git/git-receive-pack'),
    ),
    JSON.stringify(upstream.seen.map((q) => q.url)),
  );
  assert.equal(upstream.git('acme/docs', ['log', '-1', '--format=%s', 'main']).trim(), 'seed acme/docs');

  // The API: base URL from the env, repository scope applied.
  assert.match(s.get('api-read')!.out, /^200 \{"ok":true,"method":"GET","path":"\/api\/v3\/repos\/acme\/widgets"/m, show);
  assert.match(s.get('api-outside')!.out, /^403 .*this key may not read other\/secret/m, show);
  assert.match(s.get('api-write-outside')!.out, /^403 .*this key may not write to acme\/docs/m, show);

  // No token in the container: env, files (scanned from inside with only its hash), output.
  assert.match(report.env, /^GIT_CONFIG_COUNT=3$/m);
  assert.match(report.env, /^GITHUB_API_URL=http:\/\/127\.0\.0\.1:9460\/github-api$/m);
  assert.ok(!/^(GH_TOKEN|GITHUB_TOKEN)=/m.test(report.env));
  for (const text of [report.env, report.stdout, report.stderr, r.stdout, r.stderr])
    assert.ok(!text.includes(REAL_GITHUB_TOKEN), 'the token is in the container');
  assert.ok(
    report.scan.hits.some((h) => h.needle === 'canary' && h.file === `${HOME}/canary.txt`),
    'the scan did not read $HOME',
  );
  assert.ok(
    report.scan.paths.some((p) => p.startsWith('/tmp/work/widgets/.git/')),
    'the scan did not read the clone',
  );
  assert.deepEqual(
    report.scan.hits.filter((h) => h.needle !== 'canary'),
    [],
    'the token is in a file in the container',
  );
  assert.match(report.direct, /^(ECONNREFUSED|ENETUNREACH)$/);

  // One audit record per git and API call, with repository and service, cost 0, no token.
  await eventually(
    () => existsSync(join(stateDir, 'audit.jsonl')) && readFileSync(join(stateDir, 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).length >= calls.length,
    5000,
  );
  const audit = readFileSync(join(stateDir, 'audit.jsonl'), 'utf8');
  assert.ok(!audit.includes(REAL_GITHUB_TOKEN));
  const lines = audit
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  const bigRecord = lines.find((l) => l.service === 'git-receive-pack' && l.method === 'POST' && Number(l.requestBytes) > 3_900_000);
  assert.ok(bigRecord, audit);
  assert.equal(bigRecord.repo, 'acme/widgets');
  assert.equal(bigRecord.status, 200);
  assert.equal(bigRecord.costUsd, 0);
  assert.ok(
    lines.some((l) => l.repo === 'acme/docs' && l.service === 'git-receive-pack' && l.status === 403 && l.errorKind === 'github_not_allowed'),
    audit,
  );
  assert.ok(
    lines.some((l) => l.repo === 'other/secret' && l.service === 'git-upload-pack' && l.status === 403),
    audit,
  );
  assert.ok(calls.every((call) => call.keyId === c.key.id && call.dialect === 'github'));
});
