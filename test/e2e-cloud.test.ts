// The real Claude Code (2.1.332) in its Bedrock mode and its Vertex mode, in `--network=none` podman
// containers as uid 1000, through the shim and its key's socket to stand-ins for Amazon Bedrock and
// Vertex AI that check what the real services check: a SigV4 signature made with the known secret,
// or a bearer the Google token stand-in issued from a generated service account. The container gets
// only contribute({ claudeVia })'s env (auth switched off, placeholder region and project); the
// gateway signs on the host with its own region and project. After each run, still inside its
// container, test/e2e/report.mjs scans the environment and the visible files for the AWS and Google
// secrets (needles: a prefix, a length, a hash, never the secret itself). The last case crosses
// formats: Claude Code in Bedrock mode served by the Vertex stand-in, so the container's setting
// does not depend on where the host's Claude lives. See docs/bedrock-vertex.md.
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { pino } from 'pino';
import { type CallRecord, createGateway, type Gateway, type RouteConfig } from '../src/index.ts';
import { contribute } from '../src/runner/contribute.ts';
import { type BedrockScript, type BedrockStandin, startBedrockStandin } from './support/bedrock-standin.ts';
import { eventually } from './support/fixture.ts';
import { createServiceAccount, type GoogleTokenStandin, type ServiceAccount, serviceAccountKey, startGoogleTokenStandin } from './support/google-token.ts';
import { type ContainerReport, writeNeedles } from './support/needles.ts';
import {
  buildTestImage,
  type Mount,
  podmanAvailable,
  podmanRun,
  CONTAINER_CLIENTS as CLIENTS,
  CONTAINER_HOME as HOME,
  clientMounts,
} from './support/podman.ts';
import { skipUnless } from './support/requirements.ts';
import { type Block, messagesText, toolResultText } from './support/scripted-model.ts';
import { startVertexStandin, VERTEX_ANTHROPIC_VERSION, type VertexStandin } from './support/vertex-standin.ts';

const CONTAINER_TIMEOUT_MS = 100_000;
const TEST_TIMEOUT_MS = 120_000;

// The host's AWS identity: only the gateway (in this process) holds it.
const AWS_ACCESS_KEY_ID = 'AKIAE2ECLOUD7Q4M2XKD';
const AWS_SECRET_ACCESS_KEY = 'e2e/Cloud+Secret9f3b7d1c5a0e8f2b4d6a8c0e1f3b5d7';
const AWS_SESSION_TOKEN = 'IQoJb3JpZ2luX2VjE2eCloudSessionToken5c7e9a1b3d';
/** Unlike the container's placeholder (us-east-1): the stand-in accepts only signatures for this one. */
const AWS_REGION = 'us-west-2';
/** Unlike the container's placeholders (gateway-placeholder, us-east5): the stand-in serves only these. */
const VERTEX_PROJECT = 'e2e-host-project';
const VERTEX_REGION = 'europe-west1';

/** Claude Code's default model in both modes, as its ids spell it. */
const BEDROCK_MODEL = 'us.anthropic.claude-opus-5-5';
const VERTEX_MODEL = 'claude-opus-5-5';

const STREAM_PROMPT = 'E2E-CLOUD-STREAM: say hello through the gateway.';
const STREAM_REPLY = 'E2E-CLOUD-HELLO from the scripted model.';
const TOOL_PROMPT = 'E2E-CLOUD-TOOL: run the shell command and report its output.';
const TOOL_COMMAND = 'echo cloud-tool-ran-$((6*7))';
const TOOL_OUTPUT = 'cloud-tool-ran-42';
const TOOL_ID = 'toolu_cloud_e2e_0001';
const FINAL_PREFIX = 'E2E-CLOUD-FINAL the tool printed:';

/** Which scripted answer each model call got, in order. */
type Turn = 'stream' | 'tool_use' | 'final' | 'no-bash' | 'other';

