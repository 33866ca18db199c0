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

function command(contribution: Contribution, spec: LaunchSpec): string[] {
  return spec.shim === false ? spec.command : contribution.wrap(spec.command);
}

function envPairs(contribution: Contribution, spec: LaunchSpec): [string, string][] {
  return Object.entries({ ...spec.env, ...contribution.env });
}

/** podman and docker share their flags; SELinux relabelling (`Z`: private to this container) too. */
function oci(runtime: 'podman' | 'docker', contribution: Contribution, spec: LaunchSpec): string[] {
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
  if (runtime === 'podman' && spec.user && process.getuid?.() !== 0) argv.push('--userns=keep-id');
  argv.push(...(spec.extraArgs ?? []), spec.image, ...command(contribution, spec));
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

export function render(runtime: Runtime, contribution: Contribution, spec: LaunchSpec): string[] {
  switch (runtime) {
    case 'podman':
    case 'docker':
      return oci(runtime, contribution, spec);
    case 'bwrap':
      return bwrap(contribution, spec);
  }
}
