// Usage parsers on recorded streams of each API, fed in arbitrary chunk sizes, and the price table.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { askForStreamUsage, UsageChunkRemover } from '../src/metering/include-usage.ts';
import { costOf, DEFAULT_PRICES, Pricing } from '../src/metering/pricing.ts';
import { createUsageMeter, type MeteredUsage } from '../src/metering/usage.ts';
import type { Endpoint } from '../src/wire/endpoints.ts';

const fixture = (name: string): Buffer => readFileSync(new URL(`fixtures/${name}`, import.meta.url));

/** Feeds `bytes` to a meter in chunks of every size from 1 byte up, to catch split events and characters. */
function meter(endpoint: Endpoint, streaming: boolean, bytes: Buffer, chunkSize = 0): MeteredUsage | undefined {
  const usageMeter = createUsageMeter(endpoint, streaming)!;
  const size = chunkSize || bytes.length;
  for (let at = 0; at < bytes.length; at += size) usageMeter.push(bytes.subarray(at, at + size));
  return usageMeter.result();
}

const pricing = new Pricing(DEFAULT_PRICES);
const usd = (value: number) => Math.round(value * 1e9) / 1e9;

describe('usage from recorded responses', () => {
  test('Anthropic stream with prompt-cache writes: 5m and 1h writes are separate line items', () => {
    for (const chunkSize of [0, 1, 7, 64]) {
      const result = meter('messages', true, fixture('anthropic-stream-cache-write.sse'), chunkSize)!;
      assert.equal(result.reported, true);
      assert.deepEqual(result.usage, {
        inputTokens: 4,
        outputTokens: 97,
        cacheWriteTokens: 2210,
        cacheWrite1hTokens: 16024,
        cacheReadTokens: 0,
        reasoningTokens: 0,
        webSearchRequests: 0,
        webFetchRequests: 0,
      });
    }
    const { usage } = meter('messages', true, fixture('anthropic-stream-cache-write.sse'))!;
    const price = pricing.lookup('claude-sonnet-4-5-20250929')!;
    // 4 x $3 + 97 x $15 + 2210 x $3.75 + 16024 x $6, per million tokens.
    assert.equal(usd(costOf(usage, price.price)), 0.1058985);
  });

  test('Anthropic stream with a cache hit: reads are kept from message_start, output from message_delta', () => {
    for (const chunkSize of [0, 1, 13]) {
      const { usage, reported } = meter('messages', true, fixture('anthropic-stream-cache-read.sse'), chunkSize)!;
      assert.equal(reported, true);
      assert.equal(usage.inputTokens, 312);
      assert.equal(usage.cacheReadTokens, 18234);
      assert.equal(usage.cacheWriteTokens + usage.cacheWrite1hTokens, 0);
      assert.equal(usage.outputTokens, 9);
    }
    const { usage } = meter('messages', true, fixture('anthropic-stream-cache-read.sse'))!;
    assert.equal(usd(costOf(usage, pricing.lookup('claude-sonnet-4-5-20250929')!.price)), 0.0065412);
  });

  test('Anthropic JSON message', () => {
    const { usage } = meter('messages', false, fixture('anthropic-message.json'), 5)!;
    assert.deepEqual([usage.inputTokens, usage.cacheReadTokens, usage.outputTokens], [1103, 2048, 8]);
    assert.equal(usd(costOf(usage, pricing.lookup('claude-haiku-4-5-20251001')!.price)), 0.0013478);
  });

  test('a JSON answer larger than a megabyte: usage is read from its tail', () => {
    const text = `{"id":"msg_1","type":"message","content":[{"type":"text","text":"${'y'.repeat(3 * 1024 * 1024)}"}],"stop_reason":"end_turn","usage":{"input_tokens":7,"cache_read_input_tokens":3,"output_tokens":900000}}`;
    const { usage, reported } = meter('messages', false, Buffer.from(text), 64 * 1024)!;
    assert.equal(reported, true);
    assert.deepEqual([usage.inputTokens, usage.cacheReadTokens, usage.outputTokens], [7, 3, 900000]);
  });

  test('a stream cut short is charged for what was delivered', () => {
    const full = fixture('anthropic-stream-cache-write.sse').toString();
    const cut = Buffer.from(full.slice(0, full.indexOf('event: content_block_stop\ndata: {"type":"content_block_stop","index":1}')));
    const { usage, reported } = meter('messages', true, cut, 3)!;
    assert.equal(reported, false);
    assert.equal(usage.cacheWrite1hTokens, 16024, 'input known from message_start is kept');
    const delivered = "The user wants the tests run. I'll use Bash.".length + "I'll run the test suite.".length;
    assert.equal(usage.outputTokens, Math.ceil(delivered / 4));
  });

  test('OpenAI chat stream: cached prompt tokens are priced as cache reads, not twice', () => {
    for (const chunkSize of [0, 1, 50]) {
      const { usage } = meter('chat_completions', true, fixture('openai-chat-stream.sse'), chunkSize)!;
      assert.deepEqual([usage.inputTokens, usage.cacheReadTokens, usage.outputTokens], [102, 2304, 3]);
    }
    const { usage } = meter('chat_completions', true, fixture('openai-chat-stream.sse'))!;
    assert.equal(usd(costOf(usage, pricing.lookup('gpt-4o-mini-2024-07-18')!.price)), 0.0001899);
  });

  test('OpenAI Responses stream: cached input and reasoning tokens', () => {
    const { usage, reported } = meter('responses', true, fixture('openai-responses-stream.sse'), 11)!;
    assert.equal(reported, true);
    assert.deepEqual([usage.inputTokens, usage.cacheReadTokens, usage.outputTokens, usage.reasoningTokens], [288, 8832, 412, 384]);
    assert.equal(usd(costOf(usage, pricing.lookup('gpt-5-codex')!.price)), 0.005584);
  });

  test('count_tokens and models are not metered', () => {
    assert.equal(createUsageMeter('count_tokens', false), undefined);
    assert.equal(createUsageMeter('models', false), undefined);
  });
});

