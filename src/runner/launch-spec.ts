// What a launch asks of any renderer (podman, docker, bwrap, Apple's container, a Kubernetes Pod),
// and the checks that keep each value what it says: a runtime must never read a name as a flag or
// a path as two.
import type { Contribution, Mount } from './contribute.ts';

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

export const WORKSPACE = '/workspace';

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
 * NUL (which no argv can carry) is refused. Every renderer calls it.
 */
export function checkSpec(contribution: Contribution, spec: LaunchSpec): void {
  if (spec.image && (spec.image.startsWith('-') || /[\s\x00-\x1f\x7f]/.test(spec.image))) {
    refuse('image', spec.image, 'must not start with "-" or contain spaces or control characters');
  }
  if (spec.name !== undefined && !CONTAINER_NAME.test(spec.name)) refuse('container name', spec.name, 'must be [A-Za-z0-9][A-Za-z0-9_.-]*');
  if (!CONTAINER_NAME.test(contribution.network)) refuse('network', contribution.network, 'must be [A-Za-z0-9][A-Za-z0-9_.-]*');
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

export function command(contribution: Contribution, spec: LaunchSpec): string[] {
  return spec.shim === false ? spec.command : contribution.wrap(spec.command);
}

export function envPairs(contribution: Contribution, spec: LaunchSpec): [string, string][] {
  return Object.entries({ ...spec.env, ...contribution.env });
}
