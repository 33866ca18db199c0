// Claude model ids across Anthropic, Bedrock and Vertex: the published spellings, both directions, a
// round-trip property over generated names, and ids shaped to be slow.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { BEDROCK_PROFILE_PREFIXES, bedrockModelId, canonicalClaudeModel, vertexModelId } from '../src/wire/claude-models.ts';

describe('canonicalClaudeModel', () => {
  const cases: [string, string][] = [
    ['anthropic.claude-sonnet-4-5-20250929-v1:0', 'claude-sonnet-4-5-20250929'],
    ['anthropic.claude-haiku-4-5-20251001-v1:0', 'claude-haiku-4-5-20251001'],
    ['anthropic.claude-3-5-sonnet-20241022-v2:0', 'claude-3-5-sonnet-20241022'],
    ['anthropic.claude-opus-4-1-20250805-v1', 'claude-opus-4-1-20250805'],
    ['us.anthropic.claude-opus-5-5', 'claude-opus-5-5'],
    ['eu.anthropic.claude-sonnet-4-5-20250929-v1:0', 'claude-sonnet-4-5-20250929'],
    ['apac.anthropic.claude-sonnet-4-20250514-v1:0', 'claude-sonnet-4-20250514'],
    ['jp.anthropic.claude-haiku-4-5-20251001-v1:0', 'claude-haiku-4-5-20251001'],
    ['au.anthropic.claude-sonnet-4-5-20250929-v1:0', 'claude-sonnet-4-5-20250929'],
    ['us-gov.anthropic.claude-sonnet-4-5-20250929-v1:0', 'claude-sonnet-4-5-20250929'],
    ['global.anthropic.claude-opus-5-5', 'claude-opus-5-5'],
    ['arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0', 'claude-sonnet-4-5-20250929'],
    ['arn:aws:bedrock:eu-west-1::foundation-model/anthropic.claude-opus-4-1-20250805-v1:0', 'claude-opus-4-1-20250805'],
    ['arn:aws-us-gov:bedrock:us-gov-west-1:123456789012:inference-profile/us-gov.anthropic.claude-opus-5-5', 'claude-opus-5-5'],
    ['claude-sonnet-4-5@20250929', 'claude-sonnet-4-5-20250929'],
    ['claude-opus-4-1@20250805', 'claude-opus-4-1-20250805'],
    // Left alone: Anthropic names, other providers, ids naming no Claude model, malformed ones.
    ['claude-sonnet-4-5', 'claude-sonnet-4-5'],
    ['claude-sonnet-4-5-20250929', 'claude-sonnet-4-5-20250929'],
    ['gpt-5', 'gpt-5'],
    ['amazon.nova-pro-v1:0', 'amazon.nova-pro-v1:0'],
    ['meta.anthropic.claude-opus-5-5', 'meta.anthropic.claude-opus-5-5'],
    ['xx.anthropic.claude-opus-5-5', 'xx.anthropic.claude-opus-5-5'],
    ['us.anthropic.', 'us.anthropic.'],
    ['anthropic.claude-opus-5-5/../x', 'anthropic.claude-opus-5-5/../x'],
    [
      'arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3',
      'arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3',
    ],
    ['arn:aws:s3:::anthropic.claude-opus-5-5', 'arn:aws:s3:::anthropic.claude-opus-5-5'],
    ['arn:aws:bedrock', 'arn:aws:bedrock'],
    ['claude-sonnet-4-5@latest', 'claude-sonnet-4-5@latest'],
    ['claude-sonnet-4-5@2025092', 'claude-sonnet-4-5@2025092'],
    ['gpt@20250929', 'gpt@20250929'],
    ['', ''],
  ];
  for (const [id, name] of cases) test(`${id || "''"} -> ${name || "''"}`, () => assert.equal(canonicalClaudeModel(id), name));

  test('an id over 256 characters is returned unchanged, however it looks', () => {
    const long = `us.anthropic.claude-${'a'.repeat(240)}-20250929-v1:0`;
    assert.ok(long.length > 256);
    assert.equal(canonicalClaudeModel(long), long);
  });

  test('hostile ids return fast', () => {
    const hostile = [
      `${'-v1'.repeat(300_000)}:`,
      `anthropic.claude-${'-v'.repeat(500_000)}`,
      `arn:${':'.repeat(1_000_000)}`,
      `${'us.'.repeat(85)}anthropic.claude-x`,
      `anthropic.claude-${'-v1:'.repeat(60)}0`,
      `claude-${'@'.repeat(240)}`,
    ];
    const started = process.hrtime.bigint();
    for (let round = 0; round < 1000; round++) for (const id of hostile) canonicalClaudeModel(id);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    assert.ok(ms < 1000, `6000 hostile ids took ${ms} ms`);
    assert.equal(canonicalClaudeModel(hostile[3]!), hostile[3]);
  });
});

