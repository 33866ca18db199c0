// What the in-container scans look for: each secret as a prefix, a length and a SHA-256, never the
// secret itself, plus a canary that run.sh plants in $HOME (the scan must find it, or it read nothing).
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** What test/e2e/report.mjs prints as its last line: the run, the environment, the scan, a direct connection attempt. */
export interface ContainerReport {
  rc: number;
  seconds: number;
  stdout: string;
  stderr: string;
  env: string;
  uid: number;
  scan: { files: number; bytes: number; dirs: number; paths: string[]; unreadable: string[]; hits: { file: string; needle: string; offset: number }[] };
  direct: string;
}

export const CANARY = 'e2e-canary-1b9d6f3a0c';

function needle(name: string, value: string) {
  return { name, prefix: value.slice(0, 6), length: value.length, sha256: createHash('sha256').update(value).digest('hex') };
}

/** A directory, readable by the container's user, holding needles.json for `secrets` and the canary. */
export function writeNeedles(secrets: Record<string, string>): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'e2e-needles-'));
  chmodSync(dir, 0o755);
  const needles = [...Object.entries(secrets).map(([name, value]) => needle(name, value)), needle('canary', CANARY)];
  writeFileSync(join(dir, 'needles.json'), JSON.stringify(needles));
  chmodSync(join(dir, 'needles.json'), 0o644);
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