/**
 * The model's side of both conversations, for either stand-in: the stream prompt gets a text; the
 * tool prompt first a `tool_use` of Claude Code's Bash tool, then (the request carrying its
 * tool_result) a text quoting what the tool printed. Anything else gets a text naming it.
 */
function scriptedModel(turns: Turn[]): BedrockScript {
  return (body) => {
    const say = (turn: Turn, text: string) => {
      turns.push(turn);
      return { content: [{ type: 'text', text }], stopReason: 'end_turn' };
    };
    const conversation = messagesText(body.messages);
    if (conversation.includes('E2E-CLOUD-STREAM')) return say('stream', STREAM_REPLY);
    if (!conversation.includes('E2E-CLOUD-TOOL')) return say('other', 'E2E-CLOUD-UNEXPECTED');
    const result = toolResultText(body.messages, TOOL_ID);
    if (result !== undefined) return say('final', `${FINAL_PREFIX} ${result.trim()}`);
    if (!((body.tools as Block[] | undefined) ?? []).some((tool) => tool.name === 'Bash')) return say('no-bash', 'E2E-CLOUD-NO-BASH-TOOL');
    turns.push('tool_use');
    const toolUse = { type: 'tool_use', id: TOOL_ID, name: 'Bash', input: { command: TOOL_COMMAND, description: 'Print a marker' } };
    return { content: [{ type: 'text', text: 'Running it.' }, toolUse], stopReason: 'tool_use' };
  };
}

interface CloudRun {
  report: ContainerReport;
  keyId: string;
  calls: CallRecord[];
  ms: number;
}

