// Kubernetes without a cluster: the Pods renderPod() and `gateway render k8s` emit, and every manifest
// under deploy/k8s/, checked against the Kubernetes OpenAPI schema (kubernetes-models), plus what the
// schema cannot say: the security fields, the key's hostPath, labels vs annotations, a NetworkPolicy
// that selects what the renderer labels, and a ConfigMap the gateway's own loader accepts.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { ConfigMap, Namespace, Pod, ServiceAccount } from 'kubernetes-models/v1';
import { pino } from 'pino';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../src/config/load.ts';
import { startControlServer } from '../src/control/socket.ts';
import { contribute, MOUNT_TARGET, type Contribution } from '../src/runner/contribute.ts';
import { AGENT_LABEL, type PodManifest, renderPod } from '../src/runner/kubernetes.ts';
import { gateway } from './support/cli.ts';
import { startFixture, type Fixture } from './support/fixture.ts';

const DEPLOY = new URL('../deploy/k8s/', import.meta.url).pathname;

interface Manifest {
  apiVersion?: string;
  kind?: string;
}

/** The kubernetes-models class for each kind deploy/k8s/ ships: an unknown kind is a failure, not a skip. */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Pod': Pod,
  'apps/v1/DaemonSet': DaemonSet,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
};

/** Throws unless `manifest` is valid for its kind's schema. */
function validate(manifest: Manifest): void {
  const Model = MODELS[`${manifest.apiVersion}/${manifest.kind}`];
  if (!Model) throw new Error(`no schema for ${manifest.apiVersion}/${manifest.kind}`);
  new Model(manifest as never).validate();
}

/** Every document of a deploy/k8s/ file; YAML errors fail here. */
function documents(file: string): Manifest[] {
  return parseAllDocuments(readFileSync(path.join(DEPLOY, file), 'utf8')).map((doc) => {
    assert.deepEqual(doc.errors, [], `${file}: YAML errors`);
    return doc.toJS() as Manifest;
  });
}

const yamlFiles = readdirSync(DEPLOY).filter((file) => /\.ya?ml$/.test(file));
const all = yamlFiles.flatMap((file) => documents(file).map((manifest) => ({ file, manifest })));
const find = (kind: string, file?: string) => all.filter((m) => m.manifest.kind === kind && (!file || m.file === file)).map((m) => m.manifest);

describe('renderPod', () => {
  let fx: Fixture;
  let socket: Contribution;
  before(async () => {
    fx = await startFixture();
    socket = await contribute(fx.gateway, { group: 'family', label: 'chat-7', budgetUsd: 1 });
  });
  after(() => fx.close());

  const spec = { image: 'registry.example/agent:1', command: ['claude', '-p', 'hi'], user: '1000:2000', env: { EXTRA: 'x' } };

  test('socket mode: a schema-valid Pod, hardened, the key directory from the node read-only, on the given node', () => {
    const pod = renderPod(socket, { ...spec, workdir: '/home/me/project' }, { namespace: 'agents', nodeName: 'node-1.example' });
    validate(pod);
    assert.equal(pod.metadata.name, `llm-agent-${socket.key.id}`);
    assert.equal(pod.metadata.namespace, 'agents');
    assert.equal(pod.spec.nodeName, 'node-1.example');
    assert.equal(pod.spec.restartPolicy, 'Never');
    assert.equal(pod.spec.automountServiceAccountToken, false);
    assert.equal(pod.spec.enableServiceLinks, false);
    assert.deepEqual(pod.spec.securityContext, { seccompProfile: { type: 'RuntimeDefault' }, runAsUser: 1000, runAsGroup: 2000, runAsNonRoot: true });
    const [container] = pod.spec.containers;
    assert.deepEqual(container.securityContext, { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });

    // The key's directory: a node path, which must exist (the key was minted there), read-only.
    assert.deepEqual(pod.spec.volumes?.[0], { name: 'gateway-key-0', hostPath: { path: socket.key.dir, type: 'Directory' } });
    assert.deepEqual(container.volumeMounts?.[0], { name: 'gateway-key-0', mountPath: MOUNT_TARGET, readOnly: true });
    // The host workdir means nothing on a node: an empty /workspace instead, nowhere the host path.
    assert.ok(pod.spec.volumes?.some((v) => v.name === 'workspace' && 'emptyDir' in v));
    assert.equal(container.workingDir, '/workspace');
    assert.ok(!JSON.stringify(pod).includes('/home/me/project'));

    // The command runs under the shim, as args: the image's entrypoint stays.
    assert.deepEqual(container.args, socket.wrap(spec.command));
    assert.equal(container.args?.[0], 'node');
    const env = Object.fromEntries(container.env.map(({ name, value }) => [name, value]));
    assert.deepEqual(env, { EXTRA: 'x', ...socket.env });
  });

  test('labels: valid values as labels, every value exactly as an annotation; the agent label always', async () => {
    const odd = await contribute(fx.gateway, { group: 'Team Blue/ops', label: 'x'.repeat(64) });
    const pod = renderPod(odd, spec);
    validate(pod);
    assert.equal(pod.metadata.labels[AGENT_LABEL], odd.key.id);
    assert.equal(pod.metadata.labels['llm-gateway.group'], undefined, 'a space and a slash are no label value');
    assert.equal(pod.metadata.labels['llm-gateway.label'], undefined, '64 characters are one too many');
    assert.equal(pod.metadata.annotations['llm-gateway.group'], 'Team Blue/ops');
    assert.equal(pod.metadata.annotations['llm-gateway.label'], 'x'.repeat(64));

    const plain = renderPod(socket, spec);
    assert.equal(plain.metadata.labels['llm-gateway.group'], 'family');
    assert.equal(plain.metadata.labels['llm-gateway.label'], 'chat-7');
  });

  test('TCP mode (no mounts): no hostPath and no shim; --no-shim keeps the command as given', () => {
    const tcp = { ...socket, mounts: [], network: 'gwnet', wrap: (command: string[]) => command } as unknown as Contribution;
    const pod = renderPod(tcp, { image: 'agent', command: ['claude'] });
    validate(pod);
    assert.equal(pod.spec.volumes, undefined);
    assert.equal(pod.spec.containers[0].volumeMounts, undefined);
    assert.deepEqual(pod.spec.containers[0].args, ['claude']);

    const noShim = renderPod(socket, { image: 'agent', command: [], shim: false });
    assert.equal(noShim.spec.containers[0].args, undefined, "the image's entrypoint and CMD run as they are");
  });

  test('refused: no image, a user name, a name Kubernetes rejects, a runtime flag', () => {
    assert.throws(() => renderPod(socket, { command: ['x'] }), /needs an image/);
    assert.throws(() => renderPod(socket, { ...spec, user: 'agent' }), /numeric uid/);
    assert.throws(() => renderPod(socket, spec, { name: 'Agent_1' }), /DNS subdomain/);
    assert.throws(() => renderPod(socket, spec, { namespace: 'a.b' }), /DNS label/);
    assert.throws(() => renderPod(socket, { ...spec, extraArgs: ['--privileged'] }), /extraArgs/);
    assert.throws(() => renderPod(socket, { ...spec, image: '--privileged' }), /image/);
  });
});

