// The real clients (Claude Code, the openai SDK, @openai/agents, Codex CLI) in real `--network=none`
// podman containers, as uid 1000, through the shim and their key's socket to the stand-in provider,
// which answers only requests that carry the real key (so every success proves the gateway swapped
// the container's placeholder for it). Each client gets its own key, minted with contribute() as a
// host would. After each client, still inside its container, test/e2e/report.mjs reports the
// environment, a scan of the visible filesystem for the real keys, and a direct connection attempt.
//
// The clients come from the project's node_modules (devDependencies), mounted read-only at
// /opt/clients/node_modules; test/e2e/ holds the in-container scripts. See docs/clients.md.
// E2E_DUMP=DIR writes each run's report, calls, audit lines and upstream requests to DIR/<label>.json.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { CallRecord } from '../src/index.ts';
import { contribute } from '../src/runner/contribute.ts';
import type { RecordedRequest } from '../src/dev/standin.ts';
import { STANDIN_REPLY } from '../src/dev/standin.ts';
import { eventually, REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, startFixture, type Fixture } from './support/fixture.ts';
import { type ContainerReport, writeNeedles } from './support/needles.ts';
import { answerMessages, type Block, messagesText, toolResultText } from './support/scripted-model.ts';
import { skipUnless } from './support/requirements.ts';
import {
  buildTestImage,
  podmanAvailable,
  podmanRun,
  type Mount,
  CONTAINER_CLIENTS as CLIENTS,
  CONTAINER_HOME as HOME,
  clientMounts,
} from './support/podman.ts';

const CONTAINER_DIR = new URL('../container', import.meta.url).pathname;
const CONTAINER_TIMEOUT_MS = 100_000;
const TEST_TIMEOUT_MS = 120_000;

/** Marks Claude Code's tool-use prompt, so only that conversation gets the scripted answers. */
const TOOL_PROMPT = 'E2E-TOOL-TURN: run the shell command and report its output.';
const TOOL_COMMAND = 'echo tool-ran-$((6*7))';
const TOOL_OUTPUT = 'tool-ran-42';
const FINAL_PREFIX = 'E2E-FINAL the tool printed:';

interface ClientRun {
  report: ContainerReport;
  keyId: string;
  /** The gateway's onCall records for this run's key. */
  calls: CallRecord[];
  /** The same calls' lines in <stateDir>/audit.jsonl. */
  audit: Record<string, unknown>[];
  requests: RecordedRequest[];
  ms: number;
}

// ---- the stand-in's scripted answers for Claude Code's tool-use turn ----

/**
 * The first /v1/messages of the tool conversation gets a `tool_use` of Claude Code's Bash tool; the
 * next (carrying the tool_result) a text quoting what the tool printed. Like the stand-in itself,
 * it answers only requests carrying the real key (others fall through to its 401).
 */
function toolTurnOverride(request: RecordedRequest, res: ServerResponse): boolean {
  const path = request.url.split('?', 1)[0];
  if (request.method !== 'POST' || path !== '/v1/messages' || request.headers['x-api-key'] !== REAL_ANTHROPIC_KEY) return false;
  const body = JSON.parse(request.body.toString()) as Record<string, unknown>;
  if (!messagesText(body.messages).includes('E2E-TOOL-TURN')) return false;
  const result = toolResultText(body.messages);
  if (result === undefined) {
    const bash = ((body.tools as Block[] | undefined) ?? []).find((tool) => tool.name === 'Bash');
    if (!bash) return false; // no Bash tool offered: the default answer, and the test's assertions fail
    const toolUse = { type: 'tool_use', id: 'toolu_e2e_0001', name: 'Bash', input: { command: TOOL_COMMAND, description: 'Print a marker' } };
    answerMessages(res, body, [{ type: 'text', text: 'Running it.' }, toolUse], 'tool_use');
  } else {
    answerMessages(res, body, [{ type: 'text', text: `${FINAL_PREFIX} ${result.trim()}` }], 'end_turn');
  }
  return true;
}

// ---- the container side ----

