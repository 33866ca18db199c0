// Class 7 of issue 12: egress through the provider's server-side tools. A container with no network
// must not make the provider fetch URLs for it (MCP connector, web_fetch, remote MCP) unless the
// operator allows it, and the per-use charges of the server tools it may use are metered.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { loadConfig } from '../../src/config/load.ts';
import {
  checkServerTools,
  classifyTool,
  declaredServerTools,
  type HostAllowed,
  type ServerToolPolicy,
  worstCaseToolCostUsd,
} from '../../src/metering/server-tools.ts';
import { createUsageMeter } from '../../src/metering/usage.ts';
import type { Endpoint } from '../../src/wire/endpoints.ts';
import { GatewayError } from '../../src/wire/errors.ts';
import { parseRequestFields } from '../../src/wire/request-fields.ts';
import { eventually, startFixture, type Fixture } from '../support/fixture.ts';
import { anthropicHeaders, openaiHeaders, request } from '../support/http.ts';

const message = (extra: object = {}) => JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }], ...extra });
const responses = (extra: object = {}) => JSON.stringify({ model: 'gpt-5', input: 'hi', ...extra });
const chat = (extra: object = {}) => JSON.stringify({ model: 'gpt-5', messages: [{ role: 'user', content: 'hi' }], ...extra });

const ATTACKER = 'https://attacker.example/exfiltrate';

/** Every form of provider-side egress (or unmetered server tool) a container could declare. */
const EGRESS: { name: string; path: string; body: string; toolClass: string; declaredAs: string }[] = [
  {
    name: 'Anthropic MCP connector',
    path: '/v1/messages',
    toolClass: 'mcp',
    declaredAs: 'mcp_servers',
    body: message({ mcp_servers: [{ type: 'url', url: ATTACKER, name: 'x' }] }),
  },
  {
    name: 'Anthropic mcp_toolset',
    path: '/v1/messages',
    toolClass: 'mcp',
    declaredAs: 'mcp_toolset',
    body: message({ tools: [{ type: 'mcp_toolset', mcp_server_name: 'x' }] }),
  },
  {
    name: 'Anthropic web_fetch',
    path: '/v1/messages',
    toolClass: 'web_fetch',
    declaredAs: 'web_fetch_20250910',
    body: message({ tools: [{ type: 'web_fetch_20250910', name: 'web_fetch' }] }),
  },
  {
    name: 'Anthropic code execution',
    path: '/v1/messages',
    toolClass: 'code_execution',
    declaredAs: 'code_execution_20250825',
    body: message({ tools: [{ type: 'code_execution_20250825', name: 'code_execution' }] }),
  },
  {
    name: 'OpenAI remote MCP',
    path: '/v1/responses',
    toolClass: 'mcp',
    declaredAs: 'mcp',
    body: responses({ tools: [{ type: 'mcp', server_label: 'x', server_url: ATTACKER, require_approval: 'never' }] }),
  },
  {
    name: 'OpenAI code interpreter',
    path: '/v1/responses',
    toolClass: 'code_execution',
    declaredAs: 'code_interpreter',
    body: responses({ tools: [{ type: 'code_interpreter', container: { type: 'auto' } }] }),
  },
  {
    name: 'OpenAI image generation',
    path: '/v1/responses',
    toolClass: 'image_generation',
    declaredAs: 'image_generation',
    body: responses({ tools: [{ type: 'image_generation' }] }),
  },
];

const headersFor = (urlPath: string) => (urlPath === '/v1/messages' ? anthropicHeaders() : openaiHeaders());

async function withFixture(
  options: Parameters<typeof startFixture>[1],
  run: (fx: Fixture) => Promise<void>,
  standin: Parameters<typeof startFixture>[0] = {},
): Promise<void> {
  const fx = await startFixture(standin, options);
  try {
    await run(fx);
  } finally {
    await fx.close();
  }
}

