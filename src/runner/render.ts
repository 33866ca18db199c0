// Renderers: a contribution plus an image and a command, as argv for a container runtime. Runtime
// differences live here and nowhere else.
import type { Contribution, Mount } from './contribute.ts';

export type Runtime = 'podman' | 'docker' | 'bwrap';

export interface LaunchSpec {
  /** The image (podman, docker). bwrap runs host binaries: no image. */
  image?: string;
  /** The command; wrapped with the key's shim unless `shim: false` (an image whose entrypoint starts it). */
  command: string[];
  shim?: boolean;
  /** uid[:gid] to run as. */
  user?: string;
  /** A host directory mounted read-write as the working directory (/workspace). */
  workdir?: string;
  /** More host paths to mount (tools, a Node for bwrap). Never a credential file. */
  mounts?: Mount[];
  name?: string;
  /** Extra env for the agent (never a credential: the gateway holds those). */
  env?: Record<string, string>;
  /** Runtime-specific flags, verbatim, before the image. */
  extraArgs?: string[];
}

const WORKSPACE = '/workspace';

// What each value may look like so that the runtime reads it as that value and nothing else: a
// leading `-` would be read as a flag (an image named `--privileged`), `:` and `,` split a `-v`
// mount spec, control bytes and newlines have no place in a name or a path.
const CONTROL = /[\x00-\x1f\x7f]/;
const CONTAINER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$/;
const USER = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,255}$/;

function refuse(what: string, value: string, rule: string): never {
  throw new TypeError(`${what} ${JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value)} ${rule}`);
}

function checkPathValue(what: string, value: string): void {
  if (value === '' || value.startsWith('-') || CONTROL.test(value) || /[:,]/.test(value)) {
    refuse(what, value, 'must be a path that does not start with "-" and has no ":", "," or control characters');
  }
}

/**
 * Refuses a spec whose values a runtime could misparse. Env values are passed whole, each in its
 * own argv entry (`-e NAME=value`, `--setenv NAME value`): a newline in a value arrives intact, only
 * NUL (which no argv can carry) is refused.
 */
export function checkSpec(contribution: Pick<Contribution, 'mounts' | 'env'>, spec: LaunchSpec): void {
  if (spec.image && (spec.image.startsWith('-') || /[\s\x00-\x1f\x7f]/.test(spec.image))) {
    refuse('image', spec.image, 'must not start with "-" or contain spaces or control characters');
  }
  if (spec.name !== undefined && !CONTAINER_NAME.test(spec.name)) refuse('container name', spec.name, 'must be [A-Za-z0-9][A-Za-z0-9_.-]*');
  if (spec.user !== undefined && !USER.test(spec.user)) refuse('user', spec.user, 'must be uid[:gid] or name[:group]');
  if (spec.workdir !== undefined) checkPathValue('workdir', spec.workdir);
  for (const mount of [...contribution.mounts, ...(spec.mounts ?? [])]) {
    checkPathValue('mount source', mount.source);
    checkPathValue('mount target', mount.target);
    if (!mount.target.startsWith('/')) refuse('mount target', mount.target, 'must be an absolute path');
  }
  for (const [name, value] of envPairs(contribution, spec)) {
    if (!ENV_NAME.test(name)) refuse('env name', name, 'must be [A-Za-z_][A-Za-z0-9_]*');
    if (value.includes('\0')) refuse(`env ${name}: value`, value, 'must not contain NUL');
  }
}

function command(contribution: Contribution, spec: LaunchSpec): string[] {
  return spec.shim === false ? spec.command : contribution.wrap(spec.command);
}

function envPairs(contribution: Pick<Contribution, 'env'>, spec: LaunchSpec): [string, string][] {
  return Object.entries({ ...spec.env, ...contribution.env });
}

/** The host a container is launched from: whose process runs the runtime. */
export interface RenderHost {
  /** Our uid; rootless podman (any uid but 0) needs `--userns=keep-id`. Default `process.getuid()`. */
  uid?: number;
}

/** podman and docker share their flags; SELinux relabelling (`Z`: private to this container) too. */
function oci(runtime: 'podman' | 'docker', contribution: Contribution, spec: LaunchSpec, host: RenderHost): string[] {
  if (!spec.image) throw new TypeError(`${runtime} needs an image`);
  const argv = [runtime, 'run', '--rm', '--network=none'];
  if (spec.name) argv.push('--name', spec.name);
  for (const mount of [...contribution.mounts, ...(spec.mounts ?? [])]) {
    argv.push('-v', `${mount.source}:${mount.target}:${mount.readOnly ? 'ro,' : ''}Z`);
  }
  if (spec.workdir) argv.push('-v', `${spec.workdir}:${WORKSPACE}:Z`, '-w', WORKSPACE);
  for (const [name, value] of Object.entries(contribution.labels)) argv.push('--label', `${name}=${value}`);
  for (const [name, value] of envPairs(contribution, spec)) argv.push('-e', `${name}=${value}`);
  if (spec.user) argv.push('--user', spec.user);
  // Rootless podman maps the container's user to ours, so it owns the key's socket as we do.
  if (runtime === 'podman' && spec.user && host.uid !== 0) argv.push('--userns=keep-id');
  // `--`: whatever the image is called, it is the image, never a flag.
  argv.push(...(spec.extraArgs ?? []), '--', spec.image, ...command(contribution, spec));
  return argv;
}

/**
 * A bubblewrap sandbox: no network namespace but its own loopback, the host's system directories
 * read-only, an empty home and /tmp, and the key's directory. Nothing else of the host is visible
 * (no home directory, so no credential files).
 */
function bwrap(contribution: Contribution, spec: LaunchSpec): string[] {
  // --clearenv: bwrap would otherwise pass on our whole environment, real keys included.
  const argv = ['bwrap', '--clearenv', '--unshare-net', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--die-with-parent', '--new-session'];
  for (const dir of ['/usr', '/bin', '/sbin', '/lib', '/lib64', '/etc/alternatives', '/etc/ssl']) argv.push('--ro-bind-try', dir, dir);
  for (const file of ['/etc/passwd', '/etc/group', '/etc/hosts', '/etc/nsswitch.conf']) argv.push('--ro-bind-try', file, file);
  argv.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp', '--tmpfs', '/home');
  argv.push('--setenv', 'HOME', '/home', '--setenv', 'PATH', '/usr/local/bin:/usr/bin:/bin');
  for (const mount of [...contribution.mounts, ...(spec.mounts ?? [])]) {
    argv.push(mount.readOnly ? '--ro-bind' : '--bind', mount.source, mount.target);
  }
  if (spec.workdir) argv.push('--bind', spec.workdir, WORKSPACE, '--chdir', WORKSPACE);
  else argv.push('--chdir', '/tmp');
  for (const [name, value] of envPairs(contribution, spec)) argv.push('--setenv', name, value);
  argv.push(...(spec.extraArgs ?? []), '--', ...command(contribution, spec));
  return argv;
}

/** The argv; a TypeError for a spec a runtime could misparse (`checkSpec`). */
export function render(runtime: Runtime, contribution: Contribution, spec: LaunchSpec, host: RenderHost = { uid: process.getuid?.() }): string[] {
  checkSpec(contribution, spec);
  switch (runtime) {
    case 'podman':
    case 'docker':
      return oci(runtime, contribution, spec, host);
    case 'bwrap':
      return bwrap(contribution, spec);
  }
}
