// CI must not pass by skipping: under GATEWAY_REQUIRE_ALL_TESTS=1 a missing requirement fails.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';

const probe = `import { skipUnless } from ${JSON.stringify(new URL('./support/requirements.ts', import.meta.url).href)};
console.log(JSON.stringify([skipUnless(true, 'present'), skipUnless(false, 'podman is missing')]));`;

function runProbe(env: Record<string, string>) {
  return spawnSync(process.execPath, ['--input-type=module', '-e', probe], { encoding: 'utf8', env: { ...process.env, ...env } });
}

test('a missing requirement skips on a developer machine and fails under GATEWAY_REQUIRE_ALL_TESTS=1', () => {
  const relaxed = runProbe({ GATEWAY_REQUIRE_ALL_TESTS: '' });
  assert.equal(relaxed.status, 0, relaxed.stderr);
  assert.deepEqual(JSON.parse(relaxed.stdout), [false, 'podman is missing']);
  const strict = runProbe({ GATEWAY_REQUIRE_ALL_TESTS: '1' });
  assert.notEqual(strict.status, 0);
  assert.match(strict.stderr, /a required test cannot run: podman is missing/);
});

test('CI runs the suite with every requirement enforced', async () => {
  const { readFile } = await import('node:fs/promises');
  const ci = await readFile(new URL('../.ci/run', import.meta.url), 'utf8');
  assert.match(ci, /^export GATEWAY_REQUIRE_ALL_TESTS=1$/m);
});