describe('prices', () => {
  test('dated snapshots and variants match their family; longer names keep their own entry', () => {
    const cases: [string, string | undefined][] = [
      ['claude-sonnet-4-5-20250929', 'claude-sonnet-4-5'],
      ['claude-opus-4-20250514', 'claude-opus-4'],
      ['claude-opus-4-1-20250805', 'claude-opus-4-1'],
      ['claude-3-5-haiku-latest', 'claude-3-5-haiku'],
      ['gpt-4o-mini-2024-07-18', 'gpt-4o-mini'],
      ['gpt-4o-2024-08-06', 'gpt-4o'],
      ['gpt-5.1-codex', 'gpt-5.1-codex'],
      ['gpt-5-pro-2025-10-06', 'gpt-5-pro'],
      ['o3-pro', 'o3-pro'],
      ['gpt-5-ultra', undefined],
      ['gpt-5.3', undefined],
      ['GPT-5-MINI', 'gpt-5-mini'],
      ['o3-mini', 'o3-mini'],
      ['claude-opus-5-5', 'claude-opus'],
      ['claude-sonnet-5-20261015', 'claude-sonnet'],
      ['gpt-6.2-sol', undefined],
      ['gpt-4oz', undefined],
      ['llama-3.1-70b', undefined],
    ];
    const strict = new Pricing(DEFAULT_PRICES);
    for (const [model, entry] of cases) assert.equal(strict.lookup(model)?.entry, entry, model);
  });

  test("Bedrock and Vertex ids take their Anthropic name's entry and price", () => {
    const cases: [string, string, number, number][] = [
      // From the 4.5 releases on, Bedrock's regional and geographic profiles list 10% above global.
      ['us.anthropic.claude-sonnet-4-5-20250929-v1:0', 'claude-sonnet-4-5 (regional)', 3.3, 16.5],
      ['anthropic.claude-haiku-4-5-20251001-v1:0', 'claude-haiku-4-5 (regional)', 1.1, 5.5],
      ['global.anthropic.claude-sonnet-4-5-20250929-v1:0', 'claude-sonnet-4-5', 3, 15],
      ['us.anthropic.claude-sonnet-4-20250514-v1:0', 'claude-sonnet-4', 3, 15],
      ['global.anthropic.claude-opus-5-5', 'claude-opus', 5, 25],
      ['arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-opus-4-1-20250805-v1:0', 'claude-opus-4-1', 15, 75],
      ['arn:aws:bedrock:us-west-2::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0', 'claude-3-5-haiku', 0.8, 4],
      ['claude-opus-4-1@20250805', 'claude-opus-4-1', 15, 75],
      ['claude-sonnet-4-5@20250929', 'claude-sonnet-4-5', 3, 15],
    ];
    const strict = new Pricing(DEFAULT_PRICES);
    for (const [model, entry, input, output] of cases) {
      const match = strict.lookup(model);
      const rounded = (usd: number | undefined) => (usd === undefined ? undefined : Math.round(usd * 1e6) / 1e6);
      assert.deepEqual([match?.source, match?.entry, rounded(match?.price.input), rounded(match?.price.output)], ['table', entry, input, output], model);
    }
    // An exact entry for a platform id wins over its Anthropic name's.
    const configured = new Pricing({ ...DEFAULT_PRICES, 'us.anthropic.claude-opus-5-5': { input: 6, output: 30 } });
    assert.equal(configured.lookup('us.anthropic.claude-opus-5-5')?.price.input, 6);
    assert.equal(configured.lookup('eu.anthropic.claude-opus-5-5')?.price.input, 5.5);
    // Ids that name no known model stay unknown: an application inference profile, another vendor's.
    assert.equal(strict.lookup('arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3'), undefined);
    assert.equal(strict.lookup('us.amazon.nova-pro-v1:0'), undefined);
  });

  test('unknown models: refused without a default price, charged and flagged with one', () => {
    assert.equal(new Pricing(DEFAULT_PRICES).lookup('mystery-model'), undefined);
    const lenient = new Pricing(DEFAULT_PRICES, { input: 15, output: 75 });
    const match = lenient.lookup('mystery-model')!;
    assert.equal(match.source, 'default');
    assert.equal(match.price.cacheRead, 1.5);
  });

  test("the clients' default models (docs/clients.md): claude-opus-5-5 by its family entry, gpt-6.2-sol unknown", () => {
    const lenient = new Pricing(DEFAULT_PRICES, { input: 15, output: 75 });
    const opus = lenient.lookup('claude-opus-5-5')!;
    assert.deepEqual([opus.source, opus.entry, opus.price.input, opus.price.output, opus.price.maxOutputTokens], ['table', 'claude-opus', 5, 25, 64_000]);
    const codex = lenient.lookup('gpt-6.2-sol')!;
    assert.deepEqual([codex.source, codex.entry, codex.price.input, codex.price.output], ['default', undefined, 15, 75]);
    const strict = new Pricing(DEFAULT_PRICES);
    assert.equal(strict.lookup('claude-opus-5-5')?.entry, 'claude-opus', 'deny does not refuse it');
    assert.equal(strict.lookup('gpt-6.2-sol'), undefined, 'deny refuses it');
  });
});