describe('bedrockModelId', () => {
  const cases: [string, string | undefined, string][] = [
    ['claude-sonnet-4-5-20250929', 'us', 'us.anthropic.claude-sonnet-4-5-20250929-v1:0'],
    ['claude-sonnet-4-5-20250929', undefined, 'anthropic.claude-sonnet-4-5-20250929-v1:0'],
    ['claude-opus-5-5', 'us', 'us.anthropic.claude-opus-5-5'],
    ['claude-opus-5-5', 'global', 'global.anthropic.claude-opus-5-5'],
    ['claude-haiku-4-5-20251001', 'eu', 'eu.anthropic.claude-haiku-4-5-20251001-v1:0'],
    ['claude-opus-4-1@20250805', 'us', 'us.anthropic.claude-opus-4-1-20250805-v1:0'],
    // Already Bedrock's: unchanged, whatever the prefix asked for.
    ['us.anthropic.claude-opus-5-5', 'eu', 'us.anthropic.claude-opus-5-5'],
    ['anthropic.claude-sonnet-4-5-20250929-v1:0', 'us', 'anthropic.claude-sonnet-4-5-20250929-v1:0'],
    [
      'arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3',
      'us',
      'arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3',
    ],
    // Not a Claude name: nothing to spell.
    ['gpt-5', 'us', 'gpt-5'],
    ['amazon.nova-pro-v1:0', undefined, 'amazon.nova-pro-v1:0'],
  ];
  for (const [name, prefix, id] of cases) test(`${name} (${prefix ?? 'no profile'}) -> ${id}`, () => assert.equal(bedrockModelId(name, prefix), id));
});

describe('vertexModelId', () => {
  const cases: [string, string][] = [
    ['claude-sonnet-4-5-20250929', 'claude-sonnet-4-5@20250929'],
    ['claude-opus-4-1-20250805', 'claude-opus-4-1@20250805'],
    ['claude-opus-5-5', 'claude-opus-5-5'],
    ['claude-sonnet-4-5@20250929', 'claude-sonnet-4-5@20250929'],
    ['us.anthropic.claude-sonnet-4-5-20250929-v1:0', 'claude-sonnet-4-5@20250929'],
    ['global.anthropic.claude-opus-5-5', 'claude-opus-5-5'],
    ['gpt-5', 'gpt-5'],
  ];
  for (const [name, id] of cases) test(`${name} -> ${id}`, () => assert.equal(vertexModelId(name), id));
});

describe('round trips', () => {
  const digits = (min: number, max: number) => fc.integer({ min, max }).map(String);
  const date = fc
    .date({ min: new Date('2023-01-01'), max: new Date('2099-12-31'), noInvalidDate: true })
    .map((d) => d.toISOString().slice(0, 10).replaceAll('-', ''));
  const tier = fc.constantFrom('opus', 'sonnet', 'haiku');
  // Both generations of naming: `claude-sonnet-4-5[-DATE]` and `claude-3-5-sonnet[-DATE]`.
  const version = fc
    .tuple(digits(1, 99), fc.option(digits(0, 99), { nil: undefined }))
    .map(([major, minor]) => (minor === undefined ? major : `${major}-${minor}`));
  const anthropicName = fc
    .tuple(fc.boolean(), tier, version, fc.option(date, { nil: undefined }))
    .map(([newStyle, family, v, day]) => `claude-${newStyle ? `${family}-${v}` : `${v}-${family}`}${day === undefined ? '' : `-${day}`}`);
  const prefix = fc.option(fc.constantFrom(...BEDROCK_PROFILE_PREFIXES), { nil: undefined });

  test('canonicalClaudeModel(bedrockModelId(x, p)) === x', () => {
    fc.assert(
      fc.property(anthropicName, prefix, (name, p) => {
        const id = bedrockModelId(name, p);
        assert.equal(id.endsWith('-v1:0'), /-\d{8}$/.test(name), id);
        assert.equal(canonicalClaudeModel(id), name);
        assert.equal(canonicalClaudeModel(`arn:aws:bedrock:us-east-1:123456789012:inference-profile/${id}`), name);
      }),
      { numRuns: 2000 },
    );
  });

  test('canonicalClaudeModel(vertexModelId(x)) === x', () => {
    fc.assert(
      fc.property(anthropicName, (name) => {
        assert.equal(canonicalClaudeModel(vertexModelId(name)), name);
        assert.equal(vertexModelId(bedrockModelId(name, 'us')), vertexModelId(name));
      }),
      { numRuns: 2000 },
    );
  });
});