/** The common checks every client run must pass, inside and outside its container. */
function assertNoLeak(run: ClientRun, standinPort: number): void {
  const { report } = run;
  const secrets = [REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY];
  assert.equal(report.uid, 1000);
  // The environment: the clients' env from contribute(), a placeholder, never a real key.
  assert.match(report.env, /^ANTHROPIC_BASE_URL=http:\/\/127\.0\.0\.1:9460$/m);
  assert.match(report.env, /^OPENAI_BASE_URL=http:\/\/127\.0\.0\.1:9460\/v1$/m);
  assert.match(report.env, /^OPENAI_API_KEY=gateway-placeholder-no-secret$/m);
  for (const secret of secrets) {
    assert.ok(!report.env.includes(secret), 'a real key is in the container environment');
    assert.ok(!report.stdout.includes(secret) && !report.stderr.includes(secret), 'a real key is in the client output');
  }
  // The filesystem scan found its canary (in $HOME and in run.sh), so it did read; no real key anywhere.
  const canaries = report.scan.hits.filter((h) => h.needle === 'canary').map((h) => h.file);
  assert.ok(canaries.includes(`${HOME}/canary.txt`), `scan did not see $HOME: ${JSON.stringify(report.scan)}`);
  assert.deepEqual(
    report.scan.hits.filter((h) => h.needle !== 'canary'),
    [],
    'a real key is in a file readable in the container',
  );
  assert.ok(report.scan.paths.includes('/run/gateway/shim.mjs'), 'scan did not see /run/gateway');
  assert.ok(report.scan.paths.includes('/tmp/e2e-out/stdout'), 'scan did not see /tmp');
  // A direct connection to the stand-in's host port fails: 127.0.0.1 inside is the container's own.
  assert.match(report.direct, /^(ECONNREFUSED|ENETUNREACH)$/, `direct connection to port ${standinPort}: ${report.direct}`);
  // The gateway side: every call of this run is attributed to its key and metered.
  assert.ok(run.calls.length > 0, 'no audit record for this key');
  for (const call of run.calls) {
    assert.equal(call.keyId, run.keyId);
    assert.equal(call.group, 'e2e');
    assert.ok(!JSON.stringify(call).includes(REAL_ANTHROPIC_KEY) && !JSON.stringify(call).includes(REAL_OPENAI_KEY));
  }
  // The audit trail has the same calls, attributed to the key, with tokens, and no credential.
  assert.equal(run.audit.length, run.calls.length, `audit lines for key ${run.keyId}: ${JSON.stringify(run.audit)}`);
  for (const line of run.audit) {
    assert.equal(line.keyId, run.keyId);
    const text = JSON.stringify(line);
    assert.ok(!text.includes(REAL_ANTHROPIC_KEY) && !text.includes(REAL_OPENAI_KEY), 'a real key is in the audit trail');
    if (line.endpoint !== 'models' && line.endpoint !== 'count_tokens' && line.status === 200) {
      assert.ok(Number(line.inputTokens) > 0 && Number(line.outputTokens) > 0 && Number(line.costUsd) > 0, `audit line without tokens: ${text}`);
    }
  }
  // Every upstream request carried the real key (the stand-in would have answered 401 otherwise).
  for (const request of run.requests) {
    const auth = request.headers['x-api-key'] ?? request.headers.authorization;
    assert.ok(auth === REAL_ANTHROPIC_KEY || auth === `Bearer ${REAL_OPENAI_KEY}`, `upstream request without the real key: ${request.url}`);
  }
}

function assertMetered(calls: CallRecord[]): void {
  for (const call of calls.filter((c) => c.endpoint !== 'models' && c.endpoint !== 'count_tokens')) {
    assert.equal(call.status, 200, JSON.stringify(call));
    assert.equal(call.outcome, 'complete', JSON.stringify(call));
    assert.ok((call.inputTokens ?? 0) > 0 && (call.outputTokens ?? 0) > 0, `call without tokens: ${JSON.stringify(call)}`);
    assert.equal(call.usageReported, true, JSON.stringify(call));
    assert.ok(call.costUsd > 0, JSON.stringify(call));
  }
}

function show(run: ClientRun): string {
  const { report } = run;
  return `rc=${report.rc} ${run.ms} ms\n--- stdout\n${report.stdout}\n--- stderr\n${report.stderr.slice(-4000)}\n--- calls\n${JSON.stringify(run.calls)}`;
}

