// render(): `--userns=keep-id` for rootless podman, decided by the uid of the host process (injected
// here, so both cases run whoever runs the tests), never for root, docker or bwrap.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { contribute, type Contribution } from '../src/runner/contribute.ts';
import { render } from '../src/runner/render.ts';

// A contribution for a key that only needs to exist on paper: render() never touches the gateway.
function contribution(): Promise<Contribution> {
  return contribute(
    {
      mint: (request) => Promise.resolve({ id: 'k1', group: request.group, dir: '/state/keys/k1', socketPath: '/state/keys/k1/gateway.sock', createdAt: 0 }),
      revoke: () => Promise.resolve(true),
    },
    { group: 'g' },
  );
}

const spec = { image: 'localhost/agent', command: ['claude'], user: '1000:1000' };

describe('render: the user namespace for rootless podman', () => {
  test('not root: podman with --user gets --userns=keep-id, before the image', async () => {
    const argv = render('podman', await contribution(), spec, { uid: 1000 });
    const at = argv.indexOf('--userns=keep-id');
    assert.ok(at > 0, 'keep-id maps the container user to ours, who owns the key socket');
    assert.ok(at < argv.indexOf('--'), 'a flag, not part of the command');
    assert.equal(argv.filter((arg) => arg.startsWith('--userns')).length, 1);
    assert.deepEqual(argv.slice(argv.indexOf('--user'), argv.indexOf('--user') + 2), ['--user', '1000:1000']);
  });

  test('root: podman is rootful, no --userns=keep-id', async () => {
    const argv = render('podman', await contribution(), spec, { uid: 0 });
    assert.ok(!argv.some((arg) => arg.startsWith('--userns')));
    assert.ok(argv.includes('--user'));
  });

  test('no --user, docker and bwrap: never keep-id, whatever the uid', async () => {
    const c = await contribution();
    const { user: _user, ...noUser } = spec;
    assert.ok(!render('podman', c, noUser, { uid: 1000 }).some((arg) => arg.startsWith('--userns')));
    assert.ok(!render('docker', c, spec, { uid: 1000 }).some((arg) => arg.startsWith('--userns')));
    assert.ok(!render('bwrap', c, { command: ['claude'] }, { uid: 1000 }).some((arg) => arg.startsWith('--userns')));
  });

  test('by default the decision follows this process uid', async () => {
    const argv = render('podman', await contribution(), spec);
    assert.equal(argv.includes('--userns=keep-id'), process.getuid!() !== 0);
  });
});
