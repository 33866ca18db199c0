// OpenTelemetry traces (src/telemetry/traces.ts): an in-process gateway's calls reach a local OTLP/HTTP
// receiver as one GenAI span each, with the record's counts and none of its content or credentials;
// the standard OTEL_* variables are honoured; a receiver that is down costs the gateway nothing.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { trace } from '@opentelemetry/api';
import type { CallRecord } from '../src/index.ts';
import { createTraceExporter } from '../src/telemetry/traces.ts';
import { deadPort, eventually, REAL_ANTHROPIC_KEY, REAL_OPENAI_KEY, startFixture, type Fixture } from './support/fixture.ts';
import { anthropicHeaders, openaiHeaders, request } from './support/http.ts';

/** One OTLP/JSON attribute value, as the exporter encodes it. */
interface AnyValue {
  stringValue?: string;
  intValue?: number | string;
  doubleValue?: number;
  boolValue?: boolean;
}

interface ReceivedSpan {
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  status?: { code?: number };
  attributes: Record<string, string | number | boolean>;
}

interface Receiver {
  url: string;
  /** Each request's raw body (decompressed), for searching. */
  bodies: string[];
  headers: http.IncomingHttpHeaders[];
  paths: string[];
  spans: ReceivedSpan[];
  resources: Record<string, string | number | boolean>[];
  close(): Promise<void>;
}

function decodeValue(value: AnyValue): string | number | boolean {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.boolValue !== undefined) return value.boolValue;
  throw new Error(`unexpected attribute value ${JSON.stringify(value)}`);
}

function attributesOf(list: { key: string; value: AnyValue }[] | undefined): Record<string, string | number | boolean> {
  return Object.fromEntries((list ?? []).map(({ key, value }) => [key, decodeValue(value)]));
}

