// Egress (issue 14) with the real tools an agent uses, in real `--network=none` podman containers
// as uid 1000: npm, pip and curl reach a package registry only through their key's socket (the
// proxy variables contribute() sets point them at the shim), and only where the key's allowlist says.
// The "registry" is an HTTPS server on the host's loopback with a certificate from a test CA, named
// registry.test (pinned to 127.0.0.1 with `egress.hosts`); it serves an npm packument and tarball, a
// PEP 503 simple index and wheel, and a plain page. The tools come from the host, lent read-only:
// npm's package (run by the image's Node 22), the Python on PATH with its pip, and /usr/bin/curl.
// Each refusal's exact text is asserted, since that text is what the agent reads (docs/egress.md).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test, type TestContext } from 'node:test';
import type { EgressRecord } from '../src/egress/record.ts';
import { contribute } from '../src/runner/contribute.ts';
import { eventually, REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, startFixture, type Fixture } from './support/fixture.ts';
import { buildTestImage, podmanAvailable, podmanRun, type Mount, type RunResult } from './support/podman.ts';
import { skipUnless } from './support/requirements.ts';
import { createTestCa } from './support/test-ca.ts';

const CONTAINER_TIMEOUT_MS = 60_000;
const NPM_PACKAGE = 'e2e-egress-pkg';
const NPM_EXPORT = 'e2e-egress-pkg works';
const WHEEL_PROJECT = 'e2e-egress-wheel';
const WHEEL_FILE = 'e2e_egress_wheel-1.0.0-py3-none-any.whl';
const WHEEL_GREETING = 'e2e-egress-wheel works';
/** A host no key here is granted: refused by policy before any lookup, so it needs no server. */
const REFUSED_HOST = 'elsewhere.test';
const CA_IN_CONTAINER = '/opt/egress-ca/ca.pem';

/** The host's npm package directory (the one `npm` on PATH runs), or undefined. */
function npmPackageDir(): string | undefined {
  const which = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).stdout.trim();
  if (!which) return undefined;
  let dir = dirname(realpathSync(which));
  for (let i = 0; i < 3; i++, dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'npm') return dir;
  }
  return undefined;
}

interface HostPython {
  /** The real interpreter (not pyenv's shim script). */
  executable: string;
  /** What to lend the container: the interpreter's prefix, or only the binary when the prefix is /usr (its library is under the /usr/lib mount). */
  mount: Mount;
}

/** The `python3` on PATH, if it runs and has pip. */
function hostPython(): HostPython | undefined {
  const probe = spawnSync('python3', ['-c', 'import os, sys, pip; print(os.path.realpath(sys.executable)); print(sys.base_prefix)'], { encoding: 'utf8' });
  if (probe.status !== 0) return undefined;
  const [executable, prefix] = probe.stdout.trim().split('\n');
  if (!executable || !prefix) return undefined;
  const mount = prefix === '/usr' ? { source: executable, target: executable, readOnly: true } : { source: prefix, target: prefix, readOnly: true };
  return { executable, mount };
}

