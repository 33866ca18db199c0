// The incremental request scanner against JSON.parse: on random JSON values and random mutations of
// them, both agree on valid/invalid, and the fields read agree with the JSON.parse-based reading
// the scanner replaced (kept here as the reference).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { parseRequestFields, RequestFieldsReader, type RequestFields } from '../src/wire/request-fields.ts';
import { GatewayError } from '../src/wire/errors.ts';

const OUTPUT_LIMIT_FIELDS = ['max_tokens', 'max_completion_tokens', 'max_output_tokens'] as const;

/** The former JSON.parse reading (fields only; inputBytes is checked separately). */
function reference(text: string): Omit<RequestFields, 'inputBytes'> {
  const object = JSON.parse(text) as Record<string, unknown>;
  if (object === null || typeof object !== 'object' || Array.isArray(object)) throw new GatewayError('invalid_request', 'request body must be a JSON object');
  const positive = (value: unknown, field: string) => {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 2 ** 31 - 1)
      throw new GatewayError('invalid_request', `\`${field}\` must be a positive integer`);
    return value;
  };
  if (object.model !== undefined && typeof object.model !== 'string') throw new GatewayError('invalid_request', '`model` must be a string');
  if (typeof object.model === 'string' && object.model.length > 256) throw new GatewayError('invalid_request', '`model` is longer than 256 characters');
  const outputLimitField = OUTPUT_LIMIT_FIELDS.find((f) => object[f] !== undefined && object[f] !== null);
  const maxOutputTokens = outputLimitField === undefined ? undefined : positive(object[outputLimitField], outputLimitField);
  const choices = object.n === undefined || object.n === null ? 1 : positive(object.n, 'n');
  if (choices > 128) throw new GatewayError('invalid_request', '`n` may be at most 128');
  const thinking = object.thinking as { budget_tokens?: unknown } | null | undefined;
  const budget = thinking !== null && typeof thinking === 'object' ? thinking.budget_tokens : undefined;
  const str = (v: unknown, n: number) => (typeof v === 'string' ? v.slice(0, n) : undefined);
  const whole = (v: unknown, n: number) => (typeof v === 'string' && v.length <= n ? v : undefined);
  const record = (v: unknown) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {});
  return {
    model: object.model as string | undefined,
    stream: object.stream === true,
    maxOutputTokens,
    outputLimitField,
    choices,
    serviceTier: str(object.service_tier, 128),
    background: object.background === true,
    thinkingBudgetTokens: typeof budget === 'number' && Number.isInteger(budget) && budget > 0 ? budget : undefined,
    tools: Array.isArray(object.tools)
      ? object.tools.map((tool: unknown) => {
          if (tool === null || typeof tool !== 'object') return {};
          const t = tool as Record<string, unknown>;
          const maxUses = t.max_uses;
          return {
            type: str(t.type, 128),
            name: str(t.name, 128),
            maxUses: typeof maxUses === 'number' && Number.isInteger(maxUses) && maxUses > 0 ? maxUses : undefined,
            serverUrl: whole(t.server_url, 2048),
            allowedDomains:
              Array.isArray(t.allowed_domains) && t.allowed_domains.every((d) => whole(d, 512) !== undefined) ? (t.allowed_domains as string[]) : undefined,
          };
        })
      : [],
    mcpServers: Array.isArray(object.mcp_servers) ? object.mcp_servers.length : 0,
    mcpServerUrls: Array.isArray(object.mcp_servers)
      ? object.mcp_servers.map((server: unknown) => (record(server).type === 'url' ? whole(record(server).url, 2048) : undefined))
      : [],
    webSearchOptions: object.web_search_options !== undefined && object.web_search_options !== null,
    streamOptions: object.stream_options,
  };
}

/** Bytes as decoded plus structure: the reference for inputBytes on JSON.stringify output. */
function decodedBytes(value: unknown): number {
  if (typeof value === 'string') return Buffer.byteLength(value) + 2;
  if (Array.isArray(value)) return 2 + Math.max(0, value.length - 1) + value.reduce((sum: number, v) => sum + decodedBytes(v), 0);
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value);
    return 2 + Math.max(0, entries.length - 1) + entries.reduce((sum, [k, v]) => sum + decodedBytes(k) + 1 + decodedBytes(v), 0);
  }
  return JSON.stringify(value).length;
}

type Outcome = { ok: true; fields: unknown } | { ok: false; message: string };
const normal = (fields: object) => JSON.parse(JSON.stringify(fields)) as unknown;
function viaScanner(text: string, chunk: number): Outcome {
  try {
    const reader = new RequestFieldsReader();
    const bytes = Buffer.from(text);
    for (let at = 0; at < bytes.length; at += chunk) reader.push(bytes.subarray(at, at + chunk));
    const { inputBytes: _, ...fields } = reader.finish();
    return { ok: true, fields: normal(fields) };
  } catch (error) {
    if (!(error instanceof GatewayError)) throw error;
    return { ok: false, message: error.message };
  }
}
function viaReference(text: string): Outcome {
  try {
    return { ok: true, fields: normal(reference(text)) };
  } catch (error) {
    return { ok: false, message: error instanceof SyntaxError ? 'not valid JSON' : (error as Error).message };
  }
}

function agree(source: string, chunk: number): void {
  // As bytes: a mutation may split a surrogate pair, which UTF-8 cannot carry.
  const text = Buffer.from(source).toString('utf8');
  const mine = viaScanner(text, chunk);
  const theirs = viaReference(text);
  if (!mine.ok && mine.message.includes('appears more than once')) return; // JSON.parse cannot see duplicates
  assert.equal(mine.ok, theirs.ok, `${text}\nscanner: ${JSON.stringify(mine)}\nJSON.parse: ${JSON.stringify(theirs)}`);
  if (mine.ok && theirs.ok) assert.deepEqual(mine.fields, theirs.fields, text);
  if (!mine.ok && !theirs.ok && theirs.message !== 'not valid JSON') assert.equal(mine.message, theirs.message);
}