/** A local OTLP/HTTP receiver: keeps every export's body and decodes its spans (JSON encoding). */
async function startReceiver(): Promise<Receiver> {
  const receiver: Omit<Receiver, 'url' | 'close'> = { bodies: [], headers: [], paths: [], spans: [], resources: [] };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      let body = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
      const text = body.toString('utf8');
      receiver.bodies.push(text);
      receiver.headers.push(req.headers);
      receiver.paths.push(req.url ?? '');
      assert.match(req.headers['content-type'] ?? '', /^application\/json/, 'the exporter sends OTLP/JSON');
      const decoded = JSON.parse(text) as {
        resourceSpans: {
          resource?: { attributes?: { key: string; value: AnyValue }[] };
          scopeSpans: { spans: (Omit<ReceivedSpan, 'attributes'> & { attributes?: { key: string; value: AnyValue }[] })[] }[];
        }[];
      };
      for (const resourceSpans of decoded.resourceSpans) {
        receiver.resources.push(attributesOf(resourceSpans.resource?.attributes));
        for (const scope of resourceSpans.scopeSpans)
          for (const span of scope.spans) receiver.spans.push({ ...span, attributes: attributesOf(span.attributes) });
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    ...receiver,
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A finished call's record, for the tests that need no gateway. */
const sampleRecord = (overrides: Partial<CallRecord> = {}): CallRecord => ({
  time: Date.now(),
  keyId: 'k_sample',
  group: 'sample',
  dialect: 'anthropic',
  endpoint: 'messages',
  method: 'POST',
  path: '/v1/messages',
  model: 'claude-sonnet-4-5',
  upstream: 'anthropic',
  attempts: 1,
  stream: false,
  status: 200,
  outcome: 'complete',
  latencyMs: 12,
  requestBytes: 100,
  responseBytes: 200,
  inputTokens: 10,
  outputTokens: 5,
  costUsd: 0.0001,
  ...overrides,
});

// Content the client sends: none of it may reach a span.
const PROMPT_STREAM = 'tell me about the purple walrus 4411';
const PROMPT_JSON = 'what does the orange heron 9052 eat';
const PROMPT_REFUSED = 'draft a note about the green otter 7730';
const SESSION = 'session-telemetry-1';

describe('OpenTelemetry traces', () => {
  let receiver: Receiver;
  let fx: Fixture;
  const records: CallRecord[] = [];

  before(async () => {
    receiver = await startReceiver();
    const traces = await createTraceExporter({ endpoint: `${receiver.url}/v1/traces` });
    fx = await startFixture(
      {
        // A chat completion with cached prompt tokens, so the cache attributes carry a real count.
        override(req, res) {
          if (!req.url.startsWith('/v1/chat/completions')) return false;
          const body = JSON.stringify({
            id: 'chatcmpl-telemetry',
            object: 'chat.completion',
            created: 1_700_000_000,
            model: 'gpt-5.1',
            choices: [{ index: 0, message: { role: 'assistant', content: 'seeds' }, finish_reason: 'stop' }],
            usage: { prompt_tokens: 20, completion_tokens: 5, total_tokens: 25, prompt_tokens_details: { cached_tokens: 8 } },
          });
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
          res.end(body);
          return true;
        },
      },
      {
        onCall(record) {
          records.push(record);
          traces.onCall(record);
        },
      },
    );
    const key = await fx.gateway.mint({ group: 'observed', models: ['claude-sonnet-*', 'gpt-5*'] });
    const message = (prompt: string, model: string, stream: boolean) =>
      JSON.stringify({ model, max_tokens: 64, stream, messages: [{ role: 'user', content: prompt }] });

    const streamed = await request({
      socketPath: key.socketPath,
      path: '/v1/messages',
      headers: anthropicHeaders({ 'x-claude-code-session-id': SESSION }),
      body: message(PROMPT_STREAM, 'claude-sonnet-4-5', true),
    });
    assert.equal(streamed.status, 200);
    const json = await request({
      socketPath: key.socketPath,
      path: '/v1/chat/completions',
      headers: openaiHeaders(),
      body: JSON.stringify({ model: 'gpt-5.1', messages: [{ role: 'user', content: PROMPT_JSON }] }),
    });
    assert.equal(json.status, 200);
    const refused = await request({
      socketPath: key.socketPath,
      path: '/v1/messages',
      headers: anthropicHeaders(),
      body: message(PROMPT_REFUSED, 'claude-opus-4-1', false),
    });
    assert.equal(refused.status, 403);
    await eventually(() => records.length === 3);
    await traces.close();
  });

  after(async () => {
    await fx?.close();
    await receiver?.close();
  });

  test('one CLIENT span per call, with the GenAI attributes of its record', () => {
    assert.equal(receiver.spans.length, 3);
    assert.ok(receiver.paths.every((path) => path === '/v1/traces'));
    assert.equal(receiver.resources[0]!['service.name'], 'llm-socket-gateway');
    const [streamed, json, refused] = records as [CallRecord, CallRecord, CallRecord];
    assert.equal(json.cacheReadTokens, 8, 'the JSON call read cached tokens');
    for (const record of records) {
      const span = receiver.spans.find((candidate) => candidate.attributes['gen_ai.request.model'] === record.model);
      assert.ok(span, `a span for ${record.model}`);
      const a = span.attributes;
      assert.equal(span.name, `chat ${record.model}`);
      assert.equal(span.kind, 3, 'SPAN_KIND_CLIENT');
      assert.equal(a['gen_ai.operation.name'], 'chat');
      assert.equal(a['gen_ai.provider.name'], record.dialect);
      assert.equal(a['gen_ai.system'], record.dialect);
      assert.equal(a['gen_ai.response.model'], record.upstreamModel ?? record.model);
      assert.equal(a['gen_ai.usage.output_tokens'], record.outputTokens);
      assert.equal(a['gen_ai.usage.cache_read.input_tokens'], record.cacheReadTokens);
      assert.equal(
        a['gen_ai.usage.cache_creation.input_tokens'],
        record.cacheWriteTokens === undefined ? undefined : record.cacheWriteTokens + (record.cacheWrite1hTokens ?? 0),
      );
      // The convention's input count includes cached tokens; the record counts them apart.
      const input =
        record.inputTokens === undefined
          ? undefined
          : record.inputTokens + (record.cacheReadTokens ?? 0) + (record.cacheWriteTokens ?? 0) + (record.cacheWrite1hTokens ?? 0);
      assert.equal(a['gen_ai.usage.input_tokens'], input);
      assert.equal(a['http.response.status_code'], record.status);
      assert.equal(a['llm_gateway.key.id'], record.keyId);
      assert.equal(a['llm_gateway.group'], 'observed');
      assert.equal(a['llm_gateway.cost_usd'], record.costUsd);
      // Start and end are the record's arrival and its end, to the microsecond.
      const startMs = Number(BigInt(span.startTimeUnixNano) / 1000n) / 1000;
      const endMs = Number(BigInt(span.endTimeUnixNano) / 1000n) / 1000;
      assert.ok(Math.abs(startMs - record.time) < 0.01, `start ${startMs} vs ${record.time}`);
      assert.ok(Math.abs(endMs - startMs - record.latencyMs) < 0.01, `duration ${endMs - startMs} vs ${record.latencyMs}`);
    }
    const spanOf = (record: CallRecord) => receiver.spans.find((span) => span.attributes['gen_ai.request.model'] === record.model)!;
    assert.ok(streamed.stream && (streamed.outputTokens ?? 0) > 0);
    assert.equal(spanOf(streamed).attributes['gen_ai.request.stream'], true);
    assert.equal(spanOf(streamed).attributes['session.id'], SESSION);
    assert.equal(spanOf(json).attributes['gen_ai.usage.input_tokens'], 20, 'prompt tokens, cached included');
    assert.equal(spanOf(streamed).status?.code ?? 0, 0, 'unset status on success');
    assert.equal(spanOf(json).status?.code ?? 0, 0);

    assert.equal(refused.outcome, 'rejected');
    assert.equal(spanOf(refused).attributes['error.type'], 'model_not_allowed');
    assert.equal(spanOf(refused).attributes['http.response.status_code'], 403);
    assert.equal(spanOf(refused).status?.code, 2, 'STATUS_CODE_ERROR');
    assert.equal(spanOf(streamed).attributes['error.type'], undefined);
  });

  test('no prompt, no completion and no credential in what was exported', () => {
    const raw = receiver.bodies.join('\n');
    assert.ok(raw.length > 0);
    for (const secret of [
      PROMPT_STREAM,
      PROMPT_JSON,
      PROMPT_REFUSED,
      'seeds',
      'Hello through the gateway',
      REAL_ANTHROPIC_KEY,
      REAL_OPENAI_KEY,
      'placeholder-from-container',
    ]) {
      assert.ok(!raw.includes(secret), `${secret} must not be exported`);
    }
  });
});

describe('OpenTelemetry traces: configuration and failure', () => {
  test('OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS and OTEL_SERVICE_NAME are honoured', async () => {
    const receiver = await startReceiver();
    const names = ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_SERVICE_NAME'] as const;
    const saved = Object.fromEntries(names.map((name) => [name, process.env[name]]));
    try {
      delete process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
      process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url;
      process.env.OTEL_EXPORTER_OTLP_HEADERS = 'x-collector-tenant=team-a';
      process.env.OTEL_SERVICE_NAME = 'gateway-under-test';
      const traces = await createTraceExporter({});
      assert.equal(trace.getTracer('host').startSpan('probe').isRecording(), false, 'no global tracer provider was registered');
      traces.onCall(sampleRecord());
      // A git call is no GenAI operation: an HTTP span with the gateway's attributes only.
      traces.onCall(sampleRecord({ dialect: 'github', endpoint: 'git', path: '/git/o/r.git/git-upload-pack', model: undefined, upstream: undefined }));
      await traces.close();
      assert.equal(receiver.spans.length, 2);
      const git = receiver.spans.find((span) => span.attributes['llm_gateway.endpoint'] === 'git')!;
      assert.equal(git.name, 'POST git');
      assert.equal(git.attributes['gen_ai.operation.name'], undefined);
      assert.equal(git.attributes['gen_ai.provider.name'], undefined);
      assert.deepEqual(receiver.paths, ['/v1/traces'], 'the signal path is appended to the base endpoint (one batch)');
      assert.equal(receiver.headers[0]!['x-collector-tenant'], 'team-a');
      assert.equal(receiver.resources[0]!['service.name'], 'gateway-under-test');
      assert.ok(receiver.spans.some((span) => span.name === 'chat claude-sonnet-4-5'));
    } finally {
      for (const name of names) {
        if (saved[name] === undefined) delete process.env[name];
        else process.env[name] = saved[name];
      }
      await receiver.close();
    }
  });

  test('sampleRatio exports that share of the calls (and a ratio outside 0..1 is refused)', async () => {
    const receiver = await startReceiver();
    try {
      const none = await createTraceExporter({ endpoint: `${receiver.url}/v1/traces`, sampleRatio: 0 });
      for (let i = 0; i < 200; i++) none.onCall(sampleRecord());
      await none.close();
      assert.equal(receiver.spans.length, 0);
      const some = await createTraceExporter({ endpoint: `${receiver.url}/v1/traces`, sampleRatio: 0.25 });
      for (let i = 0; i < 400; i++) some.onCall(sampleRecord());
      await some.close();
      // Binomial(400, 0.25): mean 100, sd 8.7; these bounds are 5 sd out.
      assert.ok(receiver.spans.length > 56 && receiver.spans.length < 144, `${receiver.spans.length} of 400 sampled`);
      await assert.rejects(createTraceExporter({ sampleRatio: 1.5 }), /sampleRatio/);
    } finally {
      await receiver.close();
    }
  });

  test('a receiver that is down: onCall stays cheap and never throws, close() returns within its bound', async () => {
    const traces = await createTraceExporter({ endpoint: `http://127.0.0.1:${await deadPort()}/v1/traces` });
    const started = performance.now();
    for (let i = 0; i < 1000; i++) traces.onCall(sampleRecord({ keyId: `k_${i}` }));
    const perCallMs = (performance.now() - started) / 1000;
    const closing = performance.now();
    await traces.close();
    const closeMs = performance.now() - closing;
    assert.ok(perCallMs < 1, `onCall took ${perCallMs.toFixed(3)} ms each`);
    assert.ok(closeMs < 5500, `close() took ${closeMs.toFixed(0)} ms`);
    traces.onCall(sampleRecord());
    console.log(`onCall ${(perCallMs * 1000).toFixed(1)} µs each; close() with the receiver down ${closeMs.toFixed(0)} ms`);
  });
});