describe('gateway render k8s', () => {
  let dir: string;
  let fx: Fixture;
  let server: Server;
  before(async () => {
    fx = await startFixture();
    dir = fx.stateDir;
    server = await startControlServer(fx.gateway, { info: () => ({}), logger: pino({ level: 'silent' }) });
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    await fx.close();
  });

  test('mints on the daemon and prints a valid Pod for its node; the key lives on after the command', async () => {
    const out = await gateway(['render', 'k8s', '--state-dir', dir, '--group', 'ci', '--ttl', '1h', '--node', 'n1', '-n', 'agents', 'agent', 'claude']);
    assert.equal(out.code, 0, out.stderr);
    const pod = JSON.parse(out.stdout) as PodManifest;
    validate(pod);
    assert.equal(pod.spec.nodeName, 'n1');
    assert.equal(pod.metadata.namespace, 'agents');
    const id = pod.metadata.labels[AGENT_LABEL]!;
    const key = fx.gateway.inspect().keys.find((k) => k.id === id);
    assert.ok(key, 'the key is live on the daemon');
    assert.deepEqual(pod.spec.volumes?.[0], { name: 'gateway-key-0', hostPath: { path: path.join(dir, 'keys', id), type: 'Directory' } });
  });

  test('a bad value is a usage error and leaves no key behind', async () => {
    const before = fx.gateway.inspect().keys.length;
    const out = await gateway(['render', 'k8s', '--state-dir', dir, '--name', 'Bad_Name', 'agent', 'claude']);
    assert.equal(out.code, 2);
    assert.match(out.stderr, /DNS subdomain/);
    assert.equal(fx.gateway.inspect().keys.length, before);
  });

  test('without a daemon it refuses: an embedded gateway would take the key with it', async () => {
    const empty = await mkdtemp(path.join(tmpdir(), 'gw-k8s-'));
    try {
      const out = await gateway(['render', 'k8s', '--state-dir', empty, 'agent', 'claude']);
      assert.equal(out.code, 2);
      assert.match(out.stderr, /no gateway daemon/);
      assert.equal(out.stdout, '');
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});

describe('deploy/k8s manifests', () => {
  test('every document of every file is valid for its kind', () => {
    assert.deepEqual(yamlFiles.sort(), ['agent-networkpolicy-tcp.yaml', 'agent-networkpolicy.yaml', 'gateway-daemonset.yaml']);
    assert.deepEqual(all.map((m) => m.manifest.kind).sort(), ['ConfigMap', 'DaemonSet', 'Namespace', 'NetworkPolicy', 'NetworkPolicy', 'ServiceAccount']);
    for (const { file, manifest } of all) assert.doesNotThrow(() => validate(manifest), `${file}: ${manifest.kind}`);
    for (const file of yamlFiles) assert.match(readFileSync(path.join(DEPLOY, file), 'utf8'), /^# /, `${file} opens with a comment`);
  });

  test('the checker refuses a broken manifest', () => {
    // Copies of the shipped manifests, each broken in one place.
    const copy = (kind: string) => JSON.parse(JSON.stringify(find(kind)[0]));
    const broken = copy('DaemonSet');
    broken.spec.template.spec.containers = { name: 'gateway' };
    assert.throws(() => validate(broken), /containers must be array/);
    const noSelector = copy('DaemonSet');
    delete noSelector.spec.selector;
    assert.throws(() => validate(noSelector), /selector/);
    const policy = copy('NetworkPolicy');
    policy.spec.policyTypes = 'Egress';
    assert.throws(() => validate(policy), /policyTypes/);
    assert.throws(() => validate({ apiVersion: 'v1', kind: 'Secret' }), /no schema/);
  });

  test('the DaemonSet: the state dir at the same path on node and pod, credentials as files, hardened', async () => {
    const pod = new DaemonSet(find('DaemonSet')[0] as never).spec!.template.spec!;
    const container = pod.containers[0]!;
    const envVars = container.env ?? [];
    const env = Object.fromEntries(envVars.map((e) => [e.name, e.value]));
    const mountPath = (name: string) => container.volumeMounts!.find((m) => m.name === name)!.mountPath;
    const state = pod.volumes!.find((v) => v.name === 'state')!.hostPath!;
    assert.deepEqual(state, { path: '/var/lib/llm-gateway', type: 'DirectoryOrCreate' });
    assert.equal(mountPath('state'), state.path);
    assert.equal(env.GATEWAY_STATE_DIR, state.path);
    const nodeName = envVars.find((e) => e.name === 'GATEWAY_NODE_NAME')?.valueFrom?.fieldRef?.fieldPath;
    assert.equal(nodeName, 'spec.nodeName', '`render k8s` pins pods to this node');
    assert.equal(pod.automountServiceAccountToken, false);
    assert.equal(new ServiceAccount(find('ServiceAccount')[0] as never).automountServiceAccountToken, false);
    assert.deepEqual(container.securityContext?.capabilities, { drop: ['ALL'], add: ['CHOWN', 'DAC_OVERRIDE', 'FOWNER'] });
    assert.equal(container.securityContext?.allowPrivilegeEscalation, false);
    assert.equal(container.securityContext?.readOnlyRootFilesystem, true);
    assert.ok(!envVars.some((e) => e.valueFrom?.secretKeyRef), 'no credential in the environment');

    // The ConfigMap's gateway.toml loads with the gateway's own loader, at the path the env names,
    // and its credential files are in the Secret's mount.
    const configMap = new ConfigMap(find('ConfigMap')[0] as never);
    assert.equal(env.GATEWAY_CONFIG, path.join(mountPath('config'), 'gateway.toml'));
    const credentials = mountPath('credentials');
    const dir = await mkdtemp(path.join(tmpdir(), 'gw-k8s-'));
    try {
      const file = path.join(dir, 'gateway.toml');
      await writeFile(file, configMap.data!['gateway.toml']!);
      const config = await loadConfig(file);
      assert.equal(config.stateDir, state.path);
      for (const name of ['anthropic', 'openai']) {
        const sources = config.providers[name]!.apiKey;
        assert.equal(sources.length, 1);
        assert.ok('file' in sources[0]! && path.dirname(sources[0].file) === credentials, `${name}: a file from the Secret`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('the NetworkPolicies select what renderPod labels: socket mode denies everything, TCP mode allows the gateway only', () => {
    const policy = (file: string) => new NetworkPolicy(find('NetworkPolicy', file)[0] as never).spec!;
    const deny = policy('agent-networkpolicy.yaml');
    const tcp = policy('agent-networkpolicy-tcp.yaml');
    for (const spec of [deny, tcp]) {
      assert.deepEqual(spec.podSelector, { matchExpressions: [{ key: AGENT_LABEL, operator: 'Exists' }] });
      assert.deepEqual(spec.policyTypes, ['Ingress', 'Egress']);
      assert.equal(spec.ingress, undefined, 'no ingress rule: nothing comes in');
    }
    assert.equal(deny.egress, undefined, 'no egress rule: nothing goes out');
    assert.equal(tcp.egress?.length, 1);
    assert.deepEqual(Object.keys(tcp.egress![0]!.to![0]!), ['ipBlock']);
    assert.deepEqual(tcp.egress![0]!.ports, [{ protocol: 'TCP', port: 9500, endPort: 9599 }]);
  });
});