const scalar = fc.oneof(
  fc.string({ unit: 'binary' }),
  fc.integer({ min: -5, max: 300 }),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.constant(null),
  fc.constant('url'),
);
const value = fc.letrec((tie) => ({
  v: fc.oneof(
    { depthSize: 'small' },
    scalar,
    fc.array(tie('v'), { maxLength: 4 }),
    fc.dictionary(fc.string({ unit: 'binary', maxLength: 6 }), tie('v'), { maxKeys: 4 }),
  ),
})).v;
const known = fc.constantFrom(
  'model',
  'max_tokens',
  'max_completion_tokens',
  'max_output_tokens',
  'n',
  'stream',
  'stream_options',
  'tools',
  'mcp_servers',
  'background',
  'service_tier',
  'thinking',
  'web_search_options',
  'budget_tokens',
  'type',
  'name',
  'max_uses',
  'server_url',
  'allowed_domains',
  'url',
);
const toolValue = fc.array(fc.oneof(value, fc.dictionary(known, fc.oneof(scalar, value), { maxKeys: 4 })), { maxLength: 4 });
const request = fc.dictionary(fc.oneof(known, fc.string({ maxLength: 4 })), fc.oneof(value, toolValue, fc.dictionary(known, scalar, { maxKeys: 3 })), {
  maxKeys: 8,
});

describe('the request scanner against JSON.parse', () => {
  test('random request-like values, any indentation, any chunking: the same fields, and inputBytes as decoded', () => {
    fc.assert(
      fc.property(request, fc.constantFrom(undefined, 1, '\t'), fc.integer({ min: 1, max: 64 }), (object, indent, chunk) => {
        const text = JSON.stringify(object, null, indent);
        agree(text, chunk);
        const result = viaScanner(text, chunk);
        if (result.ok) assert.equal(parseRequestFields(Buffer.from(text)).inputBytes, decodedBytes(object));
      }),
      { numRuns: 3000 },
    );
  });

  test('random mutations: valid and invalid agree, and so do the fields', () => {
    const alphabet = fc.constantFrom(...'{}[]",:\\ 0123456789.-+eEtrufalsn\tu\n'.split(''), '\\u0041', '\u00e9', '\x01');
    const mutation = fc.tuple(fc.constantFrom('insert', 'delete', 'replace'), fc.nat(), alphabet);
    fc.assert(
      fc.property(request, fc.array(mutation, { minLength: 1, maxLength: 3 }), fc.integer({ min: 1, max: 16 }), (object, mutations, chunk) => {
        let text = JSON.stringify(object);
        for (const [kind, at, piece] of mutations) {
          const i = at % (text.length + 1);
          text =
            kind === 'insert'
              ? text.slice(0, i) + piece + text.slice(i)
              : kind === 'delete'
                ? text.slice(0, i) + text.slice(i + 1)
                : text.slice(0, i) + piece + text.slice(i + 1);
        }
        agree(text, chunk);
      }),
      { numRuns: 5000 },
    );
  });

  test('keys compare decoded; duplicates of read fields, deep nesting and invalid UTF-8 are refused', () => {
    assert.equal(parseRequestFields(Buffer.from('{"mo\\u0064el":"claude"}')).model, 'claude');
    assert.throws(() => parseRequestFields(Buffer.from('{"model":"a","mo\\u0064el":"b"}')), /`model` appears more than once/);
    assert.equal(parseRequestFields(Buffer.from('{"x":1,"x":2}')).choices, 1, "duplicates the gateway does not read are the provider's business");
    // Inside a tool or server too: which of two equal keys a provider keeps is its parser's choice.
    for (const body of [
      '{"tools":[{"type":"function","ty\\u0070e":"mcp"}]}',
      '{"tools":[{"type":"web_fetch_20250910","allowed_domains":["a.example"],"allowed_domains":[]}]}',
      '{"mcp_servers":[{"type":"url","url":"https://a.example","url":"https://b.example"}]}',
    ]) {
      assert.throws(() => parseRequestFields(Buffer.from(body)), /appears more than once in a `(tools|mcp_servers)` entry/, body);
    }
    assert.equal(parseRequestFields(Buffer.from('{"tools":[{"type":"function","x":1,"x":2}]}')).tools[0]!.type, 'function');
    assert.throws(() => parseRequestFields(Buffer.from(`{"a":${'['.repeat(128)}${']'.repeat(128)}}`)), /deeper than 128/);
    // 128 levels are read, and what the plan keeps around them survives the levels' room growing.
    assert.equal(parseRequestFields(Buffer.from(`{"a":${'['.repeat(127)}${']'.repeat(127)},"model":"m"}`)).model, 'm');
    const deepTool = parseRequestFields(Buffer.from(`{"tools":[{"type":"function","x":${'['.repeat(60)}${']'.repeat(60)},"name":"n"}],"model":"m"}`));
    assert.deepEqual([deepTool.tools.length, deepTool.tools[0]!.name, deepTool.model], [1, 'n', 'm']);
    assert.throws(() => parseRequestFields(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d])), /invalid UTF-8/);
    assert.throws(() => parseRequestFields(Buffer.from(`{"model":"${'m'.repeat(257)}"}`)), /longer than 256/);
    assert.equal(parseRequestFields(Buffer.from('{"a":"\\u0041\\n\\ud83d\\ude00"}')).inputBytes, '{"a":""}'.length + 1 + 1 + 4);
  });
});
