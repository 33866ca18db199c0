// Renderers: a contribution plus an image and a command, as argv for a container runtime. Runtime
// differences live here and nowhere else.
import { appleContainer } from './apple-container.ts';
import type { Contribution } from './contribute.ts';
import { checkSpec, command, envPairs, type LaunchSpec, WORKSPACE } from './launch-spec.ts';

export type { LaunchSpec } from './launch-spec.ts';

export type Runtime = 'podman' | 'docker' | 'bwrap' | 'container';

/** The host a container is launched from: whose process runs the runtime. */
export interface RenderHost {
  /** Our uid; rootless podman (any uid but 0) needs `--userns=keep-id`. Default `process.getuid()`. */
  uid?: number;
}

/** podman and docker share their flags; SELinux relabelling (`Z`: private to this container) too. */
function oci(runtime: 'podman' | 'docker', contribution: Contribution, spec: LaunchSpec, host: RenderHost): string[] {
  if (!spec.image) throw new TypeError(`${runtime} needs an image`);
  // `none` for a mounted socket; in TCP mode the network the key's listener is on (runner/network.ts).
  const argv = [runtime, 'run', '--rm', `--network=${contribution.network}`];
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
  if (contribution.network !== 'none') throw new TypeError('bwrap sandboxes have no network but their own loopback: use the socket, not TCP mode');
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
    case 'container':
      return appleContainer(contribution, spec);
  }
}