/** A pure-Python wheel, written with the host Python's zipfile (RECORD with real hashes). */
function buildWheel(python: string, dir: string): Buffer {
  const script = `
import base64, hashlib, sys, zipfile
files = {
  "e2e_egress_wheel/__init__.py": 'GREETING = "${WHEEL_GREETING}"\\n',
  "e2e_egress_wheel-1.0.0.dist-info/METADATA": "Metadata-Version: 2.1\\nName: ${WHEEL_PROJECT}\\nVersion: 1.0.0\\n",
  "e2e_egress_wheel-1.0.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: e2e-egress-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
}
record = ""
for name, text in files.items():
  data = text.encode()
  digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
  record += f"{name},sha256={digest},{len(data)}\\n"
record += "e2e_egress_wheel-1.0.0.dist-info/RECORD,,\\n"
files["e2e_egress_wheel-1.0.0.dist-info/RECORD"] = record
with zipfile.ZipFile(sys.argv[1], "w") as z:
  for name, text in files.items(): z.writestr(name, text)
`;
  const file = join(dir, WHEEL_FILE);
  const r = spawnSync(python, ['-c', script, file], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return readFileSync(file);
}

/** A tiny package packed by the real npm: the tarball and the shasum and integrity npm computed. */
function packNpmPackage(npmDir: string, dir: string): { tarball: Buffer; shasum: string; integrity: string } {
  const pkg = join(dir, 'pkg');
  mkdirSync(pkg);
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: NPM_PACKAGE, version: '1.0.0', main: 'index.js', license: 'MIT' }));
  writeFileSync(join(pkg, 'index.js'), `module.exports = ${JSON.stringify(NPM_EXPORT)};\n`);
  const r = spawnSync(process.execPath, [join(npmDir, 'bin/npm-cli.js'), 'pack', '--json', '--pack-destination', dir], {
    cwd: pkg,
    encoding: 'utf8',
    env: { ...process.env, npm_config_cache: join(dir, 'npm-cache'), npm_config_update_notifier: 'false' },
  });
  assert.equal(r.status, 0, r.stderr);
  const [packed] = JSON.parse(r.stdout) as { filename: string; shasum: string; integrity: string }[];
  return { tarball: readFileSync(join(dir, packed!.filename)), shasum: packed!.shasum, integrity: packed!.integrity };
}

/** What a container printed: its stdout, then its stderr (scripts send their tools' stderr to stdout with `exec 2>&1`). */
function output(r: RunResult): string {
  return `${r.stdout}${r.stderr}`;
}

