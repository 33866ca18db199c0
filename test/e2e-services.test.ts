// Services (issue 15) with the real clients, as an operator runs them: a `gateway serve` daemon whose
// config names an MCP server and a REST API with their tokens, and `gateway run --runtime podman
// --service NAME` starting a `--network=none` container as uid 1000. Claude Code reads the key's
// mcp.json, speaks streamable HTTP to the MCP server (the official SDK's, which wants a bearer) and
// calls its tool in a turn scripted by the stand-in model; curl calls the REST stand-in and meets
// each refusal (no grant, a method, a path). Every run ends with test/e2e/report.mjs scanning the
// container's environment and files for the tokens, which never leave the host.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { startStandin, type RecordedRequest } from '../src/dev/standin.ts';
import { eventually, REAL_ANTHROPIC_KEY } from './support/fixture.ts';
import { MCP_TICKET_MARKER, startMcpServer } from './support/mcp-server.ts';
import { type ContainerReport, writeNeedles } from './support/needles.ts';
import { buildTestImage, podmanAvailable, CONTAINER_CLIENTS as CLIENTS, CONTAINER_HOME as HOME, clientMounts } from './support/podman.ts';
import { skipUnless } from './support/requirements.ts';
import { startRestService } from './support/rest-service.ts';
import { answerMessages, type Block, toolResultText } from './support/scripted-model.ts';

const CLI = new URL('../src/cli/main.ts', import.meta.url).pathname;
const CONTAINER_TIMEOUT_MS = 100_000;

const MCP_TOKEN = 'mcp-host-token-5c1e9a7b3d';
const REST_TOKEN = 'rest-host-token-8b2f6d0e4a';
/** Marks Claude Code's conversation, so only it gets the scripted answers. */
const MCP_PROMPT = 'E2E-MCP-TURN: look up ticket 7 with the tickets tool and report what it says.';
/** Claude Code names an MCP tool mcp__<server>__<tool>; the server is the key of mcp.json's mcpServers. */
const MCP_TOOL = 'mcp__tickets__lookup_ticket';
const FINAL_PREFIX = 'E2E-MCP-FINAL the tool said:';

// ---- the stand-in model's scripted answers ----

/** What the scripted conversation saw: the tools offered on each turn, and what was answered. */
interface Script {
  offered: string[][];
  /** `search` (ToolSearch loaded the deferred MCP tool), `call` (tool_use of it), `final`, `missing` (never offered). */
  turns: string[];
}

const SEARCH_ID = 'toolu_svc_search';
const CALL_ID = 'toolu_svc_call';

/**
 * Claude Code's MCP conversation, scripted. By default it defers MCP tools: the first request lists
 * them by name only and offers ToolSearch, so the model first asks for `select:<tool>`; once the tool
 * is loaded (or at once, when it was offered outright) it gets a `tool_use` of it; the request
 * carrying that tool_result gets a text quoting it. Where the tool is nowhere to be found, a text
 * listing the tools offered (which the test shows). Only requests with the real key are answered.
 */
function mcpTurn(script: Script) {
  return (request: RecordedRequest, res: ServerResponse): boolean => {
    if (request.method !== 'POST' || request.url.split('?', 1)[0] !== '/v1/messages' || request.headers['x-api-key'] !== REAL_ANTHROPIC_KEY) return false;
    const body = JSON.parse(request.body.toString()) as { model?: unknown; messages?: unknown; tools?: Block[]; stream?: boolean };
    const conversation = JSON.stringify(body.messages ?? []);
    if (!conversation.includes('E2E-MCP-TURN') || body.stream !== true) return false;
    const answer = (turn: string, content: Block[], stop: string): true => {
      script.turns.push(turn);
      answerMessages(res, { ...body, stream: true }, content, stop);
      return true;
    };
    const result = toolResultText(body.messages, CALL_ID);
    if (result !== undefined) return answer('final', [{ type: 'text', text: `${FINAL_PREFIX} ${result.trim()}` }], 'end_turn');
    const names = (body.tools ?? []).map((tool) => String(tool.name));
    script.offered.push(names);
    const searched = toolResultText(body.messages, SEARCH_ID) !== undefined;
    // Loaded by ToolSearch, the tool is in the tools array or described in its result: either way callable now.
    if (names.includes(MCP_TOOL) || searched) {
      return answer(
        'call',
        [
          { type: 'text', text: 'Looking it up.' },
          { type: 'tool_use', id: CALL_ID, name: MCP_TOOL, input: { id: '7' } },
        ],
        'tool_use',
      );
    }
    if (names.includes('ToolSearch') && conversation.includes(MCP_TOOL)) {
      const search = { type: 'tool_use', id: SEARCH_ID, name: 'ToolSearch', input: { query: `select:${MCP_TOOL}`, max_results: 1 } };
      return answer('search', [search], 'tool_use');
    }
    return answer('missing', [{ type: 'text', text: `E2E-NO-MCP-TOOL offered: ${names.join(', ')}` }], 'end_turn');
  };
}