describe('adversary: egress through server-side tools', () => {
  test('every egress form is refused by default with 403 in the provider shape and never reaches the upstream', async () => {
    await withFixture({}, async (fx) => {
      const key = await fx.gateway.mint({ group: 'g' });
      for (const form of EGRESS) {
        const res = await request({ socketPath: key.socketPath, path: form.path, headers: headersFor(form.path), body: form.body });
        assert.equal(res.status, 403, form.name);
        assert.equal(res.headers['x-should-retry'], 'false', form.name);
        assert.equal(res.headers['x-gateway-error'], 'tool_not_allowed', form.name);
        const body = JSON.parse(res.body) as { type?: string; error: { type: string; message: string; code?: string } };
        if (form.path === '/v1/messages') assert.equal(body.type, 'error', form.name);
        assert.equal(body.error.type, 'permission_error', form.name);
        assert.match(body.error.message, new RegExp(`${form.toolClass} tool \\(${form.declaredAs}\\)`), form.name);
        assert.match(body.error.message, /serverTools/, `${form.name}: the message names the setting`);
      }
      assert.equal(fx.standin.requests.length, 0, 'nothing reached the upstream');
      await eventually(() => fx.calls.length === EGRESS.length);
      assert.ok(fx.calls.every((call) => call.outcome === 'rejected' && call.errorKind === 'tool_not_allowed' && call.costUsd === 0));
    });
  });

  test('an unknown tool type is refused by name', async () => {
    await withFixture({}, async (fx) => {
      const key = await fx.gateway.mint({ group: 'g' });
      const anthropic = await request({
        socketPath: key.socketPath,
        path: '/v1/messages',
        headers: anthropicHeaders(),
        body: message({ tools: [{ type: 'url_context_20990101', name: 'x' }] }),
      });
      assert.equal(anthropic.status, 403);
      assert.match(anthropic.body, /tool type \\"url_context_20990101\\" is not one the gateway knows/);
      const openai = await request({
        socketPath: key.socketPath,
        path: '/v1/responses',
        headers: openaiHeaders(),
        body: responses({ tools: [{ type: 'browser' }] }),
      });
      assert.equal(openai.status, 403);
      assert.match(openai.body, /browser/);
      const untyped = await request({
        socketPath: key.socketPath,
        path: '/v1/responses',
        headers: openaiHeaders(),
        body: responses({ tools: [{ name: 'x' }] }),
      });
      assert.equal(untyped.status, 403, 'a Responses tool without a type is not assumed to be a function');
      assert.equal(fx.standin.requests.length, 0);
    });
  });

  test("Claude Code's and Codex's usual tool declarations are allowed by default", async () => {
    await withFixture({}, async (fx) => {
      const key = await fx.gateway.mint({ group: 'g' });
      const schema = { type: 'object', properties: {} };
      // Claude Code: custom tools without a type, its WebSearch tool, tool search, a client-run bash tool.
      const claude = message({
        tools: [
          { name: 'Bash', description: 'run', input_schema: schema },
          { type: 'custom', name: 'Edit', input_schema: schema },
          { type: 'web_search_20250305', name: 'web_search', max_uses: 8 },
          { type: 'tool_search_tool_regex_20251119', name: 'tool_search_tool_regex' },
          { type: 'bash_20250124', name: 'bash' },
          { type: 'text_editor_20250728', name: 'str_replace_based_edit_tool' },
        ],
      });
      assert.equal((await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: claude })).status, 200);
      // Codex: function tools, apply_patch as a freeform custom tool, local shell, web search, namespaces, tool search.
      const codex = responses({
        tools: [
          { type: 'function', name: 'shell', parameters: schema },
          { type: 'custom', name: 'apply_patch', format: { type: 'grammar' } },
          { type: 'local_shell' },
          { type: 'web_search', external_web_access: false },
          { type: 'namespace', name: 'mcp__x', tools: [] },
          { type: 'tool_search' },
        ],
      });
      assert.equal((await request({ socketPath: key.socketPath, path: '/v1/responses', headers: openaiHeaders(), body: codex })).status, 200);
      const agents = chat({ tools: [{ type: 'function', function: { name: 'f', parameters: schema } }], functions: [{ name: 'legacy' }] });
      assert.equal((await request({ socketPath: key.socketPath, path: '/v1/chat/completions', headers: openaiHeaders(), body: agents })).status, 200);
      assert.equal(fx.standin.requests.length, 3);
    });
  });

  test('a key, or the defaults, may allow egress tools; a group list narrows every key of the group', async () => {
    await withFixture({ groupServerTools: { locked: [], research: ['web_search', 'web_fetch', 'mcp'] } }, async (fx) => {
      const fetchBody = EGRESS.find((form) => form.declaredAs === 'web_fetch_20250910')!.body;
      const mcpBody = EGRESS.find((form) => form.name === 'OpenAI remote MCP')!.body;
      const research = await fx.gateway.mint({ group: 'research', serverTools: ['web_search', 'web_fetch', 'mcp'] });
      assert.equal((await request({ socketPath: research.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: fetchBody })).status, 200);
      assert.equal((await request({ socketPath: research.socketPath, path: '/v1/responses', headers: openaiHeaders(), body: mcpBody })).status, 200);
      assert.equal(fx.standin.requests.length, 2, 'allowed tools reach the upstream');

      // The group's list applies even to a key that allows more.
      const locked = await fx.gateway.mint({ group: 'locked', serverTools: ['web_search', 'web_fetch'] });
      const refused = await request({ socketPath: locked.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: fetchBody });
      assert.equal(refused.status, 403);
      assert.match(refused.body, /group locked may not use the provider's web_fetch tool.*allowed server tools: none.*groupServerTools/);
      const search = await request({
        socketPath: locked.socketPath,
        path: '/v1/messages',
        headers: anthropicHeaders(),
        body: message({ tools: [{ type: 'web_search_20250305', name: 'web_search' }] }),
      });
      assert.equal(search.status, 403, 'even web search, when the group allows none');

      // A key may turn web search off.
      const none = await fx.gateway.mint({ group: 'g', serverTools: [] });
      const noSearch = await request({
        socketPath: none.socketPath,
        path: '/v1/chat/completions',
        headers: openaiHeaders(),
        body: chat({ web_search_options: {} }),
      });
      assert.equal(noSearch.status, 403);
      assert.match(noSearch.body, /web_search tool \(web_search_options\)/);
      assert.equal(fx.standin.requests.length, 2);

      await assert.rejects(fx.gateway.mint({ group: 'g', serverTools: ['web_fetch', 'teleport'] as never }), /serverTools/);
    });
    await withFixture({ defaultLimits: { serverTools: ['web_search', 'mcp'] } }, async (fx) => {
      const key = await fx.gateway.mint({ group: 'g' });
      const mcp = EGRESS.find((form) => form.name === 'Anthropic MCP connector')!;
      assert.equal((await request({ socketPath: key.socketPath, path: mcp.path, headers: anthropicHeaders(), body: mcp.body })).status, 200);
    });
  });

  test('web search is metered per use from Anthropic usage blocks and streams', async () => {
    const json = {
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      content: [],
      usage: { input_tokens: 1000, output_tokens: 200, server_tool_use: { web_search_requests: 3 } },
    };
    const stream = [
      'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_2","usage":{"input_tokens":1000,"output_tokens":1}}}\n\n',
      'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}}\n\n',
      'event: content_block_start\ndata: {"type":"content_block_start","index":1,"content_block":{"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[]}}\n\n',
      'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":200,"server_tool_use":{"web_search_requests":2}}}\n\n',
      'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    ].join('');
    await withFixture(
      {},
      async (fx) => {
        const key = await fx.gateway.mint({ group: 'g' });
        const tools = [{ type: 'web_search_20250305', name: 'web_search', max_uses: 5 }];
        assert.equal((await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ tools }) })).status, 200);
        assert.equal(
          (await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message({ tools, stream: true }) })).status,
          200,
        );
        await eventually(() => fx.calls.length === 2);
        const tokens = (1000 * 3 + 200 * 15) / 1e6;
        const [plain, streamed] = fx.calls;
        assert.equal(plain!.webSearchRequests, 3);
        assert.ok(Math.abs(plain!.costUsd - (tokens + 0.03)) < 1e-12, `JSON: ${plain!.costUsd}`);
        assert.equal(streamed!.webSearchRequests, 2);
        assert.ok(Math.abs(streamed!.costUsd - (tokens + 0.02)) < 1e-12, `stream: ${streamed!.costUsd}`);
        const live = fx.gateway.inspect().keys[0]!;
        assert.ok(Math.abs(live.spentUsd - (2 * tokens + 0.05)) < 1e-12, 'the search charges are in the key spend');
      },
      {
        override(req, res) {
          const streaming = (JSON.parse(req.body.toString()) as { stream?: boolean }).stream;
          res.writeHead(200, { 'content-type': streaming ? 'text/event-stream' : 'application/json' });
          res.end(streaming ? stream : JSON.stringify(json));
          return true;
        },
      },
    );
  });

  test('web search is metered per use from OpenAI web_search_call items, JSON and stream, at the configured price', async () => {
    const usage = { input_tokens: 1000, output_tokens: 100, input_tokens_details: { cached_tokens: 0 } };
    const search = (id: string) => ({ type: 'web_search_call', id, status: 'completed', action: { type: 'search', query: 'q' } });
    const text = {
      type: 'message',
      role: 'assistant',
      content: [{ type: 'output_text', text: 'the \\"web_search_call\\" item and "type":"web_search_call" inside text do not count' }],
    };
    // Pretty-printed, as OpenAI sends non-streaming bodies.
    const json = JSON.stringify({ id: 'resp_1', object: 'response', output: [search('ws_1'), search('ws_2'), text], usage }, null, 2);
    const completed = { id: 'resp_2', object: 'response', output: [search('ws_3'), text], usage };
    const stream = [
      'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_2"}}\n\n',
      'event: response.web_search_call.completed\ndata: {"type":"response.web_search_call.completed","item_id":"ws_3"}\n\n',
      `event: response.completed\ndata: ${JSON.stringify({ type: 'response.completed', response: completed })}\n\n`,
    ].join('');
    await withFixture(
      { serverToolPrices: { webSearch: 0.025 } },
      async (fx) => {
        const key = await fx.gateway.mint({ group: 'g' });
        const tools = [{ type: 'web_search' }];
        assert.equal((await request({ socketPath: key.socketPath, path: '/v1/responses', headers: openaiHeaders(), body: responses({ tools }) })).status, 200);
        assert.equal(
          (await request({ socketPath: key.socketPath, path: '/v1/responses', headers: openaiHeaders(), body: responses({ tools, stream: true }) })).status,
          200,
        );
        await eventually(() => fx.calls.length === 2);
        const tokens = (1000 * 1.25 + 100 * 10) / 1e6;
        const [plain, streamed] = fx.calls;
        assert.equal(plain!.webSearchRequests, 2);
        assert.ok(Math.abs(plain!.costUsd - (tokens + 0.05)) < 1e-12, `JSON: ${plain!.costUsd}`);
        assert.equal(streamed!.webSearchRequests, 1);
        assert.ok(Math.abs(streamed!.costUsd - (tokens + 0.025)) < 1e-12, `stream: ${streamed!.costUsd}`);
      },
      {
        override(req, res) {
          const streaming = (JSON.parse(req.body.toString()) as { stream?: boolean }).stream;
          res.writeHead(200, { 'content-type': streaming ? 'text/event-stream' : 'application/json' });
          res.end(streaming ? stream : json);
          return true;
        },
      },
    );
  });

  test('a chat search call is charged one search', async () => {
    await withFixture({}, async (fx) => {
      const key = await fx.gateway.mint({ group: 'g' });
      assert.equal(
        (await request({ socketPath: key.socketPath, path: '/v1/chat/completions', headers: openaiHeaders(), body: chat({ web_search_options: {} }) })).status,
        200,
      );
      await eventually(() => fx.calls.length === 1);
      assert.equal(fx.calls[0]!.webSearchRequests, 1);
      assert.ok(fx.calls[0]!.costUsd >= 0.01);
    });
  });

  test('web_search_call items are counted in a Responses body past the whole-parse size, split across chunks', () => {
    const item = '{"type": "web_search_call", "id": "ws", "status": "completed"}';
    const filler = { type: 'message', content: [{ type: 'output_text', text: 'x'.repeat(2 * 1024 * 1024) }] };
    const body = Buffer.from(`{"output": [${item}, ${JSON.stringify(filler)}, ${item}, ${item}], "usage": {"input_tokens": 10, "output_tokens": 5}}`);
    const meter = createUsageMeter('responses', false)!;
    // 7-byte chunks around the items, so tokens straddle chunk boundaries.
    for (let at = 0; at < body.length; ) {
      const size = at < 200 || body.length - at < 400 ? 7 : 64 * 1024;
      meter.push(body.subarray(at, at + size));
      at += size;
    }
    const result = meter.result()!;
    assert.equal(result.usage.webSearchRequests, 3);
    assert.equal(result.usage.outputTokens, 5);
  });

  test('the reservation covers the declared searches at their max_uses', async () => {
    await withFixture({}, async (fx) => {
      const key = await fx.gateway.mint({ group: 'g', budgetUsd: 5 });
      const plain = message({ tools: [{ name: 'Bash', input_schema: {} }] });
      const searching = message({
        tools: [
          { name: 'Bash', input_schema: {} },
          { type: 'web_search_20250305', name: 'web_search', max_uses: 50 },
        ],
      });
      for (const body of [plain, searching])
        assert.equal((await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body })).status, 200);
      await eventually(() => fx.calls.length === 2);
      const extra = fx.calls[1]!.reservedUsd! - fx.calls[0]!.reservedUsd!;
      assert.ok(extra >= 0.5 && extra < 0.501, `50 searches at $0.01 reserved: +$${extra}`);
    });
  });

  test('the worst-case per-use cost of declared tools, for the reservation', () => {
    const declared = declaredServerTools('messages', {
      tools: [{ type: 'web_search_20250305', maxUses: 5 }, { type: 'web_fetch_20250910', maxUses: 50 }, { name: 'Bash' }],
      mcpServers: 0,
      webSearchOptions: false,
    });
    assert.ok(Math.abs(worstCaseToolCostUsd(declared) - 0.05) < 1e-12, 'max_uses x $0.01; fetches cost tokens only');
    const uncapped = declaredServerTools('responses', { tools: [{ type: 'web_search' }], mcpServers: 0, webSearchOptions: false });
    assert.ok(Math.abs(worstCaseToolCostUsd(uncapped) - 0.2) < 1e-12, '20 uses assumed without max_uses');
    const huge = declaredServerTools('messages', { tools: [{ type: 'web_search_20250305', maxUses: 2 ** 31 - 1 }], mcpServers: 0, webSearchOptions: false });
    assert.ok(Number.isFinite(worstCaseToolCostUsd(huge)) && worstCaseToolCostUsd(huge) <= 100, 'a huge max_uses stays bounded');
    assert.deepEqual(classifyTool('messages', { type: 'web_fetch_20250910' }), { kind: 'server', class: 'web_fetch' });
    assert.deepEqual(classifyTool('responses', { type: 'constructor' }), { kind: 'unknown' }, 'no prototype keys');
  });

  test('TOML: [limits] server_tools, [group_server_tools] and [server_tool_prices] are read and checked', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'gw-cfg-'));
    try {
      const file = path.join(dir, 'gateway.toml');
      await writeFile(file, '[limits]\nserver_tools = ["web_search", "web_fetch"]\n[group_server_tools]\nci = []\n[server_tool_prices]\nweb_search = 0.025\n');
      const config = await loadConfig(file);
      assert.deepEqual(config.defaultLimits.serverTools, ['web_search', 'web_fetch']);
      assert.deepEqual(config.groupServerTools, { ci: [] });
      assert.deepEqual(config.serverToolPrices, { webSearch: 0.025 });
      await writeFile(file, '[group_server_tools]\nci = ["web_search", "browse"]\n');
      await assert.rejects(loadConfig(file), /group_server_tools\.ci: must be an array of server tool classes/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/**
 * A stand-in for the key's egress policy: `host:port` rules where the host is exact, `*.rest` (one
 * label under rest) or `**.rest` (any depth under rest), and the port a number or `*`. Records what
 * it was asked.
 */
function egressRules(...rules: string[]): HostAllowed & { asked: string[] } {
  const asked: string[] = [];
  const matches = (rule: string, host: string, port: number) => {
    const [pattern, rulePort] = rule.split(':') as [string, string];
    if (rulePort !== '*' && Number(rulePort) !== port) return false;
    if (pattern.startsWith('**.')) return host.endsWith(pattern.slice(2));
    if (pattern.startsWith('*.')) return host.endsWith(pattern.slice(1)) && !host.slice(0, -pattern.length + 1).includes('.');
    return host === pattern;
  };
  const allows = (host: string, port: number) => {
    asked.push(`${host}:${port}`);
    return rules.some((rule) => matches(rule, host, port));
  };
  return Object.assign(allows, { asked });
}

const NONE: ServerToolPolicy = { key: [], group: { name: 'locked', allowed: [] } };

/** The check as the handler runs it: the body parsed by the request scanner, then the policy. */
function check(endpoint: Endpoint, body: string, egress: HostAllowed | undefined, policy: ServerToolPolicy = NONE) {
  return checkServerTools(endpoint, parseRequestFields(Buffer.from(body)), policy, egress);
}

function refusal(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof GatewayError && error.kind === 'tool_not_allowed', String(error));
    return error.message;
  }
  assert.fail('expected a tool_not_allowed refusal');
}

