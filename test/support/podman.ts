// Test harness for real podman containers on this kind of machine (see the shared notes, containers.md).
//
// Host quirks handled here, and only here, so production code stays generic:
// - the default OCI runtime (crun) fails on this host's hybrid cgroups: `--runtime runc`;
// - podman's default rlimits are refused, lower explicit ones are accepted: `--ulimit ...`.
// These would belong in a containers.conf passed with CONTAINERS_CONF_OVERRIDE, but podman 4.3.1
// (Debian bookworm) ignores that variable, and CONTAINERS_CONF would replace the system file
// altogether; so they are passed as flags, which every podman version understands.
//
// No registry is reachable: the test image is built from local files (busybox-static + the project's
// own Node 22 binary) and `podman import`ed. Node's shared libraries come from the host at run time,
// through the read-only mounts `buildTestImage()` returns.
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const TEST_IMAGE = 'localhost/llm-gateway-test:latest';
const FINGERPRINT_LABEL = 'llm-gateway-test.fingerprint';

/** Flags this host needs on every `podman run` (see the header). */
const HOST_RUN_FLAGS = ['--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024'];
const GLOBAL_FLAGS = ['--runtime', 'runc'];

export interface Mount {
  source: string;
  target: string;
  readOnly?: boolean;
}

/** Where the end-to-end tests put the real clients (the host's node_modules) and $HOME in a container. */
export const CONTAINER_CLIENTS = '/opt/clients/node_modules';
export const CONTAINER_HOME = '/tmp/home';

/** The host's node_modules (the pinned clients) and test/e2e (the run and report scripts), read-only. */
export function clientMounts(): Mount[] {
  return [
    { source: realpathSync(new URL('../../node_modules', import.meta.url).pathname), target: CONTAINER_CLIENTS, readOnly: true },
    { source: new URL('../e2e', import.meta.url).pathname, target: '/opt/clients/e2e', readOnly: true },
  ];
}

