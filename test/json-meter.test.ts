// The JSON meter's fast path (issue 20): the root object's `usage` is read from the body's tail when
// it is a member of the root, as every API sends it; anything else parses the whole body. Whichever
// way, the meter must charge the usage JSON.parse finds at the root, however the body is cut, and
// never one nested deeper or written inside a string.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { createUsageMeter, type MeteredUsage } from '../src/metering/usage.ts';
import type { Endpoint } from '../src/wire/endpoints.ts';

const ENDPOINTS: Endpoint[] = ['messages', 'chat_completions', 'responses'];

function meter(endpoint: Endpoint, body: string, cuts: number[] = []): MeteredUsage | undefined {
  const bytes = Buffer.from(body);
  const usageMeter = createUsageMeter(endpoint, false)!;
  let at = 0;
  for (const cut of cuts.map((c) => c % (bytes.length + 1)).sort((a, b) => a - b)) {
    usageMeter.push(bytes.subarray(at, Math.max(at, cut)));
    at = Math.max(at, cut);
  }
  usageMeter.push(bytes.subarray(at));
  return usageMeter.result();
}

/** What the meter must find: the root's `usage` as JSON.parse reads it (the last of duplicates). */
function expected(endpoint: Endpoint, body: string): MeteredUsage | undefined {
  const root = JSON.parse(body) as unknown;
  if (root === null || typeof root !== 'object' || Array.isArray(root) || !('usage' in root)) return undefined;
  return meter(endpoint, JSON.stringify({ usage: (root as { usage: unknown }).usage }));
}

const tokens = fc.record({ input_tokens: fc.nat(10_000), output_tokens: fc.nat(10_000), prompt_tokens: fc.nat(10_000), completion_tokens: fc.nat(10_000) });
// Values that hide usage-like keys deeper down, and strings that spell the key out.
const noise = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.string(),
    fc.constantFrom('"usage":{"input_tokens":999}}', '\\"usage\\":', 'usage'),
    fc.integer(),
    fc.constant(null),
    fc.array(tie('value'), { maxLength: 3 }),
    fc.dictionary(fc.constantFrom('usage', 'input', 'content', 'metadata', 'x'), tie('value'), { maxKeys: 3 }),
    tokens.map((usage) => ({ usage })),
  ),
})).value;

describe('JSON meter', () => {
  test('charges the usage JSON.parse finds at the root, wherever it sits, however the body is cut', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...ENDPOINTS),
        fc.array(fc.tuple(fc.constantFrom('id', 'content', 'metadata', 'stop_reason', 'usage', 'service_tier'), noise), { maxLength: 5 }),
        fc.option(tokens, { nil: undefined }),
        fc.constantFrom(0, 2),
        fc.array(fc.nat(), { maxLength: 4 }),
        (endpoint, members, usage, indent, cuts) => {
          // Members in order, duplicates kept (JSON.parse keeps the last), the real usage anywhere.
          const parts = members.map(([key, value]) => `${JSON.stringify(key)}:${JSON.stringify(value, null, indent)}`);
          if (usage) parts.splice(parts.length === 0 ? 0 : cuts.length % (parts.length + 1), 0, `"usage":${JSON.stringify(usage, null, indent)}`);
          const body = `{${parts.join(indent ? ',\n' : ',')}}`;
          assert.deepEqual(meter(endpoint, body, cuts), expected(endpoint, body));
        },
      ),
      { numRuns: 2000 },
    );
  });

  test('reads an Anthropic message from its tail, and never a usage inside its tool input', () => {
    const body = JSON.stringify({
      id: 'msg_1',
      type: 'message',
      content: [{ type: 'tool_use', id: 't', name: 'report', input: { usage: { input_tokens: 1, output_tokens: 1 } } }],
      stop_reason: 'tool_use',
      usage: { input_tokens: 1200, output_tokens: 80 },
    });
    assert.deepEqual({ input: meter('messages', body)?.usage.inputTokens, output: meter('messages', body)?.usage.outputTokens }, { input: 1200, output: 80 });
    // A usage only inside the tool input is no usage at all.
    const nestedOnly = JSON.stringify({ id: 'msg_2', content: [{ type: 'tool_use', input: { usage: { input_tokens: 5 } } }] });
    assert.equal(meter('messages', nestedOnly), undefined);
  });

  test('an OpenAI completion with members after its usage is parsed whole', () => {
    const body = JSON.stringify(
      {
        id: 'c',
        choices: [{ message: { content: '"usage":{"prompt_tokens":1}}' } }],
        usage: { prompt_tokens: 30, completion_tokens: 7 },
        service_tier: 'default',
        metadata: { usage: 'x' },
      },
      null,
      2,
    );
    const result = meter('chat_completions', body);
    assert.equal(result?.usage.inputTokens, 30);
    assert.equal(result?.usage.outputTokens, 7);
  });
});