test('real npm, pip and curl through the egress proxy in --network=none podman containers', { timeout: 5 * 60_000 }, async (t) => {
  const skip = skipUnless(podmanAvailable(), 'podman is not installed (CI installs it: .ci/run)');
  if (skip) {
    t.skip(skip);
    return;
  }
  const npmDir = npmPackageDir();
  const python = hostPython();
  const curl = existsSync('/usr/bin/curl') ? realpathSync('/usr/bin/curl') : undefined;
  const { image, mounts: libMounts } = buildTestImage();
  const work = mkdtempSync(join(tmpdir(), 'gw-egress-e2e-'));
  const ca = createTestCa();

  // ---- the registry stand-in on the host ----
  const npmPack = npmDir ? packNpmPackage(npmDir, work) : undefined;
  const wheel = python ? buildWheel(python.executable, work) : undefined;
  const requests: { method?: string; url?: string; host?: string }[] = [];
  let origin = '';
  const registry = https.createServer(ca.issue(['registry.test']), (req, res) => {
    requests.push({ method: req.method, url: req.url, host: req.headers.host });
    const url = req.url ?? '/';
    const send = (type: string, body: string | Buffer) => {
      res.writeHead(200, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (npmPack && url === `/${NPM_PACKAGE}`) {
      const version = {
        name: NPM_PACKAGE,
        version: '1.0.0',
        main: 'index.js',
        dist: { tarball: `${origin}/${NPM_PACKAGE}/-/${NPM_PACKAGE}-1.0.0.tgz`, shasum: npmPack.shasum, integrity: npmPack.integrity },
      };
      return send('application/json', JSON.stringify({ name: NPM_PACKAGE, 'dist-tags': { latest: '1.0.0' }, versions: { '1.0.0': version } }));
    }
    if (npmPack && url === `/${NPM_PACKAGE}/-/${NPM_PACKAGE}-1.0.0.tgz`) return send('application/octet-stream', npmPack.tarball);
    if (wheel && url === `/simple/${WHEEL_PROJECT}/`) {
      const sha256 = createHash('sha256').update(wheel).digest('hex');
      return send('text/html', `<!DOCTYPE html><html><body><a href="/files/${WHEEL_FILE}#sha256=${sha256}">${WHEEL_FILE}</a></body></html>\n`);
    }
    if (wheel && url === `/files/${WHEEL_FILE}`) return send('application/octet-stream', wheel);
    if (url === '/hello') return send('text/plain', `hello from ${req.headers.host}\n`);
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => registry.listen(0, '127.0.0.1', resolve));
  const port = (registry.address() as AddressInfo).port;
  origin = `https://registry.test:${port}`;

  const fx: Fixture = await startFixture({}, { egress: { hosts: { 'registry.test': ['127.0.0.1'] } } });
  t.after(async () => {
    await fx.close();
    registry.close();
    ca.close();
    rmSync(work, { recursive: true, force: true });
  });

  const auditLines = (keyId: string): EgressRecord[] =>
    existsSync(join(fx.stateDir, 'audit.jsonl'))
      ? readFileSync(join(fx.stateDir, 'audit.jsonl'), 'utf8')
          .split('\n')
          .filter((line) => line.includes('"record":"egress"') && line.includes(keyId))
          .map((line) => JSON.parse(line) as EgressRecord)
      : [];

  /** `script` under sh in a fresh container with a fresh key granted `egress`; the key's egress audit lines once `settled` holds. */
  async function run(
    label: string,
    egress: string[],
    script: string,
    extra: { mounts?: Mount[]; env?: Record<string, string> },
    settled: (lines: EgressRecord[]) => boolean,
  ): Promise<{ r: RunResult; lines: EgressRecord[]; ms: number }> {
    const c = await contribute(fx.gateway, { group: 'e2e-egress', label, owner: { uid: 1000, gid: 1000 }, egress, ttlMs: 5 * 60_000 });
    assert.equal(c.key.egress, true);
    assert.equal(c.env.HTTPS_PROXY, 'http://127.0.0.1:9460');
    const started = Date.now();
    try {
      const r = await podmanRun({
        image,
        mounts: [...libMounts, ...c.mounts, { source: ca.certFile, target: CA_IN_CONTAINER, readOnly: true }, ...(extra.mounts ?? [])],
        env: { ...c.env, PATH: '/usr/local/bin:/bin', HOME: '/tmp/home', ...extra.env },
        user: '1000:1000',
        network: c.network,
        args: c.wrap(['sh', '-c', script]),
        timeoutMs: CONTAINER_TIMEOUT_MS,
      });
      const ms = Date.now() - started;
      assert.ok(!r.timedOut, `container timed out after ${ms} ms\n${output(r)}`);
      for (const secret of [REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY])
        assert.ok(!output(r).includes(secret), `a real key is in the container's output\n${output(r)}`);
      // The audit file is written asynchronously: wait for what this run should have left there.
      await eventually(() => settled(auditLines(c.key.id)), 5000).catch(() => {});
      return { r, lines: auditLines(c.key.id), ms };
    } finally {
      await c.close();
    }
  }

  const step = (name: string, reason: string | false, fn: (t: TestContext) => Promise<void>) =>
    t.test(name, { timeout: 2 * CONTAINER_TIMEOUT_MS, skip: reason }, fn);

  const npmMounts = npmDir ? [{ source: npmDir, target: '/opt/npm', readOnly: true }] : [];
  const npmEnv = {
    npm_config_registry: `${origin}/`,
    npm_config_cafile: CA_IN_CONTAINER,
    npm_config_cache: '/tmp/npm-cache',
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
  };
  const npmInstall = `mkdir -p /tmp/proj && cd /tmp/proj && node /opt/npm/bin/npm-cli.js install ${NPM_PACKAGE}`;
  const npmSkip = npmDir ? false : skipUnless(false, 'npm is not on PATH (its package is lent to the container)');

  await step('npm install from an allowed HTTPS registry, through the key socket', npmSkip, async (t) => {
    const script = `${npmInstall}; echo "npm-rc=$?"; node -e 'console.log("required: " + require("/tmp/proj/node_modules/${NPM_PACKAGE}"))'; env`;
    const { r, lines, ms } = await run(
      'npm-ok',
      [`registry.test:${port}`],
      script,
      { mounts: npmMounts, env: npmEnv },
      (l) => l.reduce((sum, line) => sum + line.bytesDown, 0) > npmPack!.tarball.length,
    );
    t.diagnostic(`npm install (allowed): ${ms} ms in the container`);
    const text = output(r);
    assert.equal(r.code, 0, text);
    assert.match(text, /^npm-rc=0$/m, text);
    assert.match(text, new RegExp(`^required: ${NPM_EXPORT}$`, 'm'), text);
    assert.match(text, /^HTTPS_PROXY=http:\/\/127\.0\.0\.1:9460$/m, text);
    assert.ok(
      requests.some((q) => q.url === `/${NPM_PACKAGE}` && q.host === `registry.test:${port}`),
      JSON.stringify(requests),
    );
    assert.ok(
      requests.some((q) => q.url?.endsWith('.tgz')),
      JSON.stringify(requests),
    );
    const tunnels = lines.filter((line) => line.kind === 'tunnel' && line.decision === 'allowed');
    assert.ok(tunnels.length >= 1, JSON.stringify(lines));
    for (const line of tunnels) {
      assert.equal(line.host, 'registry.test');
      assert.equal(line.port, port);
      assert.equal(line.sni, 'registry.test');
      assert.equal(line.address, '127.0.0.1');
      assert.equal(line.rule, `key: registry.test:${port}`);
    }
    assert.ok(tunnels.reduce((sum, line) => sum + line.bytesDown, 0) > npmPack!.tarball.length, JSON.stringify(tunnels));
  });

  await step("npm install with a key not granted the registry: refused; npm's E403 line carries the gateway's message", npmSkip, async (t) => {
    const before = requests.length;
    const script = `exec 2>&1; ${npmInstall}; echo "npm-rc=$?"; ls /tmp/proj/node_modules/${NPM_PACKAGE} || true`;
    const { r, lines, ms } = await run('npm-refused', [`${REFUSED_HOST}:443`], script, { mounts: npmMounts, env: npmEnv }, (l) =>
      l.some((line) => line.decision === 'denied'),
    );
    const text = output(r);
    t.diagnostic(`npm install (refused): ${ms} ms in the container\n${text}`);
    // npm drops a refused CONNECT's body but prints its status line: the gateway puts its message
    // (the host, and what the operator could grant) in the reason phrase, so the agent reads it.
    assert.match(text, /^npm error code E403$/m, text);
    assert.match(
      text,
      new RegExp(
        `^npm error 403 403 Forbidden \\(egress to registry\\.test:${port} refused: no rule of this key allows it\\. .*To allow it, ask the operator to grant registry\\.test:${port} \\(--egress registry\\.test:${port}\\)\\.\\) - GET https://registry\\.test:${port}/${NPM_PACKAGE}$`,
        'm',
      ),
      text,
    );
    assert.match(text, /^npm-rc=1$/m, text);
    assert.match(text, /No such file or directory/, text);
    assert.equal(requests.length, before, 'nothing reached the registry');
    const denied = lines.filter((line) => line.decision === 'denied');
    assert.ok(denied.length >= 1, JSON.stringify(lines));
    for (const line of denied) {
      assert.deepEqual([line.kind, line.host, line.port, line.status, line.reason], ['tunnel', 'registry.test', port, 403, 'not_allowed']);
    }
  });

  const pipSkip = python ? false : skipUnless(false, 'python3 with pip is not on PATH (it is lent to the container)');

  await step('pip install from an allowed PEP 503 index over HTTPS, through the key socket', pipSkip, async (t) => {
    const pip = `${python!.executable} -m pip install --target /tmp/pipout --index-url ${origin}/simple/ --cert ${CA_IN_CONTAINER} --disable-pip-version-check --no-cache-dir ${WHEEL_PROJECT}`;
    const script = `${pip}; echo "pip-rc=$?"; cd /tmp/pipout && ${python!.executable} -c 'import e2e_egress_wheel; print("imported: " + e2e_egress_wheel.GREETING)'`;
    const { r, lines, ms } = await run('pip-ok', [`registry.test:${port}`], script, { mounts: [python!.mount] }, (l) =>
      l.some((line) => line.decision === 'allowed' && line.bytesDown > 0),
    );
    t.diagnostic(`pip install (allowed): ${ms} ms in the container`);
    const text = output(r);
    assert.match(text, /^pip-rc=0$/m, text);
    assert.match(text, new RegExp(`^imported: ${WHEEL_GREETING}$`, 'm'), text);
    assert.ok(
      requests.some((q) => q.url === `/files/${WHEEL_FILE}`),
      JSON.stringify(requests),
    );
    const tunnels = lines.filter((line) => line.kind === 'tunnel' && line.decision === 'allowed');
    assert.ok(tunnels.length >= 1, JSON.stringify(lines));
    for (const line of tunnels) assert.deepEqual([line.host, line.port, line.sni], ['registry.test', port, 'registry.test']);
  });

  await step("pip install with a key not granted the index: refused; pip's retry warning carries the gateway's message", pipSkip, async (t) => {
    const before = requests.length;
    const pip = `${python!.executable} -m pip install --target /tmp/pipout --index-url ${origin}/simple/ --cert ${CA_IN_CONTAINER} --disable-pip-version-check --no-cache-dir ${WHEEL_PROJECT}`;
    // pip says why only in its retry warnings: by default 5 of them (6 refusals, about 10 s); with
    // --retries 0 it prints nothing but "No matching distribution". One retry keeps the why, quickly.
    const script = `exec 2>&1; ${pip} --retries 1; echo "pip-rc=$?"`;
    const { r, lines, ms } = await run('pip-refused', [`${REFUSED_HOST}:443`], script, { mounts: [python!.mount] }, (l) => l.length >= 2);
    const text = output(r);
    t.diagnostic(`pip install (refused): ${ms} ms in the container\n${text}`);
    // pip shows the tunnel's status line (the gateway's message is in its reason phrase), then blames the index.
    assert.match(
      text,
      new RegExp(
        `OSError\\('Tunnel connection failed: 403 Forbidden \\(egress to registry\\.test:${port} refused: .*To allow it, ask the operator to grant registry\\.test:${port} `,
      ),
      text,
    );
    assert.match(text, new RegExp(`^ERROR: No matching distribution found for ${WHEEL_PROJECT}\\n+pip-rc=1$`, 'm'), text);
    assert.equal(requests.length, before, 'nothing reached the index');
    assert.equal(lines.length, 2, JSON.stringify(lines));
    for (const line of lines)
      assert.deepEqual([line.kind, line.host, line.decision, line.status, line.reason], ['tunnel', 'registry.test', 'denied', 403, 'not_allowed']);
  });

  const curlSkip = curl ? false : skipUnless(false, '/usr/bin/curl is missing (it is lent to the container)');

  await step('curl: an allowed host answers; a refused one fails the tunnel (56) or shows the 403 body (plain HTTP)', curlSkip, async (t) => {
    const curlCmd = `curl -sS --cacert ${CA_IN_CONTAINER}`;
    const script = [
      'exec 2>&1',
      `${curlCmd} ${origin}/hello; echo "allowed-rc=$?"`,
      `${curlCmd} https://${REFUSED_HOST}:${port}/hello; echo "refused-rc=$?"`,
      `${curlCmd} -w 'status=%{http_code}\\n' http://${REFUSED_HOST}:${port}/plain; echo "plain-rc=$?"`,
    ].join('; ');
    const { r, lines, ms } = await run(
      'curl',
      [`registry.test:${port}`],
      script,
      { mounts: [{ source: curl!, target: '/usr/local/bin/curl', readOnly: true }] },
      (l) => l.filter((line) => line.decision === 'denied').length >= 2,
    );
    const text = output(r);
    t.diagnostic(`curl: ${ms} ms in the container\n${text}`);
    assert.match(text, new RegExp(`^hello from registry\\.test:${port}\\n+allowed-rc=0$`, 'm'), text);
    assert.match(text, /^curl: \(56\) CONNECT tunnel failed, response 403\n+refused-rc=56$/m, text);
    assert.match(text, new RegExp(`egress to GET http://${REFUSED_HOST.replace('.', '\\.')}:${port}/plain refused`), text);
    assert.match(text, new RegExp(`To allow it, ask the operator to grant ${REFUSED_HOST.replace('.', '\\.')}:${port}`), text);
    assert.match(text, /status=403\n+plain-rc=0$/m, text);
    const summary = lines.map((line) => [line.kind, line.host, line.decision, line.status]);
    assert.deepEqual(summary, [
      ['tunnel', 'registry.test', 'allowed', 200],
      ['tunnel', REFUSED_HOST, 'denied', 403],
      ['http', REFUSED_HOST, 'denied', 403],
    ]);
    assert.deepEqual([lines[2]!.method, lines[2]!.path, lines[2]!.port], ['GET', '/plain', port]);
  });
});