export interface RunOptions {
  image: string;
  args: string[];
  mounts?: Mount[];
  env?: Record<string, string>;
  /** `uid[:gid]` or a user name known to the image. */
  user?: string;
  /** `none` (default), or a network's name (TCP mode). */
  network?: string;
  /** More `podman run` flags, before the image (e.g. `--ip ADDR` on a network of the test's own). */
  extraArgs?: string[];
  timeoutMs?: number;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

let available: boolean | undefined;

export function podmanAvailable(): boolean {
  available ??= spawnSync('podman', ['--version'], { stdio: 'ignore' }).status === 0;
  return available;
}

function podman(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('podman', [...GLOBAL_FLAGS, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error ? String(r.error) : '') };
}

/** The project's Node 22 binary (node_modules/.bin/node is a symlink chain to it). */
function nodeBinary(): string {
  return realpathSync(new URL('../../node_modules/node/bin/node', import.meta.url).pathname);
}

function busyboxBinary(): string {
  for (const p of ['/bin/busybox', '/usr/bin/busybox']) if (existsSync(p)) return realpathSync(p);
  throw new Error('busybox not found: apt-get install busybox-static');
}

/** Host library directories Node's shared libraries live in, mounted read-only. */
function hostLibMounts(): Mount[] {
  return ['/lib', '/lib64', '/usr/lib'].filter((dir) => existsSync(dir)).map((dir) => ({ source: dir, target: dir, readOnly: true }));
}

/** What the image is made of: rebuild when the Node or busybox binary changes. */
function fingerprint(node: string, busybox: string): string {
  const h = createHash('sha256').update('v1');
  for (const f of [node, busybox]) {
    const s = statSync(f);
    h.update(`${f}:${s.size}:${s.mtimeMs}`);
  }
  return h.digest('hex').slice(0, 16);
}

let built: { image: string; mounts: Mount[] } | undefined;

/**
 * Builds (once; reused while its inputs are unchanged) a registry-free image with busybox sh and
 * applets, Node 22 at /usr/local/bin/node, root and a uid 1000 `agent` user, /tmp and an empty
 * /run/gateway mount point. Returns the image and the mounts every run of it needs.
 */
export function buildTestImage(): { image: string; mounts: Mount[] } {
  if (built) return built;
  const node = nodeBinary();
  const busybox = busyboxBinary();
  const print = fingerprint(node, busybox);
  const existing = podman(['image', 'inspect', '--format', `{{index .Config.Labels "${FINGERPRINT_LABEL}"}}`, TEST_IMAGE]);
  if (existing.status !== 0 || existing.stdout.trim() !== print) {
    const dir = mkdtempSync(join(tmpdir(), 'llm-gateway-image-'));
    try {
      const root = join(dir, 'root');
      for (const d of ['bin', 'etc', 'home/agent', 'run/gateway', 'tmp', 'usr/local/bin']) mkdirSync(join(root, d), { recursive: true });
      copyFileSync(busybox, join(root, 'bin/busybox'));
      chmodSync(join(root, 'bin/busybox'), 0o755);
      const applets = spawnSync(busybox, ['--list'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
      for (const applet of applets) if (applet !== 'busybox') symlinkSync('busybox', join(root, 'bin', applet));
      copyFileSync(node, join(root, 'usr/local/bin/node'));
      chmodSync(join(root, 'usr/local/bin/node'), 0o755);
      writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/home/agent:/bin/sh\n');
      writeFileSync(join(root, 'etc/group'), 'root:x:0:\nagent:x:1000:\n');
      chmodSync(join(root, 'tmp'), 0o1777);
      chownSync(join(root, 'home/agent'), 1000, 1000);
      const tar = join(dir, 'image.tar');
      const t = spawnSync('tar', ['--numeric-owner', '-C', root, '-cf', tar, '.'], { encoding: 'utf8' });
      if (t.status !== 0) throw new Error(`tar failed: ${t.stderr}`);
      const imp = podman([
        'import',
        '--change',
        'ENV PATH=/usr/local/bin:/bin',
        '--change',
        'WORKDIR /tmp',
        '--change',
        `LABEL ${FINGERPRINT_LABEL}=${print}`,
        tar,
        TEST_IMAGE,
      ]);
      if (imp.status !== 0) throw new Error(`podman import failed: ${imp.stderr}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  built = { image: TEST_IMAGE, mounts: hostLibMounts() };
  return built;
}

/** Runs a container to completion (`--rm`); past the timeout it is killed and `timedOut` is set. */
export function podmanRun(opts: RunOptions): Promise<RunResult> {
  const name = `llm-gateway-test-${randomBytes(6).toString('hex')}`;
  const args = ['run', '--rm', '--pull=never', '--name', name, '--network', opts.network ?? 'none', ...HOST_RUN_FLAGS];
  for (const m of opts.mounts ?? []) {
    args.push('--mount', `type=bind,source=${m.source},target=${m.target}${m.readOnly ? ',readonly' : ''}`);
  }
  for (const [k, v] of Object.entries(opts.env ?? {})) args.push('--env', `${k}=${v}`);
  if (opts.user) args.push('--user', opts.user);
  args.push(...(opts.extraArgs ?? []), opts.image, ...opts.args);

  return new Promise((resolve, reject) => {
    const proc = spawn('podman', [...GLOBAL_FLAGS, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    proc.stdout.on('data', (b: Buffer) => (stdout += b));
    proc.stderr.on('data', (b: Buffer) => (stderr += b));
    const timer = setTimeout(() => {
      timedOut = true;
      // Killing the podman client alone would leave the container running: kill the container.
      spawn('podman', [...GLOBAL_FLAGS, 'rm', '--force', '--time', '0', name], { stdio: 'ignore' }).on('exit', () => proc.kill('SIGKILL'));
    }, opts.timeoutMs ?? 60_000);
    proc.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}