test('Claude Code in its Bedrock and Vertex modes, in --network=none podman containers, signed on the host', { timeout: 12 * 60_000 }, async (t) => {
  const skip = skipUnless(podmanAvailable(), 'podman is not installed (CI installs it: .ci/run)');
  if (skip) {
    t.skip(skip);
    return;
  }
  const { image, mounts: libMounts } = buildTestImage();
  const turns: Turn[] = [];
  const script = scriptedModel(turns);

  const bedrock: BedrockStandin = await startBedrockStandin({
    accessKeyId: AWS_ACCESS_KEY_ID,
    secretAccessKey: AWS_SECRET_ACCESS_KEY,
    region: AWS_REGION,
    script,
  });
  // The Google side: a generated service account whose token_uri is the token stand-in's.
  const accountKey = serviceAccountKey();
  const google: GoogleTokenStandin = await startGoogleTokenStandin({ publicKeyPem: accountKey.publicKeyPem, clientEmail: accountKey.clientEmail });
  const serviceAccount: ServiceAccount = createServiceAccount(google.url, accountKey);

  // The needles: the AWS secrets and the Google private key from the start; the access tokens are
  // minted on the host during a run (before the model's answer, hence before the scan), so the file
  // the container reads is rewritten each time the Vertex stand-in accepts one.
  const secrets = (): Record<string, string> => ({
    awsAccessKeyId: AWS_ACCESS_KEY_ID,
    awsSecretAccessKey: AWS_SECRET_ACCESS_KEY,
    awsSessionToken: AWS_SESSION_TOKEN,
    googlePrivateKey: serviceAccount.privateKeyPem,
    // A line of the key's base64 body: found in the PEM and in a JSON file holding it (`\n` escaped) alike.
    googlePrivateKeyLine: serviceAccount.privateKeyPem.split('\n')[2]!,
    ...Object.fromEntries(google.issued.map((token, i) => [`googleAccessToken${i}`, token])),
  });
  const needles = writeNeedles(secrets());
  const refreshNeedles = () => {
    const fresh = writeNeedles(secrets());
    copyFileSync(join(fresh.dir, 'needles.json'), join(needles.dir, 'needles.json'));
    fresh.remove();
  };
  const vertex: VertexStandin = await startVertexStandin({
    validToken: (token) => {
      const issued = google.issued.includes(token);
      if (issued) refreshNeedles();
      return issued;
    },
    project: VERTEX_PROJECT,
    region: VERTEX_REGION,
    script,
  });

  const stateDirs: string[] = [];
  const calls: CallRecord[] = [];
  async function gatewayWith(routes?: RouteConfig[]): Promise<Gateway> {
    // Short: socket paths are limited to 107 bytes.
    const stateDir = mkdtempSync(join(tmpdir(), 'gwc-'));
    stateDirs.push(stateDir);
    return createGateway({
      stateDir,
      logger: pino({ level: 'silent' }),
      providers: {
        bedrock: {
          kind: 'bedrock',
          baseUrl: bedrock.url,
          region: AWS_REGION,
          inferenceProfile: 'us',
          awsCredentials: async () => ({ accessKeyId: AWS_ACCESS_KEY_ID, secretAccessKey: AWS_SECRET_ACCESS_KEY, sessionToken: AWS_SESSION_TOKEN }),
        },
        vertex: { kind: 'vertex', baseUrl: vertex.url, region: VERTEX_REGION, projectId: VERTEX_PROJECT, googleCredentialsFile: serviceAccount.file },
      },
      ...(routes ? { routes } : {}),
      onCall: (record) => calls.push(record),
    });
  }
  const gateway = await gatewayWith();
  // The same two providers, with every model routed to Vertex whatever format its client speaks.
  const crossGateway = await gatewayWith([{ models: ['*'], provider: 'vertex' }]);

  t.after(async () => {
    await Promise.all([gateway.close({ drainMs: 1000 }), crossGateway.close({ drainMs: 1000 })]);
    await Promise.all([bedrock.close(), vertex.close(), google.close()]);
    serviceAccount.remove();
    needles.remove();
    for (const dir of stateDirs) rmSync(dir, { recursive: true, force: true });
  });

  const mounts: Mount[] = [
    ...libMounts,
    ...clientMounts(),
    { source: needles.dir, target: '/opt/clients/needles', readOnly: true },
    // Claude Code's Bash tool wants bash or zsh (busybox sh is refused): the host's bash, read-only.
    { source: realpathSync('/bin/bash'), target: '/usr/local/bin/bash', readOnly: true },
  ];

  /** `claude ARGS...` in a fresh container with a fresh key minted for `via`; its report and calls. */
  async function runClaude(on: Gateway, via: 'bedrock' | 'vertex', label: string, args: string[]): Promise<CloudRun> {
    const c = await contribute(on, { group: 'e2e-cloud', label, owner: { uid: 1000, gid: 1000 }, budgetUsd: 2, ttlMs: 10 * 60_000, claudeVia: via });
    const before = bedrock.seen.length + vertex.seen.length;
    const started = Date.now();
    try {
      const r = await podmanRun({
        image,
        mounts: [...mounts, ...c.mounts],
        env: {
          ...c.env,
          PATH: `/usr/local/bin:/bin:${CLIENTS}/.bin`,
          HOME,
          TERM: 'dumb',
          E2E_DIRECT_PORT: String(via === 'bedrock' ? bedrock.port : vertex.port),
          E2E_NEEDLES: '/opt/clients/needles/needles.json',
        },
        user: '1000:1000',
        network: c.network,
        args: c.wrap(['sh', '/opt/clients/e2e/run.sh', 'claude', ...args]),
        timeoutMs: CONTAINER_TIMEOUT_MS,
      });
      const ms = Date.now() - started;
      assert.ok(!r.timedOut, `container timed out after ${ms} ms\n${r.stdout}\n${r.stderr}`);
      assert.equal(r.code, 0, `container failed: ${r.stdout}\n${r.stderr}`);
      const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as ContainerReport;
      // onCall fires after each call's last byte: the container's exit does not order it. Each
      // request a stand-in received is one model call of this run.
      const mine = () => calls.filter((call) => call.keyId === c.key.id);
      const upstreamCalls = bedrock.seen.length + vertex.seen.length - before;
      await eventually(() => mine().filter((call) => call.upstream).length >= Math.max(1, upstreamCalls), 5000).catch(() => {});
      return { report, keyId: c.key.id, calls: mine(), ms };
    } finally {
      await c.close();
    }
  }

  const show = (run: CloudRun, extra = ''): string =>
    `rc=${run.report.rc} ${run.ms} ms\n--- stdout\n${run.report.stdout}\n--- stderr\n${run.report.stderr.slice(-4000)}\n--- calls\n${JSON.stringify(
      run.calls.map((c) => [c.method, c.path, c.status, c.upstream, c.model, c.errorKind]),
    )}\n--- turns ${turns.join(',')}\n${extra}`;

  /** The model calls were metered on the right upstream; nothing but them and the tolerated listing. */
  function assertMetered(run: CloudRun, upstream: 'bedrock' | 'vertex', modelCalls: number): void {
    const models = run.calls.filter((call) => call.upstream);
    assert.equal(models.length, modelCalls, show(run));
    for (const call of models) {
      assert.equal(call.upstream, upstream, JSON.stringify(call));
      assert.equal(call.status, 200, JSON.stringify(call));
      assert.equal(call.outcome, 'complete', JSON.stringify(call));
      assert.equal(call.stream, true, JSON.stringify(call));
      assert.ok((call.inputTokens ?? 0) > 0 && (call.outputTokens ?? 0) > 0, `call without tokens: ${JSON.stringify(call)}`);
      assert.ok(call.costUsd > 0, `call without a cost: ${JSON.stringify(call)}`);
      // Priced by its Anthropic name from the table, not at the price for unknown models; Bedrock's
      // geographic profile (`us.`) at its regional premium.
      assert.equal(call.priceSource, 'table', JSON.stringify(call));
      assert.equal(call.priceEntry, upstream === 'bedrock' ? 'claude-opus (regional)' : 'claude-opus', JSON.stringify(call));
      assert.equal(call.keyId, run.keyId);
    }
    // Besides the model calls, at most Bedrock mode's inference-profile listing, answered on the host.
    for (const call of run.calls.filter((c) => !c.upstream)) {
      assert.match(call.path ?? '', /^\/inference-profiles(\?|\/|$)/, JSON.stringify(call));
      assert.equal(call.status, 404, JSON.stringify(call));
    }
  }

  /** No AWS or Google secret in the container's env, files or output; the scan did read. */
  function assertNoLeak(run: CloudRun): void {
    const { report } = run;
    assert.equal(report.uid, 1000);
    const values = Object.values(secrets());
    // Once a call went to Vertex, the tokens the host was issued are among the needles.
    if (run.calls.some((call) => call.upstream === 'vertex')) {
      assert.ok(google.issued.length > 0 && values.includes(google.issued[0]!));
      const names = (JSON.parse(readFileSync(join(needles.dir, 'needles.json'), 'utf8')) as { name: string }[]).map((n) => n.name);
      assert.ok(names.includes('googleAccessToken0'), `the scan's needles: ${names.join(', ')}`);
    }
    for (const secret of values) {
      assert.ok(!report.env.includes(secret), 'a host secret is in the container environment');
      assert.ok(!report.stdout.includes(secret) && !report.stderr.includes(secret), 'a host secret is in the client output');
    }
    // No credential variable at all, whatever its value.
    assert.doesNotMatch(report.env, /^(AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID|SESSION_TOKEN|BEARER_TOKEN_BEDROCK|PROFILE)|GOOGLE_APPLICATION_CREDENTIALS)=/m);
    const canaries = report.scan.hits.filter((h) => h.needle === 'canary').map((h) => h.file);
    assert.ok(canaries.includes(`${HOME}/canary.txt`), `the scan did not see $HOME: ${JSON.stringify(report.scan.hits)}`);
    assert.deepEqual(
      report.scan.hits.filter((h) => h.needle !== 'canary'),
      [],
      'a host secret is in a file readable in the container',
    );
    assert.ok(report.scan.paths.includes('/run/gateway/shim.mjs'), 'the scan did not see /run/gateway');
    assert.ok(report.scan.paths.includes('/tmp/e2e-out/stdout'), 'the scan did not see /tmp');
    assert.match(report.direct, /^(ECONNREFUSED|ENETUNREACH)$/, `direct connection: ${report.direct}`);
    for (const call of run.calls) {
      const text = JSON.stringify(call);
      assert.ok(!values.some((secret) => text.includes(secret)), 'a host secret is in a call record');
    }
  }

  /** What the Bedrock stand-in received since `from`: every call signed by the host's key, in Bedrock's format. */
  function assertBedrockSaw(from: number, run: CloudRun, count: number): Record<string, unknown>[] {
    const seen = bedrock.seen.slice(from);
    const wire = seen.map((s) => `${s.method} ${s.path} ${s.auth}`).join('\n');
    assert.equal(seen.length, count, `${show(run)}\n--- Bedrock saw\n${wire}`);
    return seen.map((s) => {
      assert.equal(s.auth, 'sigv4', wire);
      assert.equal(s.accessKeyId, AWS_ACCESS_KEY_ID);
      assert.equal(s.headers['x-amz-security-token'], AWS_SESSION_TOKEN);
      assert.equal(s.method, 'POST');
      assert.equal(decodeURIComponent(s.path), `/model/${BEDROCK_MODEL}/invoke-with-response-stream`, wire);
      const body = JSON.parse(s.body.toString()) as Record<string, unknown>;
      assert.equal(body.anthropic_version, 'bedrock-2023-05-31');
      assert.ok(!('model' in body) && !('stream' in body), wire);
      return body;
    });
  }

  /** What the Vertex stand-in received since `from`: every call with a Google-issued bearer, to the host's project and region. */
  function assertVertexSaw(from: number, run: CloudRun, count: number): Record<string, unknown>[] {
    const seen = vertex.seen.slice(from);
    const wire = seen.map((s) => `${s.method} ${s.path} ${s.authOk}`).join('\n');
    assert.equal(seen.length, count, `${show(run)}\n--- Vertex saw\n${wire}`);
    return seen.map((s) => {
      assert.equal(s.authOk, true, wire);
      assert.ok(google.issued.includes(s.headers.authorization!.slice('Bearer '.length)));
      assert.equal(s.path, vertex.modelPath(VERTEX_MODEL, 'streamRawPredict'), wire);
      assert.ok(!s.path.includes('gateway-placeholder') && !s.path.includes('us-east5'), wire);
      const body = JSON.parse(s.body.toString()) as Record<string, unknown>;
      assert.equal(body.anthropic_version, VERTEX_ANTHROPIC_VERSION);
      assert.ok(!('model' in body), wire);
      return body;
    });
  }

  const step = (name: string, fn: (t: TestContext) => Promise<void>) => t.test(name, { timeout: TEST_TIMEOUT_MS }, fn);

  for (const via of ['bedrock', 'vertex'] as const) {
    const saw = via === 'bedrock' ? assertBedrockSaw : assertVertexSaw;
    const seenCount = () => (via === 'bedrock' ? bedrock.seen.length : vertex.seen.length);

    await step(`${via} mode: a streaming turn (claude -p) to the ${via} stand-in`, async (t) => {
      const from = seenCount();
      turns.length = 0;
      const run = await runClaude(gateway, via, `claude-${via}-stream`, ['-p', STREAM_PROMPT]);
      t.diagnostic(
        `${via} claude -p: ${run.ms} ms for the container (client ${run.report.seconds} s), ${run.calls.length} call(s): ${run.calls.map((c) => `${c.method} ${c.path} ${c.status}`).join(' | ')}`,
      );
      assert.equal(run.report.rc, 0, show(run));
      assert.equal(run.report.stdout.trim(), STREAM_REPLY, show(run));
      assert.deepEqual(turns, ['stream'], show(run));
      const [body] = saw(from, run, 1);
      const upstream = (via === 'bedrock' ? bedrock.seen : vertex.seen).at(-1)!;
      t.diagnostic(
        `${via} upstream request: headers ${Object.keys(upstream.headers).sort().join(',')}; anthropic-beta ${upstream.headers['anthropic-beta']}; body anthropic_beta ${JSON.stringify(body!.anthropic_beta)}`,
      );
      // The container's Claude Code asked in its own format, with its placeholders.
      const model = run.calls.find((call) => call.upstream)!;
      if (via === 'bedrock') assert.equal(decodeURIComponent(model.path ?? ''), `/model/${BEDROCK_MODEL}/invoke-with-response-stream`);
      else assert.equal(model.path, `/v1/projects/gateway-placeholder/locations/us-east5/publishers/anthropic/models/${VERTEX_MODEL}:streamRawPredict`);
      assertMetered(run, via, 1);
      assertNoLeak(run);
    });

    await step(`${via} mode: a tool-use turn (Bash runs in the container, its output goes to the ${via} stand-in)`, async (t) => {
      const from = seenCount();
      turns.length = 0;
      const run = await runClaude(gateway, via, `claude-${via}-tool`, ['-p', TOOL_PROMPT, '--allowedTools', 'Bash']);
      t.diagnostic(`${via} tool turn: ${run.ms} ms for the container (client ${run.report.seconds} s), ${run.calls.length} call(s)`);
      assert.equal(run.report.rc, 0, show(run));
      assert.deepEqual(turns, ['tool_use', 'final'], show(run));
      const [first, second] = saw(from, run, 2);
      assert.equal(toolResultText(first!.messages), undefined);
      // The tool really ran in the container: its shell evaluated $((6*7)).
      assert.match(toolResultText(second!.messages, TOOL_ID) ?? '', new RegExp(TOOL_OUTPUT), show(run));
      assert.ok(run.report.stdout.includes(`${FINAL_PREFIX} ${TOOL_OUTPUT}`), show(run));
      assertMetered(run, via, 2);
      assertNoLeak(run);
    });
  }

  await step('across formats: Claude Code in Bedrock mode, every model routed to the Vertex stand-in', async (t) => {
    const fromBedrock = bedrock.seen.length;
    const fromVertex = vertex.seen.length;
    turns.length = 0;
    const run = await runClaude(crossGateway, 'bedrock', 'claude-bedrock-to-vertex', ['-p', STREAM_PROMPT]);
    t.diagnostic(`Bedrock mode to Vertex: ${run.ms} ms for the container (client ${run.report.seconds} s), ${run.calls.length} call(s)`);
    assert.equal(run.report.rc, 0, show(run));
    assert.equal(run.report.stdout.trim(), STREAM_REPLY, show(run));
    assert.equal(bedrock.seen.length, fromBedrock, 'nothing went to Bedrock');
    // The event stream Claude Code reads was made on the host from Vertex's SSE.
    const [body] = assertVertexSaw(fromVertex, run, 1);
    // Bedrock's body field `anthropic_beta` is not Vertex's: its betas joined the header instead.
    assert.ok(!('anthropic_beta' in body!), 'anthropic_beta left the body');
    const betas = String(vertex.seen.at(-1)!.headers['anthropic-beta']).split(',');
    t.diagnostic(`Bedrock mode to Vertex: anthropic-beta header upstream ${betas.join(',')}`);
    assert.ok(betas.includes('claude-code-20250219') && betas.includes('interleaved-thinking-2025-05-14'), betas.join(','));
    const model = run.calls.find((call) => call.upstream)!;
    assert.equal(decodeURIComponent(model.path ?? ''), `/model/${BEDROCK_MODEL}/invoke-with-response-stream`);
    assertMetered(run, 'vertex', 1);
    assertNoLeak(run);
  });
});