test('real clients through the gateway in --network=none podman containers', { timeout: 15 * 60_000 }, async (t) => {
  const skip = skipUnless(podmanAvailable(), 'podman is not installed (CI installs it: .ci/run)');
  if (skip) {
    t.skip(skip);
    return;
  }
  const { image, mounts: libMounts } = buildTestImage();
  const fx: Fixture = await startFixture({ override: toolTurnOverride });
  const standinPort = Number(new URL(fx.standin.url).port);
  // The needles for the in-container scan: never the keys themselves.
  const needles = writeNeedles({ anthropic: REAL_ANTHROPIC_KEY, openai: REAL_OPENAI_KEY });
  t.after(async () => {
    await fx.close();
    needles.remove();
  });

  const mounts: Mount[] = [
    ...libMounts,
    ...clientMounts(),
    { source: CONTAINER_DIR, target: '/opt/clients/container', readOnly: true },
    { source: needles.dir, target: '/opt/clients/needles', readOnly: true },
    // Claude Code's Bash tool runs commands with bash or zsh only (busybox sh is refused: "No suitable
    // shell found"); the test image has none, so the host's bash is lent read-only, like the libraries.
    { source: realpathSync('/bin/bash'), target: '/usr/local/bin/bash', readOnly: true },
  ];

  /** One client command in a fresh container with a fresh key; returns the report and the key's calls. */
  async function runClient(label: string, command: string[], env: Record<string, string> = {}, budgetUsd = 2): Promise<ClientRun> {
    const c = await contribute(fx.gateway, { group: 'e2e', label, owner: { uid: 1000, gid: 1000 }, budgetUsd, ttlMs: 10 * 60_000 });
    const firstRequest = fx.standin.requests.length;
    const started = Date.now();
    try {
      const r = await podmanRun({
        image,
        mounts: [...mounts, ...c.mounts],
        env: {
          ...c.env,
          PATH: `/usr/local/bin:/bin:${CLIENTS}/.bin`,
          HOME,
          CODEX_HOME: `${HOME}/.codex`,
          TERM: 'dumb',
          E2E_DIRECT_PORT: String(standinPort),
          E2E_NEEDLES: '/opt/clients/needles/needles.json',
          ...env,
        },
        user: '1000:1000',
        network: c.network,
        args: c.wrap(['sh', '/opt/clients/e2e/run.sh', ...command]),
        timeoutMs: CONTAINER_TIMEOUT_MS,
      });
      const ms = Date.now() - started;
      assert.ok(!r.timedOut, `container timed out after ${ms} ms\n${r.stdout}\n${r.stderr}`);
      assert.equal(r.code, 0, `container failed: ${r.stdout}\n${r.stderr}`);
      const reportLine = r.stdout.trim().split('\n').pop()!;
      const report = JSON.parse(reportLine) as ContainerReport;
      // onCall fires after each call's last byte: the container's exit does not order it.
      const requests = fx.standin.requests.slice(firstRequest);
      await eventually(() => fx.calls.filter((call) => call.keyId === c.key.id).length >= requests.length, 5000).catch(() => {});
      const calls = fx.calls.filter((call) => call.keyId === c.key.id);
      // The audit file is written asynchronously (pino): wait for this key's lines.
      const auditLines = () =>
        readFileSync(join(fx.stateDir, 'audit.jsonl'), 'utf8')
          .split('\n')
          .filter((line) => line.includes(c.key.id))
          .map((line) => JSON.parse(line) as Record<string, unknown>);
      await eventually(() => existsSync(join(fx.stateDir, 'audit.jsonl')) && auditLines().length >= calls.length, 5000).catch(() => {});
      const audit = existsSync(join(fx.stateDir, 'audit.jsonl')) ? auditLines() : [];
      if (process.env.E2E_DUMP) {
        const dump = { report, calls, audit, requests: requests.map((q) => ({ ...q, body: q.body.toString() })) };
        writeFileSync(join(process.env.E2E_DUMP, `${label}.json`), JSON.stringify(dump, null, 1));
      }
      return { report, keyId: c.key.id, calls, audit, requests, ms };
    } finally {
      await c.close();
    }
  }

  const step = (name: string, fn: (t: TestContext) => Promise<void>) => t.test(name, { timeout: TEST_TIMEOUT_MS }, fn);

  await step('Claude Code: a streaming turn (claude -p)', async (t) => {
    const run = await runClient('claude-stream', ['claude', '-p', 'Say hello through the gateway.']);
    t.diagnostic(`claude -p: ${run.ms} ms in the container (client ${run.report.seconds} s), ${run.calls.length} call(s)`);
    assert.equal(run.report.rc, 0, show(run));
    assert.equal(run.report.stdout.trim(), STANDIN_REPLY, show(run));
    const messages = run.requests.filter((r) => r.url.startsWith('/v1/messages'));
    assert.ok(messages.length >= 1, show(run));
    for (const r of messages) {
      assert.equal(JSON.parse(r.body.toString()).stream, true, 'Claude Code streams');
      assert.equal(r.headers['x-api-key'], REAL_ANTHROPIC_KEY);
      assert.equal(r.headers.authorization, undefined);
    }
    const streamed = run.calls.filter((call) => call.endpoint === 'messages' && call.stream);
    assert.equal(streamed.length, messages.length, show(run));
    assert.ok(
      run.calls.every((call) => call.label === 'claude-stream' && call.dialect === 'anthropic'),
      show(run),
    );
    assert.ok(
      streamed.every((call) => call.sessionId),
      'x-claude-code-session-id reached the audit record',
    );
    assertMetered(run.calls);
    assertNoLeak(run, standinPort);
  });

  await step('Claude Code: a tool-use turn (Bash runs in the container, its output goes upstream)', async (t) => {
    const run = await runClient('claude-tool', ['claude', '-p', TOOL_PROMPT, '--allowedTools', 'Bash']);
    t.diagnostic(`claude -p tool turn: ${run.ms} ms, ${run.calls.length} call(s)`);
    assert.equal(run.report.rc, 0, show(run));
    const toolConversation = run.requests.filter((r) => r.url.startsWith('/v1/messages') && r.body.includes('E2E-TOOL-TURN'));
    assert.equal(toolConversation.length, 2, `expected the tool_use call and the tool_result call\n${show(run)}`);
    const first = JSON.parse(toolConversation[0]!.body.toString());
    const second = JSON.parse(toolConversation[1]!.body.toString());
    assert.equal(toolResultText(first.messages), undefined);
    // The tool really ran in the container: $((6*7)) was evaluated by its shell.
    assert.match(toolResultText(second.messages) ?? '', /tool-ran-42/, show(run));
    assert.ok(run.report.stdout.includes(`${FINAL_PREFIX} ${TOOL_OUTPUT}`), show(run));
    assert.ok(run.calls.filter((call) => call.endpoint === 'messages').length >= 2, show(run));
    // Its transcript (which holds the answers and the tool output) was among the files scanned.
    assert.ok(
      run.report.scan.paths.some((p) => p.startsWith(`${HOME}/.claude/projects/`)),
      run.report.scan.paths.join('\n'),
    );
    assertMetered(run.calls);
    assertNoLeak(run, standinPort);
  });

  await step('openai SDK: chat completions and responses, streaming and not', async (t) => {
    const run = await runClient('openai-sdk', ['node', '/opt/clients/e2e/openai-sdk.mjs']);
    t.diagnostic(`openai SDK: ${run.ms} ms, ${run.calls.length} call(s)`);
    assert.equal(run.report.rc, 0, show(run));
    const lines = run.report.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { call: string; text: string; chunks?: number; events?: string[] });
    assert.deepEqual(
      lines.map((l) => l.call),
      ['chat', 'chat-stream', 'responses', 'responses-stream'],
      show(run),
    );
    for (const line of lines) assert.equal(line.text, STANDIN_REPLY, `${line.call}: ${show(run)}`);
    assert.ok(lines[1]!.chunks! > 2, 'the chat stream came in chunks');
    assert.ok(lines[3]!.events!.includes('response.completed'));
    const seen = run.calls.map((call) => `${call.endpoint}:${call.stream}`);
    assert.deepEqual(seen, ['chat_completions:false', 'chat_completions:true', 'responses:false', 'responses:true'], show(run));
    assertMetered(run.calls);
    assertNoLeak(run, standinPort);
  });

  await step('@openai/agents: a simple Agent run, and a streamed one', async (t) => {
    const run = await runClient('openai-agents', ['node', '/opt/clients/e2e/agents.mjs']);
    t.diagnostic(`@openai/agents: ${run.ms} ms, ${run.calls.length} call(s)`);
    assert.equal(run.report.rc, 0, show(run));
    const lines = run.report.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { call: string; text: string });
    assert.deepEqual(
      lines.map((l) => l.call),
      ['agents-run', 'agents-run-stream'],
      show(run),
    );
    for (const line of lines) assert.equal(line.text, STANDIN_REPLY, show(run));
    assert.ok(run.calls.length >= 2 && run.calls.every((call) => call.endpoint === 'responses'), show(run));
    // Tracing is off: nothing but the model calls (the container could not reach api.openai.com anyway).
    assert.ok(
      run.requests.every((r) => r.url.startsWith('/v1/responses')),
      show(run),
    );
    assertMetered(run.calls);
    assertNoLeak(run, standinPort);
  });

  await step('Codex CLI: codex exec through the custom provider in container/codex-config.toml', async (t) => {
    const run = await runClient('codex', ['node', `${CLIENTS}/@openai/codex/bin/codex.js`, 'exec', '--skip-git-repo-check', 'Say hello through the gateway.'], {
      E2E_CODEX_CONFIG: '/opt/clients/container/codex-config.toml',
    });
    t.diagnostic(`codex exec: ${run.ms} ms, ${run.calls.length} call(s)`);
    assert.equal(run.report.rc, 0, show(run));
    assert.ok(run.report.stdout.includes(STANDIN_REPLY), show(run));
    const responses = run.requests.filter((r) => r.url === '/v1/responses');
    assert.ok(responses.length >= 1, show(run));
    for (const r of responses) {
      assert.equal(r.method, 'POST');
      assert.equal(JSON.parse(r.body.toString()).stream, true);
      assert.equal(r.headers.authorization, `Bearer ${REAL_OPENAI_KEY}`);
    }
    assert.ok(
      run.calls.every((call) => call.endpoint === 'responses' && call.stream && call.label === 'codex'),
      show(run),
    );
    assert.ok(
      run.report.scan.paths.some((p) => p.startsWith(`${HOME}/.codex/sessions/`)),
      run.report.scan.paths.join('\n'),
    );
    assertMetered(run.calls);
    assertNoLeak(run, standinPort);
  });

  await step('an exhausted budget stops each client after one refused call, with no retry loop', async (t) => {
    const codex = ['node', `${CLIENTS}/@openai/codex/bin/codex.js`, 'exec', '--skip-git-repo-check', 'Say hello.'];
    const cases: [string, string[], Record<string, string>, number, RegExp][] = [
      ['claude-broke', ['claude', '-p', 'Say hello.'], {}, 402, /budget exhausted for key/],
      ['openai-broke', ['node', '/opt/clients/e2e/openai-sdk.mjs'], {}, 429, /budget exhausted for key/],
      ['codex-broke', codex, { E2E_CODEX_CONFIG: '/opt/clients/container/codex-config.toml' }, 429, /[Qq]uota/],
    ];
    for (const [label, command, env, status, shown] of cases) {
      const run = await runClient(label, command, env, 0);
      t.diagnostic(`${label}: rc=${run.report.rc} after ${run.ms} ms, ${run.calls.length} call(s)`);
      assert.notEqual(run.report.rc, 0, show(run));
      assert.equal(run.requests.length, 0, 'nothing reached the upstream');
      assert.equal(run.calls.length, 1, `one attempt, no retries\n${show(run)}`);
      assert.equal(run.calls[0]!.status, status);
      assert.equal(run.calls[0]!.errorKind, 'budget_exhausted');
      assert.match(run.report.stdout + run.report.stderr, shown, show(run));
      assertNoLeak(run, standinPort);
    }
  });
});
