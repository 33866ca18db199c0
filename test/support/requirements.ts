// Tests that need a tool the machine may lack (podman, bubblewrap, git, root) skip where a developer
// lacks it, but CI sets GATEWAY_REQUIRE_ALL_TESTS=1 (.ci/run): there a missing tool fails the run, so
// a green CI always includes the container, root and tool-dependent tests.
import { spawnSync } from 'node:child_process';

const required = process.env.GATEWAY_REQUIRE_ALL_TESTS === '1';

/** Whether `command args` runs and exits 0. */
export function runs(command: string, args: string[] = ['--version']): boolean {
  return spawnSync(command, args, { stdio: 'ignore' }).status === 0;
}

/**
 * The `skip` option of a test that needs `available`: false when it can run, else the reason to skip.
 * Under GATEWAY_REQUIRE_ALL_TESTS=1 a missing requirement throws instead, failing the test file.
 */
export function skipUnless(available: boolean, reason: string): string | false {
  if (available) return false;
  if (required) throw new Error(`a required test cannot run: ${reason} (GATEWAY_REQUIRE_ALL_TESTS=1)`);
  return reason;
}

export const isRoot = process.getuid?.() === 0;
