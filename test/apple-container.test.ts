// appleContainer(): the argv for Apple's `container run`, from a TCP-mode contribution. Socket-mode
// contributions are refused (a VM cannot mount the key's socket), and so is any value the CLI could
// read as something else. Nothing here runs `container` (macOS only): the argv is the contract.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { appleContainer, appleNetworkCreate } from '../src/runner/apple-container.ts';
import { type Contribution, contribute } from '../src/runner/contribute.ts';
import { render } from '../src/runner/render.ts';

const TOKEN = 'gwt_0123456789abcdef';

/** A TCP-mode contribution as contribute() plans it: a network, no mounts, no shim, the token as the API keys. */
function tcp(overrides: Partial<Contribution> = {}): Contribution {
  return {
    key: { id: 'k1', group: 'g', dir: '/unused', socketPath: '/unused/gateway.sock', createdAt: 0, tcp: { host: '192.168.70.1', port: 40123 } },
    close: async () => undefined,
    env: { ANTHROPIC_BASE_URL: 'http://192.168.70.1:40123', ANTHROPIC_API_KEY: TOKEN, OPENAI_API_KEY: TOKEN },
    mounts: [],
    labels: { 'llm-gateway.key': 'k1' },
    network: 'gw-k1',
    baseUrl: 'http://192.168.70.1:40123',
    wrap: (command) => command,
    ...overrides,
  };
}

const spec = { image: 'localhost/agent', command: ['claude', '-p', 'hi'], user: '1000:1000', workdir: '/Users/me/src/project', name: 'agent-k1' };

describe("appleContainer: Apple's container CLI in TCP mode", () => {
  test('argv: run --rm on the key network, no DNS, env, labels, workspace, user, then -- image command', () => {
    const argv = appleContainer(tcp(), spec);
    assert.deepEqual(render('container', tcp(), spec), argv, "render('container') is this renderer");
    assert.deepEqual(argv.slice(0, 6), ['container', 'run', '--rm', '--network', 'gw-k1', '--no-dns']);
    const pairs = (flag: string) => argv.flatMap((arg, i) => (arg === flag ? [argv[i + 1]] : []));
    assert.deepEqual(pairs('--env'), ['ANTHROPIC_BASE_URL=http://192.168.70.1:40123', `ANTHROPIC_API_KEY=${TOKEN}`, `OPENAI_API_KEY=${TOKEN}`]);
    assert.deepEqual(pairs('--label'), ['llm-gateway.key=k1']);
    assert.deepEqual(pairs('--volume'), ['/Users/me/src/project:/workspace']);
    assert.deepEqual(pairs('--workdir'), ['/workspace']);
    assert.deepEqual(pairs('--user'), ['1000:1000']);
    assert.deepEqual(pairs('--name'), ['agent-k1']);
    assert.deepEqual(argv.slice(argv.indexOf('--')), ['--', 'localhost/agent', 'claude', '-p', 'hi']);
  });

  test('the contribution env wins over the spec env, so a spec cannot replace the token', () => {
    const argv = appleContainer(tcp(), { ...spec, env: { ANTHROPIC_API_KEY: 'sk-ant-real', EDITOR: 'vi' } });
    assert.ok(argv.includes(`ANTHROPIC_API_KEY=${TOKEN}`));
    assert.ok(!argv.includes('ANTHROPIC_API_KEY=sk-ant-real'));
    assert.ok(argv.includes('EDITOR=vi'));
  });

  test('DNS stays when the gateway is a host name; read-only mounts, extra args before the image, the shim bypass', () => {
    const argv = appleContainer(tcp({ baseUrl: 'http://host.container.internal:40123', wrap: (command) => ['shim', ...command] }), {
      ...spec,
      mounts: [{ source: '/Users/me/tools', target: '/opt/tools', readOnly: true }],
      extraArgs: ['--cpus', '2'],
    });
    assert.ok(!argv.includes('--no-dns'));
    assert.ok(argv.includes('/Users/me/tools:/opt/tools:ro'));
    assert.deepEqual(argv.slice(argv.indexOf('--') - 2), ['--cpus', '2', '--', 'localhost/agent', 'shim', 'claude', '-p', 'hi']);
    assert.deepEqual(appleContainer(tcp(), { ...spec, shim: false }).slice(-3), ['claude', '-p', 'hi']);
    assert.ok(appleContainer(tcp({ baseUrl: 'http://[fd00::1]:40123' }), spec).includes('--no-dns'));
  });

  test("a socket-mode contribution is refused with a pointer to TCP mode: the real contribute()'s, and --network=none", async () => {
    const socketMode = await contribute(
      {
        mint: (request) => Promise.resolve({ id: 'k1', group: request.group, dir: '/state/keys/k1', socketPath: '/state/keys/k1/gateway.sock', createdAt: 0 }),
        revoke: () => Promise.resolve(true),
      },
      { group: 'g' },
    );
    assert.throws(() => appleContainer(socketMode, spec), { name: 'TypeError', message: /own VM.*TCP mode/ });
    assert.throws(() => appleContainer(tcp({ network: 'none' }), spec), /TCP mode/);
    assert.throws(() => appleContainer(tcp({ mounts: [{ source: '/state/keys/k1', target: '/run/gateway', readOnly: true }] }), spec), /TCP mode/);
  });

  test('values the CLI could misparse are refused', () => {
    const refused: [string, () => unknown, RegExp][] = [
      ['an image that is a flag', () => appleContainer(tcp(), { ...spec, image: '--virtualization' }), /image/],
      ['no image', () => appleContainer(tcp(), { command: ['sh'] }), /needs an image/],
      ['a mount spec with a colon', () => appleContainer(tcp(), { ...spec, mounts: [{ source: '/a:b', target: '/x', readOnly: false }] }), /mount source/],
      ['a workdir that is a flag', () => appleContainer(tcp(), { ...spec, workdir: '--ssh' }), /workdir/],
      ['a relative mount target', () => appleContainer(tcp(), { ...spec, mounts: [{ source: '/a', target: 'x', readOnly: false }] }), /absolute/],
      ['an env name with =', () => appleContainer(tcp(), { ...spec, env: { 'A=B': '1' } }), /env name/],
      ['a bad user', () => appleContainer(tcp(), { ...spec, user: '--privileged' }), /user/],
      ['a network with options', () => appleContainer(tcp({ network: 'default,mac=02:42:ac:11:00:02' }), spec), /network/],
      ['a network that is a flag', () => appleContainer(tcp({ network: '--ssh' }), spec), /network/],
    ];
    for (const [what, run, message] of refused) assert.throws(run, { name: 'TypeError', message }, what);
  });

  test('the network is created host-only (--internal), and its name is checked too', () => {
    assert.deepEqual(appleNetworkCreate('gw-k1'), ['container', 'network', 'create', '--internal', 'gw-k1']);
    assert.throws(() => appleNetworkCreate('-x'), TypeError);
  });
});