const connector = (...urls: (string | undefined)[]) =>
  message({
    mcp_servers: urls.map((url, i) => ({ type: 'url', url, name: `s${i}` })),
    tools: [{ type: 'mcp_toolset', mcp_server_name: 's0' }],
  });
const webFetch = (tool: object = {}) => message({ tools: [{ type: 'web_fetch_20250910', name: 'web_fetch', ...tool }] });

describe('adversary: provider-side egress under the key’s egress policy', () => {
  test('the MCP connector and mcp_toolset pass when the egress policy allows every server URL’s host and port, whatever serverTools says', () => {
    const egress = egressRules('mcp.example.com:443', 'tools.example.org:8443', 'plain.example.net:80');
    const declared = check('messages', connector('https://mcp.example.com/sse', 'https://Tools.Example.org:8443/mcp?x=1', 'http://plain.example.net'), egress);
    assert.deepEqual(
      declared.map((tool) => tool.declaredAs),
      ['mcp_toolset', 'mcp_servers'],
    );
    assert.deepEqual(
      new Set(egress.asked),
      new Set(['mcp.example.com:443', 'tools.example.org:8443', 'plain.example.net:80']),
      'host lower-cased, default ports by scheme',
    );
    // OpenAI remote MCP, on Responses and chat completions alike.
    const openai = { type: 'mcp', server_label: 'x', server_url: 'https://mcp.example.com/v1', require_approval: 'never' };
    assert.equal(check('responses', responses({ tools: [openai] }), egress).length, 1);
    assert.equal(check('chat_completions', chat({ tools: [openai] }), egress).length, 1);
  });

  test('one server URL the policy does not allow refuses the call, and the refusal names both ways to allow it', () => {
    const egress = egressRules('mcp.example.com:443');
    const said = refusal(() => check('messages', connector('https://mcp.example.com/sse', ATTACKER), egress, { key: ['web_search'] }));
    assert.match(
      said,
      /this key may not use the provider's mcp tool \(mcp_toolset\); allowed server tools: web_search \(setting: serverTools \/ server_tools\)/,
    );
    assert.match(said, /or allow it with an egress rule for attacker\.example:443$/);
    assert.doesNotMatch(said, /mcp\.example\.com/, 'only the hosts still missing are named');
    // The wrong port is not the host.
    assert.match(
      refusal(() => check('messages', connector('https://mcp.example.com:444/'), egress)),
      /egress rule for mcp\.example\.com:444$/,
    );
    // Without an egress policy, the same refusal, still naming the rule that would allow it.
    const noPolicy = refusal(() => check('responses', responses({ tools: [{ type: 'mcp', server_url: ATTACKER }] }), undefined, { key: ['web_search'] }));
    assert.match(noPolicy, /mcp tool \(mcp\).*serverTools.*egress rule for attacker\.example:443/);
    // A group's refusal says the same.
    const grouped = refusal(() => check('messages', connector(ATTACKER), egressRules(), { key: ['mcp'], group: { name: 'ci', allowed: [] } }));
    assert.match(grouped, /group ci may not use the provider's mcp tool \(mcp_toolset\).*groupServerTools.*egress rule for attacker\.example:443/);
  });

  test('a server URL that is missing, not http(s), or not read alike by every URL parser is never allowed by egress', () => {
    const everyHost: HostAllowed = () => true;
    const bad = [
      undefined,
      'ftp://a.example/',
      'HTTPS://a.example/',
      'https:/a.example/',
      'https://user@a.example/',
      'https://a.example:443@b.example/',
      'https://a.example\\@b.example/',
      'https://b.example\\.a.example/',
      ' https://a.example/',
      'https://a.example /',
      'https://a.ex\u0430mple/',
      'http://2130706433/',
      'http://0x7f.1/',
      'http://127.1/',
      'http://127.000.0.1/',
      'https://[::1]/',
      'https://a..example/',
      'https://a.example./',
      'https://-a.example/',
      'https://a.example:/',
      'https://a.example:0/',
      'https://a.example:65536/',
      `https://${'a'.repeat(64)}.example/`,
      `https://a.example/${'x'.repeat(2048)}`,
    ];
    for (const url of bad) {
      const said = refusal(() => check('messages', connector('https://a.example/', url), everyHost));
      assert.match(said, /an egress rule cannot allow it: an mcp_servers entry has no plain http\(s\) url/, String(url));
      assert.match(said, /serverTools/, String(url));
    }
    for (const url of bad) {
      const tool = url === undefined ? { type: 'mcp' } : { type: 'mcp', server_url: url };
      assert.match(
        refusal(() => check('responses', responses({ tools: [tool] }), everyHost)),
        /server_url is missing or not a plain http\(s\) URL/,
        String(url),
      );
    }
    // A server that is not `type: 'url'`, and mcp_toolset without any server.
    const stdio = message({ mcp_servers: [{ type: 'stdio', url: 'https://a.example/', name: 'x' }] });
    assert.match(
      refusal(() => check('messages', stdio, everyHost)),
      /no plain http\(s\) url/,
    );
    assert.match(
      refusal(() => check('messages', message({ tools: [{ type: 'mcp_toolset', mcp_server_name: 'x' }] }), everyHost)),
      /names no mcp_servers/,
    );
    // The plain forms the same hosts take are read.
    assert.equal(check('messages', connector('https://a.example', 'http://127.0.0.1:8080/x#y', 'https://a.example?q'), everyHost).length, 2);
  });

  test('web_fetch passes only with allowed_domains the policy allows on ports 443 and 80, subdomains included', () => {
    const everyHost: HostAllowed = () => true;
    assert.match(
      refusal(() => check('messages', webFetch(), everyHost)),
      /web_fetch tool \(web_fetch_20250910\).*serverTools.*an egress rule cannot allow it: it declares no allowed_domains/,
    );
    assert.match(
      refusal(() => check('messages', webFetch({ allowed_domains: [] }), everyHost)),
      /no allowed_domains/,
    );
    assert.match(
      refusal(() => check('messages', webFetch({ blocked_domains: ['evil.example'] }), everyHost)),
      /no allowed_domains/,
    );

    const egress = egressRules(
      'docs.example.com:443',
      'docs.example.com:80',
      '**.docs.example.com:443',
      '**.docs.example.com:80',
      'arxiv.org:*',
      '**.arxiv.org:*',
    );
    const declared = check('messages', webFetch({ allowed_domains: ['docs.example.com', 'ArXiv.org/abs/*'], max_uses: 3 }), egress);
    assert.equal(declared[0]!.class, 'web_fetch');
    assert.equal(declared[0]!.maxUses, 3, 'still metered as declared');
    assert.ok(egress.asked.includes('docs.example.com:80') && egress.asked.includes('arxiv.org:443'), 'both ports; the path is not the host');
    assert.ok(egress.asked.includes('gateway-subdomain-probe.gateway-subdomain-probe.docs.example.com:443'), 'subdomains two labels down');

    // example.com covers api.example.com: a rule for the apex alone does not allow it.
    const apexOnly = refusal(() => check('messages', webFetch({ allowed_domains: ['example.com'] }), egressRules('example.com:*')));
    assert.match(apexOnly, /egress rule for example\.com:443 and its subdomains, example\.com:80 and its subdomains$/);
    // Nor does a rule that matches one label under it (the provider fetches a.b.example.com too).
    const oneLabel = refusal(() => check('messages', webFetch({ allowed_domains: ['example.com'] }), egressRules('example.com:*', '*.example.com:*')));
    assert.match(oneLabel, /egress rule for example\.com:443 and its subdomains/);
    // HTTPS alone is not enough: the URLs may be http.
    assert.match(
      refusal(() => check('messages', webFetch({ allowed_domains: ['example.com'] }), egressRules('**.example.com:443', 'example.com:443'))),
      /rule for example\.com:80 and its subdomains$/,
    );
    // One domain the policy does not allow.
    assert.match(
      refusal(() => check('messages', webFetch({ allowed_domains: ['docs.example.com', 'evil.example'] }), egress)),
      /rule for evil\.example:443 and its subdomains, evil\.example:80 and its subdomains$/,
    );
  });

  test('web_fetch allowed_domains entries that are not plain domains are never allowed by egress', () => {
    const everyHost: HostAllowed = () => true;
    for (const entry of [
      'https://example.com',
      '*.example.com',
      'example.com:8080',
      'ex ample.com',
      'exa\u0301mple.com',
      'example.com.',
      '',
      '/path',
      'a\\b.com',
      '0x7f.1',
    ]) {
      assert.match(
        refusal(() => check('messages', webFetch({ allowed_domains: ['ok.example', entry] }), everyHost)),
        /allowed_domains entry .* is not a plain domain/,
        entry,
      );
    }
    assert.match(
      refusal(() => check('messages', webFetch({ allowed_domains: ['ok.example', 7] }), everyHost)),
      /no allowed_domains the gateway could read/,
    );
  });

  test('egress allows only the fetching tools, and a group list still narrows every other one', () => {
    const everyHost: HostAllowed = () => true;
    assert.match(
      refusal(() => check('messages', message({ tools: [{ type: 'code_execution_20250825', name: 'code_execution' }] }), everyHost)),
      /code_execution tool/,
    );
    const search = message({ tools: [{ type: 'web_search_20250305', name: 'web_search', allowed_domains: ['example.com'] }] });
    const searchRefusal = refusal(() => check('messages', search, everyHost, { key: ['web_search'], group: { name: 'locked', allowed: [] } }));
    assert.match(searchRefusal, /group locked may not use the provider's web_search tool/);
    assert.doesNotMatch(searchRefusal, /egress/, 'no egress way out for a tool egress does not govern');
    // count_tokens runs nothing.
    assert.deepEqual(check('count_tokens', connector(ATTACKER), undefined), []);
  });

  test('the new fields stay bounded: many servers, long URLs, many allowed_domains', () => {
    const long = `https://a.example/${'x'.repeat(2048 - 'https://a.example/'.length)}`;
    const many = parseRequestFields(Buffer.from(message({ mcp_servers: Array.from({ length: 1024 }, (_, i) => ({ type: 'url', url: long, name: `s${i}` })) })));
    assert.equal(many.mcpServers, 1024);
    assert.equal(many.mcpServerUrls.length, 1024);
    assert.ok(
      many.mcpServerUrls.every((url) => url === long),
      'a URL of 2048 characters is kept whole',
    );
    assert.throws(
      () => parseRequestFields(Buffer.from(message({ mcp_servers: Array.from({ length: 1025 }, () => ({ type: 'url', url: 'https://a.example' })) }))),
      /`mcp_servers` may hold at most 1024 entries/,
    );
    // A longer URL is not kept at all (never a prefix), however long.
    const huge = parseRequestFields(
      Buffer.from(
        message({
          mcp_servers: [
            { type: 'url', url: `${long}y` },
            { type: 'url', url: `https://a.example/${'x'.repeat(4 << 20)}` },
          ],
        }),
      ),
    );
    assert.deepEqual(huge.mcpServerUrls, [undefined, undefined]);
    const tooLongServerUrl = parseRequestFields(Buffer.from(responses({ tools: [{ type: 'mcp', server_url: `${long}y` }] })));
    assert.equal(tooLongServerUrl.tools[0]!.serverUrl, undefined);

    // allowed_domains: each entry at most 512 characters, at most 1024 kept over the request; a list cut short is not read.
    const domain = (i: number) => `d${i}.example`;
    const fields = parseRequestFields(
      Buffer.from(
        message({
          tools: [
            { type: 'web_fetch_20250910', allowed_domains: Array.from({ length: 1000 }, (_, i) => domain(i)) },
            { type: 'web_fetch_20250910', allowed_domains: Array.from({ length: 24 }, (_, i) => domain(i)) },
            { type: 'web_fetch_20250910', allowed_domains: ['one.more'] },
            { type: 'web_fetch_20250910', allowed_domains: ['x'.repeat(512)] },
            { type: 'web_fetch_20250910', allowed_domains: ['x'.repeat(513)] },
            { type: 'web_fetch_20250910', allowed_domains: 'example.com' },
          ],
        }),
      ),
    );
    assert.equal(fields.tools[0]!.allowedDomains!.length, 1000);
    assert.equal(fields.tools[1]!.allowedDomains!.length, 24);
    assert.equal(fields.tools[2]!.allowedDomains, undefined, 'past the request-wide bound');
    assert.equal(fields.tools[3]!.allowedDomains, undefined, 'past the bound, even a short list');
    assert.equal(fields.tools[5]!.allowedDomains, undefined, 'not a list');
    const separate = parseRequestFields(Buffer.from(webFetch({ allowed_domains: ['x'.repeat(512), 'x'.repeat(513)] })));
    assert.equal(separate.tools[0]!.allowedDomains, undefined, 'an entry over 512 characters');
    assert.equal(parseRequestFields(Buffer.from(webFetch({ allowed_domains: ['x'.repeat(512)] }))).tools[0]!.allowedDomains![0]!.length, 512);
    // A list far past the bound, nested lists and objects inside it: counted, not kept, no crash.
    const flood = parseRequestFields(
      Buffer.from(webFetch({ allowed_domains: [...Array.from({ length: 200_000 }, (_, i) => domain(i)), [['deep']], { a: 1 }] })),
    );
    assert.equal(flood.tools[0]!.allowedDomains, undefined);
    assert.match(
      refusal(() => checkServerTools('messages', flood, NONE, () => true)),
      /no allowed_domains the gateway could read/,
    );
  });
});