// ---- curl's answers ----

/** Each `curl -w '\nstatus=%{http_code}\n'` answer in order: its body and status. */
function curlAnswers(stdout: string): { body: string; status: number }[] {
  return [...stdout.matchAll(/([\s\S]*?)\nstatus=(\d{3})\n/g)].map((m) => ({ body: m[1]!.trim(), status: Number(m[2]) }));
}

/** The message of the gateway's (OpenAI-shaped) error body. */
function errorMessage(body: string): string {
  return (JSON.parse(body) as { error: { message: string } }).error.message;
}

test('services through `gateway run --service`: Claude Code with an MCP server, curl with a REST API', { timeout: 5 * 60_000 }, async (t) => {
  const skip = skipUnless(podmanAvailable(), 'podman is not installed (CI installs it: .ci/run)');
  if (skip) {
    t.skip(skip);
    return;
  }
  const { image, mounts: libMounts } = buildTestImage();
  const dir = mkdtempSync(join(tmpdir(), 'gw-svc-e2e-'));
  const stateDir = join(dir, 's');
  const script: Script = { offered: [], turns: [] };
  const mcp = await startMcpServer({ token: MCP_TOKEN });
  const rest = await startRestService({ credential: { kind: 'bearer', token: REST_TOKEN } });
  const standin = await startStandin({ anthropicApiKey: REAL_ANTHROPIC_KEY, override: mcpTurn(script) });
  const needles = writeNeedles({ anthropic: REAL_ANTHROPIC_KEY, mcp: MCP_TOKEN, rest: REST_TOKEN });

  // This host's podman needs runc and explicit ulimits (shared notes): a containers.conf of our own.
  const containersConf = join(dir, 'containers.conf');
  writeFileSync(containersConf, '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\nruntime = "runc"\n');
  const configFile = join(dir, 'gateway.toml');
  writeFileSync(
    configFile,
    [
      `state_dir = "${stateDir}"`,
      '[providers.anthropic]',
      `base_url = "${standin.url}"`,
      'api_key_env = "TEST_REAL_KEY"',
      '[services.tickets]',
      `base_url = "${mcp.url}"`,
      'kind = "mcp"',
      'token_env = "MCP_TOKEN"',
      '[services.rest]',
      `base_url = "${rest.url}"`,
      'token_env = "REST_TOKEN"',
      'methods = ["GET"]',
      'paths = ["/api/tickets/**"]',
      '',
    ].join('\n'),
  );
  // Only the daemon holds the secrets; `gateway run` is given none of them.
  const cliEnv: NodeJS.ProcessEnv = { ...process.env, CONTAINERS_CONF: containersConf, GATEWAY_CONFIG: configFile };
  for (const name of ['TEST_REAL_KEY', 'MCP_TOKEN', 'REST_TOKEN']) delete cliEnv[name];
  const daemon: ChildProcess = spawn(process.execPath, [CLI, 'serve'], {
    env: { ...cliEnv, TEST_REAL_KEY: REAL_ANTHROPIC_KEY, MCP_TOKEN, REST_TOKEN },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let daemonLog = '';
  daemon.stderr!.on('data', (chunk) => (daemonLog += chunk));
  t.after(async () => {
    if (daemon.exitCode === null) {
      daemon.kill('SIGTERM');
      await new Promise((resolve) => daemon.once('exit', resolve));
    }
    await Promise.all([mcp.close(), rest.close(), standin.close()]);
    needles.remove();
    rmSync(dir, { recursive: true, force: true });
  });
  await eventually(() => daemonLog.includes('gateway serving'), 10_000).catch(() => assert.fail(`the daemon did not start:\n${daemonLog}`));

  const mountArgs = [
    ...libMounts,
    ...clientMounts(),
    { source: needles.dir, target: '/opt/clients/needles', readOnly: true },
    { source: realpathSync('/usr/bin/curl'), target: '/usr/local/bin/curl', readOnly: true },
  ].flatMap((m) => ['--mount', `${m.source}:${m.target}${m.readOnly ? ':ro' : ''}`]);

  const auditLines = (keyId: string): Record<string, unknown>[] =>
    existsSync(join(stateDir, 'audit.jsonl'))
      ? readFileSync(join(stateDir, 'audit.jsonl'), 'utf8')
          .split('\n')
          .filter((line) => line.includes(keyId))
          .map((line) => JSON.parse(line) as Record<string, unknown>)
      : [];

  /**
   * `gateway run --runtime podman [flags] -- IMAGE env ... sh run.sh COMMAND...` as an operator types
   * it; the container's report and its key's audit lines once `settled` holds for them.
   */
  async function gatewayRun(
    flags: string[],
    command: string[],
    settled: (lines: Record<string, unknown>[]) => boolean,
  ): Promise<{ report: ContainerReport; audit: Record<string, unknown>[]; ms: number }> {
    const env = [
      `HOME=${HOME}`,
      `PATH=/usr/local/bin:/bin:${CLIENTS}/.bin`,
      'TERM=dumb',
      `E2E_DIRECT_PORT=${mcp.port}`,
      'E2E_NEEDLES=/opt/clients/needles/needles.json',
    ];
    const args = ['run', '--runtime', 'podman', '--group', 'e2e-services', '--user', '1000:1000', ...flags, ...mountArgs, '--', image, 'env', ...env];
    args.push('sh', '/opt/clients/e2e/run.sh', ...command);
    const started = Date.now();
    const child = spawn(process.execPath, [CLI, ...args], { env: cliEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk) => (stdout += chunk));
    child.stderr!.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGINT'), CONTAINER_TIMEOUT_MS);
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    clearTimeout(timer);
    const ms = Date.now() - started;
    assert.equal(code, 0, `gateway run exited ${code} after ${ms} ms\n${stdout}\n${stderr}\n--- daemon\n${daemonLog.slice(-3000)}`);
    const keyId = /gateway: key ([0-9a-z]{16}) \(daemon\), podman starting/.exec(stderr)?.[1];
    assert.ok(keyId, stderr);
    const report = JSON.parse(stdout.trim().split('\n').pop()!) as ContainerReport;
    // The audit file is written asynchronously (pino), and a stream's line only once it closed.
    await eventually(() => settled(auditLines(keyId)), 5000).catch(() => {});
    return { report, audit: auditLines(keyId), ms };
  }

  /** No token in the container's env, files or output; the scan did read $HOME and the key's directory. */
  function assertNoLeak(report: ContainerReport): void {
    assert.equal(report.uid, 1000);
    for (const secret of [MCP_TOKEN, REST_TOKEN, REAL_ANTHROPIC_KEY]) {
      assert.ok(!report.env.includes(secret), 'a token is in the container environment');
      assert.ok(!report.stdout.includes(secret) && !report.stderr.includes(secret), 'a token is in the client output');
    }
    assert.ok(
      report.scan.hits.some((h) => h.needle === 'canary' && h.file === `${HOME}/canary.txt`),
      `the scan did not see $HOME: ${JSON.stringify(report.scan.hits)}`,
    );
    assert.ok(report.scan.paths.includes('/run/gateway/shim.mjs'), 'the scan did not see /run/gateway');
    assert.deepEqual(
      report.scan.hits.filter((h) => h.needle !== 'canary'),
      [],
      'a token is in a file readable in the container',
    );
    // 127.0.0.1 inside is the container's own: the MCP server's host port is not reachable directly.
    assert.match(report.direct, /^(ECONNREFUSED|ENETUNREACH)$/);
  }

  const step = (name: string, fn: (t: TestContext) => Promise<void>) => t.test(name, { timeout: 2 * CONTAINER_TIMEOUT_MS }, fn);

  await step("Claude Code calls the MCP server's tool through --service tickets; the bearer stays on the host", async (t) => {
    const claude = `exec claude -p "$1" --mcp-config "$GATEWAY_MCP_CONFIG" --allowedTools "$2"`;
    const run = await gatewayRun(['--label', 'claude-mcp', '--service', 'tickets'], ['sh', '-c', claude, 'sh', MCP_PROMPT, MCP_TOOL], (lines) =>
      lines.some((l) => l.endpoint === 'service' && l.method === 'GET'),
    );
    const { report } = run;
    const wire = mcp.requests.map(
      (r) => `${r.method} ${r.rpc ?? '(stream)'} [${r.headers['mcp-protocol-version'] ?? '-'}${r.headers['mcp-session-id'] ? ', session' : ''}]`,
    );
    const show = `rc=${report.rc} ${run.ms} ms\n--- stdout\n${report.stdout}\n--- stderr\n${report.stderr.slice(-3000)}\n--- MCP wire\n${wire.join('\n')}\n--- turns ${script.turns.join(',')}; tools offered\n${JSON.stringify(script.offered)}`;
    t.diagnostic(`claude -p with the MCP tool: ${run.ms} ms for gateway run (client ${report.seconds} s); MCP wire: ${wire.join(' | ')}`);
    assert.equal(report.rc, 0, show);
    assert.ok(script.offered.length > 0, `Claude Code never sent the MCP turn to the model\n${show}`);
    assert.ok(
      !script.turns.includes('missing'),
      `Claude Code offered no ${MCP_TOOL}, not even deferred; it offered: ${script.offered[0]!.join(', ')}\n${show}`,
    );
    // The tool is deferred (ToolSearch loads it) or offered outright; then called once, then quoted.
    assert.match(script.turns.join(','), /^(search,)?call,final$/, show);
    // The tool's answer went from the MCP server through the gateway to Claude Code, to the model, and back out.
    assert.ok(report.stdout.includes(`${FINAL_PREFIX} TICKET 7: ${MCP_TICKET_MARKER} status=open`), show);
    assert.match(report.env, /^GATEWAY_MCP_CONFIG=\/run\/gateway\/mcp\.json$/m);
    assert.match(report.env, /^GATEWAY_SERVICE_TICKETS_URL=http:\/\/127\.0\.0\.1:9460\/svc\/tickets$/m);

    // The MCP server: the tool call arrived, every request with the host's bearer, none refused.
    assert.deepEqual(mcp.toolCalls, [{ name: 'lookup_ticket', args: { id: '7' } }], show);
    assert.equal(mcp.unauthorized, 0, show);
    assert.ok(
      mcp.requests.every((r) => r.headers.authorization === `Bearer ${MCP_TOKEN}`),
      show,
    );
    const rpcs = mcp.requests.map((r) => r.rpc);
    assert.ok(rpcs.includes('initialize') && rpcs.includes('tools/list') && rpcs.includes('tools/call'), show);
    // After initialize, each request carries the session the server gave out.
    // The probe (server/discover, refused with 400 by this server) and initialize carry none.
    const afterInit = mcp.requests.slice(mcp.requests.findIndex((r) => r.rpc === 'initialize') + 1);
    const sessions = new Set(afterInit.map((r) => r.headers['mcp-session-id']));
    assert.equal(sessions.size, 1, show);
    assert.equal(typeof [...sessions][0], 'string', show);
    assert.ok(
      afterInit.every((r) => typeof r.headers['mcp-protocol-version'] === 'string'),
      show,
    );
    assert.ok(
      mcp.requests.some((r) => r.method === 'GET' && r.headers.accept?.includes('text/event-stream')),
      show,
    );
    // Never a 401, so never OAuth discovery: not at the MCP server, and not on the key's socket, where
    // every request is audited (an unknown path too): only the model's calls and the service's.
    const oauth = (path: unknown) => /\/\.well-known\/(oauth|openid)|\/register\b/.test(String(path));
    assert.ok(!mcp.requests.some((r) => oauth(r.path)), show);
    assert.deepEqual(
      run.audit.filter((l) => oauth(l.path) || !/^\/(v1\/messages|svc\/tickets)(\?|$)/.test(String(l.path))),
      [],
    );

    // The audit trail: one service line per MCP request, named tickets, free; the GET is the event stream.
    const service = run.audit.filter((l) => l.endpoint === 'service');
    assert.equal(service.length, mcp.requests.length, JSON.stringify(run.audit));
    for (const line of service) {
      assert.equal(line.upstream, 'tickets');
      assert.equal(line.costUsd, 0);
      assert.equal(line.path, '/svc/tickets');
    }
    assert.deepEqual(
      service.filter((l) => l.method === 'GET').map((l) => [l.status, l.stream]),
      [[200, true]],
    );
    assert.ok(!JSON.stringify(run.audit).includes(MCP_TOKEN));
    t.diagnostic(`audit: ${service.map((l) => `${l.method} ${l.status} ${l.outcome} ${Math.round(Number(l.latencyMs))} ms`).join(' | ')}`);
    assertNoLeak(report);
    assert.ok(report.scan.paths.includes('/run/gateway/mcp.json'), 'the scan read mcp.json');
  });

  await step('curl reaches the REST service through --service rest; no grant, a method, a path are refused', async (t) => {
    const w = '-w "\\nstatus=%{http_code}\\n"';
    const curls = [
      `curl -sS ${w} "$GATEWAY_SERVICE_REST_URL/api/tickets/7"`,
      // The container's own Authorization is dropped: the host's goes upstream.
      `curl -sS ${w} -H "Authorization: Bearer container-guess" "$GATEWAY_SERVICE_REST_URL/api/tickets/8"`,
      `curl -sS ${w} -X DELETE "$GATEWAY_SERVICE_REST_URL/api/tickets/7"`,
      // A route that would reflect the credential, outside the path globs.
      `curl -sS ${w} "$GATEWAY_SERVICE_REST_URL/api/echo-headers"`,
    ];
    const granted = await gatewayRun(['--label', 'curl-rest', '--service', 'rest'], ['sh', '-c', curls.join('; ')], (lines) => lines.length >= 4);
    const show = `${granted.ms} ms\n--- stdout\n${granted.report.stdout}\n--- stderr\n${granted.report.stderr}\n--- audit\n${JSON.stringify(granted.audit)}`;
    t.diagnostic(`curl, granted: ${granted.ms} ms for gateway run`);
    assert.equal(granted.report.rc, 0, show);
    const answers = curlAnswers(granted.report.stdout);
    assert.deepEqual(
      answers.map((a) => a.status),
      [200, 200, 403, 403],
      show,
    );
    assert.deepEqual(JSON.parse(answers[0]!.body), { id: '7', title: 'Printer on fire', status: 'open' });
    assert.deepEqual(JSON.parse(answers[1]!.body), { id: '8', title: 'Printer on fire', status: 'open' });
    assert.equal(errorMessage(answers[2]!.body), 'service rest allows GET: DELETE is refused', show);
    assert.equal(errorMessage(answers[3]!.body), 'service rest allows the paths /api/tickets/**: "/api/echo-headers" is outside them', show);
    assert.match(granted.report.env, /^GATEWAY_SERVICE_REST_URL=http:\/\/127\.0\.0\.1:9460\/svc\/rest$/m);
    assert.doesNotMatch(granted.report.env, /^GATEWAY_MCP_CONFIG=/m, 'no MCP service, no mcp.json');
    // Only the two allowed requests reached the API, each with the host's token.
    assert.deepEqual(
      rest.requests.map((r) => [r.method, r.path, r.authorized]),
      [
        ['GET', '/api/tickets/7', true],
        ['GET', '/api/tickets/8', true],
      ],
    );
    assert.deepEqual(
      granted.audit.map((l) => [l.endpoint, l.upstream, l.method, l.status, l.outcome]),
      [
        ['service', 'rest', 'GET', 200, 'complete'],
        ['service', 'rest', 'GET', 200, 'complete'],
        ['service', 'rest', 'DELETE', 403, 'rejected'],
        ['service', 'rest', 'GET', 403, 'rejected'],
      ],
    );
    assertNoLeak(granted.report);

    const bare = await gatewayRun(
      ['--label', 'curl-no-grant'],
      ['sh', '-c', `curl -sS ${w} http://127.0.0.1:9460/svc/rest/api/tickets/7; echo "url=\${GATEWAY_SERVICE_REST_URL:-unset}"`],
      (lines) => lines.length >= 1,
    );
    t.diagnostic(`curl, no grant: ${bare.ms} ms for gateway run`);
    const [refused] = curlAnswers(bare.report.stdout);
    assert.equal(refused?.status, 404, bare.report.stdout);
    assert.equal(errorMessage(refused!.body), 'no service "rest" for this key');
    assert.match(bare.report.stdout, /^url=unset$/m);
    assert.equal(rest.requests.length, 2, 'nothing more reached the API');
    assert.deepEqual(
      bare.audit.map((l) => [l.endpoint, l.method, l.status, l.outcome]),
      [['service', 'GET', 404, 'rejected']],
    );
    assertNoLeak(bare.report);
  });
});