describe('chat stream usage on the client behalf', () => {
  test('the request asks for usage by splicing, keeping every other byte', () => {
    const body = Buffer.from('{"model":"gpt-4o-mini", "stream":true,\n"messages":[]}\n');
    const asked = askForStreamUsage(body, { stream: true })!;
    assert.equal(asked.toString(), '{"model":"gpt-4o-mini", "stream":true,\n"messages":[],"stream_options":{"include_usage":true}}\n');
    assert.equal(askForStreamUsage(body, { stream: false }), undefined);
  });

  test('stream_options the client sent is merged with include_usage, never left without it', () => {
    const cases: [string, unknown, string][] = [
      ['{}', {}, '{"include_usage":true}'],
      ['null', null, '{"include_usage":true}'],
      ['{"include_usage":false}', { include_usage: false }, '{"include_usage":true}'],
      ['{"include_obfuscation":false}', { include_obfuscation: false }, '{"include_obfuscation":false,"include_usage":true}'],
    ];
    for (const [sent, parsed, merged] of cases) {
      const body = Buffer.from(`{"model":"gpt-5", "stream":true, "stream_options":${sent}, "messages":[]}`);
      const asked = askForStreamUsage(body, { stream: true, streamOptions: parsed })!;
      assert.equal(asked.toString(), `{"model":"gpt-5", "stream":true, "stream_options":${merged}, "messages":[]}`);
    }
    // The client asked itself: nothing to change, and its usage chunk is its own.
    const body = Buffer.from('{"stream":true,"stream_options":{"include_usage":true}}');
    assert.equal(askForStreamUsage(body, { stream: true, streamOptions: { include_usage: true } }), undefined);
  });

  test('the usage-only chunk is removed from the stream, everything else passes unchanged', () => {
    const stream = fixture('openai-chat-stream.sse');
    for (const chunkSize of [stream.length, 1, 33]) {
      const remover = new UsageChunkRemover();
      const parts: Buffer[] = [];
      for (let at = 0; at < stream.length; at += chunkSize) parts.push(remover.push(stream.subarray(at, at + chunkSize)));
      parts.push(remover.flush());
      const out = Buffer.concat(parts).toString();
      const expected = stream
        .toString()
        .split('\n\n')
        .filter((event) => !event.includes('"choices":[],"usage"'))
        .join('\n\n');
      assert.equal(out, expected);
      assert.ok(out.endsWith('data: [DONE]\n\n'));
    }
  });
});
