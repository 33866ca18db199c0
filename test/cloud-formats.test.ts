// Claude on Bedrock, Vertex and Foundry end to end, in-process: a key's real Unix socket, a gateway
// with providers of each kind on loopback stand-ins (SigV4 checked, Google tokens minted by a token
// endpoint for a generated service account), every client format to every upstream kind that serves
// it, each asserted on what the client got and what the upstream received; then metering, counting
// tokens, errors in the client's shape, credentials never leaking, model discovery, hostile input.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { KeyInfo } from '../src/index.ts';
import { encodeChunkMessage, encodeExceptionMessage } from '../src/wire/eventstream.ts';
import {
  chunkMessage,
  decodeBedrockStream,
  defaultScript,
  STANDIN_USAGE,
  startBedrockStandin,
  thinkingScript,
  TRICKY_SIGNATURE,
} from './support/bedrock-standin.ts';
import {
  AWS_ACCESS_KEY_ID,
  AWS_SECRET,
  AWS_SESSION_TOKEN,
  type Answer,
  BEDROCK_REGION,
  type CloudGateway,
  type CloudUpstreams,
  call,
  rawCall,
  rawStatus,
  startCloudGateway,
  startCloudUpstreams,
  VERTEX_PROJECT,
  VERTEX_REGION,
} from './support/cloud-fixture.ts';
import { STANDIN_REPLY, type Standin, startStandin } from '../src/dev/standin.ts';
import { REAL_ANTHROPIC_KEY } from './support/fixture.ts';
import { createServiceAccount } from './support/google-token.ts';
import { THINKING_SIGNATURE_JSON, VERTEX_USAGE } from './support/vertex-standin.ts';

const BEDROCK_ID = 'us.anthropic.claude-sonnet-4-5-20250929-v1:0';
const VERTEX_ID = 'claude-sonnet-4-5@20250929';
const ANTHROPIC_ID = 'claude-sonnet-4-5-20250929';

// Odd spacing and an escape a re-serialiser would change: "unchanged" is checked byte for byte.
const bedrockBody = (extra = '') =>
  `{ "anthropic_version" : "bedrock-2023-05-31", "anthropic_beta": ["context-1m-2025-08-07"], "max_tokens": 100,${extra} "messages": [{"role":"user","content":"hi \\u2028 there"}] }`;
const vertexBody = (stream: boolean) =>
  `{"anthropic_version":"vertex-2023-10-16",  "max_tokens":100,"messages":[{"role":"user","content":"hi \\/ vertex"}]${stream ? ',"stream":true' : ''}}`;
const messagesBody = (model: string, stream: boolean) =>
  `{"model":${JSON.stringify(model)},"max_tokens":100,${stream ? '"stream":true,' : ''}"messages":[{"role":"user","content":"hi  messages"}]}`;

const bedrockPath = (id: string, op: string) => `/model/${id}/${op}`;
const vertexClientPath = (id: string, method: string) => `/v1/projects/gateway-placeholder/locations/us-east5/publishers/anthropic/models/${id}:${method}`;
const messagesHeaders = (extra: Record<string, string> = {}) => ({ 'anthropic-version': '2023-06-01', 'x-api-key': 'placeholder', ...extra });

const json = (answer: Answer) => JSON.parse(answer.body.toString('utf8')) as Record<string, unknown>;
const lastOf = <T>(list: T[]): T => list.at(-1)!;

/** The `data:` payloads of an SSE body, each exactly as sent. */
function sseDataLines(body: Buffer): string[] {
  return body
    .toString('utf8')
    .split('\n')
    .filter((line) => line.startsWith('data: '))
    .map((line) => line.slice(6));
}

/** The SSE event names of a body. */
function sseEventNames(body: Buffer): string[] {
  return body
    .toString('utf8')
    .split('\n')
    .filter((line) => line.startsWith('event: '))
    .map((line) => line.slice(7));
}

/** The data of each SSE event of a body, exactly as sent (multi-line data is not used by the stand-ins). */
const vertexStreamData = (stream: Buffer) => sseDataLines(stream);

/** Everything any client got, and every gateway's records: the last test looks for secrets in them. */
const clientsGot: Answer[] = [];
const gateways: CloudGateway[] = [];
async function send(...args: Parameters<typeof call>): Promise<Answer> {
  const answer = await call(...args);
  clientsGot.push(answer);
  return answer;
}

let up: CloudUpstreams;
before(async () => {
  up = await startCloudUpstreams();
});
after(() => up.close());

/** A gateway over the three stand-ins with `routes`, and a key on it. */
async function gatewayWith(options: Parameters<typeof startCloudGateway>[0] = {}, mint: Record<string, unknown> = {}) {
  const gw = await startCloudGateway({ providers: up.providers(), ...options });
  gateways.push(gw);
  const key = await gw.gateway.mint({ group: 'cloud', ...mint });
  return { gw, key };
}

/** Checks the record of the last call: tokens, a cost, the model as the client and the upstream spelled it. */
async function lastRecord(gw: CloudGateway, count: number) {
  // The record is reported when the response has ended, which is before the client's 'end' event.
  assert.equal(gw.calls.length, count, 'one record per call');
  return lastOf(gw.calls);
}

describe('every client format to every upstream kind', () => {
  let own: { gw: CloudGateway; key: KeyInfo };
  let toBedrock: { gw: CloudGateway; key: KeyInfo };
  let toVertex: { gw: CloudGateway; key: KeyInfo };
  let toAnthropic: { gw: CloudGateway; key: KeyInfo };
  before(async () => {
    own = await gatewayWith();
    toBedrock = await gatewayWith({ routes: [{ models: ['claude-*'], provider: 'bedrock' }] });
    toVertex = await gatewayWith({ routes: [{ models: ['claude-*'], provider: 'vertex' }] });
    toAnthropic = await gatewayWith({ routes: [{ models: ['claude-*'], provider: 'anthropic' }] });
  });
  after(() => Promise.all([own, toBedrock, toVertex, toAnthropic].map(({ gw }) => gw.close())));

  test('Bedrock client -> Bedrock: body bytes unchanged, SigV4 valid, JSON relayed, metered at the Anthropic name', async () => {
    const { gw, key } = own;
    const seen = up.bedrock.seen.length;
    const body = bedrockBody();
    const answer = await send(key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke'), body, {
      authorization: 'Bearer container-junk',
      'x-amz-security-token': 'container-token',
      'x-amz-date': '20000101T000000Z',
    });
    assert.equal(answer.status, 200, answer.body.toString());
    assert.equal(json(answer).model, BEDROCK_ID);
    const got = up.bedrock.seen[seen]!;
    assert.equal(up.bedrock.seen.length, seen + 1);
    assert.equal(got.auth, 'sigv4');
    assert.equal(got.accessKeyId, AWS_ACCESS_KEY_ID);
    assert.equal(got.path, `/model/${BEDROCK_ID}/invoke`);
    assert.equal(got.body.toString(), body);
    assert.notEqual(got.headers['x-amz-date'], '20000101T000000Z');
    assert.equal(got.headers['x-amz-security-token'], AWS_SESSION_TOKEN);
    assert.doesNotMatch(String(got.headers.authorization), /container-junk/);
    const record = await lastRecord(gw, 1);
    assert.equal(record.model, BEDROCK_ID);
    assert.equal(record.upstream, 'bedrock');
    assert.equal(record.inputTokens, STANDIN_USAGE.input_tokens);
    assert.equal(record.outputTokens, STANDIN_USAGE.output_tokens);
    assert.equal(record.cacheReadTokens, STANDIN_USAGE.cache_read_input_tokens);
    assert.equal(record.cacheWriteTokens, STANDIN_USAGE.cache_creation_input_tokens);
    assert.ok(record.costUsd > 0);
    // A geographic profile (`us.`): Bedrock's regional premium.
    assert.equal(record.priceEntry, 'claude-sonnet-4-5 (regional)');
  });

  test('Bedrock client -> Bedrock, streamed: the event stream relayed byte for byte, metered', async () => {
    const { gw, key } = own;
    up.bedrock.script = thinkingScript;
    try {
      const answer = await send(key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke-with-response-stream'), bedrockBody());
      assert.equal(answer.status, 200);
      assert.match(String(answer.headers['content-type']), /application\/vnd\.amazon\.eventstream/);
      const expected = Buffer.concat(up.bedrock.lastStreamEvents.map((event) => chunkMessage(event)));
      assert.ok(answer.body.equals(expected), 'the client got the upstream event stream byte for byte');
      assert.equal(lastOf(up.bedrock.seen).path, `/model/${BEDROCK_ID}/invoke-with-response-stream`);
      assert.equal(lastOf(up.bedrock.seen).auth, 'sigv4');
      const record = await lastRecord(gw, 2);
      assert.equal(record.stream, true);
      assert.equal(record.inputTokens, STANDIN_USAGE.input_tokens);
      assert.equal(record.outputTokens, STANDIN_USAGE.output_tokens);
      assert.equal(record.cacheReadTokens, STANDIN_USAGE.cache_read_input_tokens);
      assert.ok(record.costUsd > 0);
    } finally {
      up.bedrock.script = defaultScript;
    }
  });

  for (const stream of [false, true]) {
    test(`Bedrock client -> Messages API${stream ? ', streamed' : ''}: model (and stream) spliced in, anthropic_version gone, anthropic_beta in the header`, async () => {
      const { gw, key } = toAnthropic;
      const before = up.anthropic.requests.length;
      const answer = await send(key.socketPath, 'POST', bedrockPath(BEDROCK_ID, stream ? 'invoke-with-response-stream' : 'invoke'), bedrockBody(), {
        'anthropic-version': '2023-06-01',
      });
      assert.equal(answer.status, 200, answer.body.toString());
      const got = up.anthropic.requests[before]!;
      assert.equal(got.url, '/v1/messages');
      assert.equal(got.headers['x-api-key'], REAL_ANTHROPIC_KEY);
      assert.equal(got.headers['anthropic-beta'], 'context-1m-2025-08-07');
      const sent = JSON.parse(got.body.toString()) as Record<string, unknown>;
      assert.equal(sent.model, ANTHROPIC_ID);
      assert.equal('anthropic_version' in sent, false);
      assert.equal('anthropic_beta' in sent, false);
      assert.equal(sent.stream, stream ? true : undefined);
      assert.match(got.body.toString(), /"hi \\u2028 there"/, 'the messages are the client bytes');
      if (stream) {
        assert.match(String(answer.headers['content-type']), /application\/vnd\.amazon\.eventstream/);
        const decoded = decodeBedrockStream(answer.body);
        const types = decoded.events.map((event) => event.type);
        assert.deepEqual([types[0], types.at(-1)], ['message_start', 'message_stop']);
        assert.ok(types.includes('ping') && types.includes('message_delta'));
        const text = decoded.events.map((event) => (event.delta as { text?: string } | undefined)?.text ?? '').join('');
        assert.equal(text, STANDIN_REPLY);
      } else {
        assert.equal(json(answer).type, 'message');
      }
      const record = lastOf(gw.calls);
      assert.equal(record.model, BEDROCK_ID);
      assert.equal(record.upstream, 'anthropic');
      assert.equal(record.upstreamModel, ANTHROPIC_ID);
      assert.ok((record.inputTokens ?? 0) > 0 && (record.outputTokens ?? 0) > 0);
      assert.ok(record.costUsd > 0);
    });
  }

  for (const stream of [false, true]) {
    test(`Bedrock client -> Vertex${stream ? ', streamed' : ''}: the configured project and region, vertex-2023-10-16, a Google token`, async () => {
      const { gw, key } = toVertex;
      const before = up.vertex.seen.length;
      const answer = await send(key.socketPath, 'POST', bedrockPath(BEDROCK_ID, stream ? 'invoke-with-response-stream' : 'invoke'), bedrockBody());
      assert.equal(answer.status, 200, answer.body.toString());
      const got = up.vertex.seen[before]!;
      assert.equal(got.authOk, true);
      assert.equal(got.path, up.vertex.modelPath(VERTEX_ID, stream ? 'streamRawPredict' : 'rawPredict'));
      assert.equal(got.headers['anthropic-beta'], 'context-1m-2025-08-07');
      const sent = JSON.parse(got.body.toString()) as Record<string, unknown>;
      assert.equal(sent.anthropic_version, 'vertex-2023-10-16');
      assert.equal('anthropic_beta' in sent, false);
      assert.equal('model' in sent, false);
      if (stream) {
        const decoded = decodeBedrockStream(answer.body);
        assert.deepEqual(decoded.eventBytes.map(String), vertexStreamData(up.vertex.lastStream!), 'each chunk carries the SSE data bytes unchanged');
        assert.ok(
          decoded.eventBytes.some((bytes) => bytes.includes(THINKING_SIGNATURE_JSON)),
          'the signature bytes as Vertex wrote them',
        );
      } else {
        assert.ok(answer.body.equals(up.vertex.lastJson!), 'the JSON answer byte for byte');
      }
      const record = lastOf(gw.calls);
      assert.equal(record.upstream, 'vertex');
      assert.equal(record.upstreamModel, VERTEX_ID);
      assert.equal(record.inputTokens, VERTEX_USAGE.input_tokens);
      assert.equal(record.outputTokens, VERTEX_USAGE.output_tokens);
      assert.ok(record.costUsd > 0);
    });
  }

  for (const stream of [false, true]) {
    test(`Messages client -> Bedrock${stream ? ', streamed (SSE; signature events byte-identical)' : ''}: anthropic_beta from the header`, async () => {
      const { gw, key } = toBedrock;
      up.bedrock.script = thinkingScript;
      try {
        const before = up.bedrock.seen.length;
        const answer = await send(
          key.socketPath,
          'POST',
          '/v1/messages',
          messagesBody(ANTHROPIC_ID, stream),
          messagesHeaders({ 'anthropic-beta': 'a-beta, b-beta' }),
        );
        assert.equal(answer.status, 200, answer.body.toString());
        const got = up.bedrock.seen[before]!;
        assert.equal(got.auth, 'sigv4');
        assert.equal(got.path, `/model/${BEDROCK_ID}/${stream ? 'invoke-with-response-stream' : 'invoke'}`);
        assert.equal(got.headers['x-api-key'], undefined);
        const sent = JSON.parse(got.body.toString()) as Record<string, unknown>;
        assert.deepEqual(sent.anthropic_beta, ['a-beta', 'b-beta']);
        assert.equal(sent.anthropic_version, 'bedrock-2023-05-31');
        assert.equal('model' in sent, false);
        assert.equal('stream' in sent, false);
        if (stream) {
          assert.match(String(answer.headers['content-type']), /^text\/event-stream/);
          assert.deepEqual(sseDataLines(answer.body), up.bedrock.lastStreamEvents.map(String), 'every event byte-identical');
          assert.deepEqual(
            sseEventNames(answer.body),
            up.bedrock.lastStreamEvents.map((event) => JSON.parse(String(event)).type),
          );
          const signature = up.bedrock.lastStreamEvents.find((event) => String(event).includes('signature_delta'))!;
          assert.ok(answer.body.includes(signature), 'the signature event as Bedrock sent it');
          assert.ok(String(signature).includes('\\u2028'), 'the escaped U+2028 survived');
          assert.ok(sseDataLines(answer.body).some((line) => JSON.parse(line).delta?.signature === TRICKY_SIGNATURE));
        } else {
          assert.equal((json(answer).content as { signature?: string }[])[0]!.signature, TRICKY_SIGNATURE);
        }
        const record = lastOf(gw.calls);
        assert.equal(record.model, ANTHROPIC_ID);
        assert.equal(record.upstreamModel, BEDROCK_ID);
        assert.equal(record.inputTokens, STANDIN_USAGE.input_tokens);
        assert.equal(record.outputTokens, STANDIN_USAGE.output_tokens);
        assert.equal(record.cacheReadTokens, STANDIN_USAGE.cache_read_input_tokens);
        assert.equal(record.cacheWriteTokens, STANDIN_USAGE.cache_creation_input_tokens);
        assert.ok(record.costUsd > 0);
      } finally {
        up.bedrock.script = defaultScript;
      }
    });
  }

  for (const stream of [false, true]) {
    test(`Messages client -> Vertex${stream ? ', streamed' : ''}`, async () => {
      const { gw, key } = toVertex;
      const before = up.vertex.seen.length;
      const answer = await send(key.socketPath, 'POST', '/v1/messages', messagesBody(ANTHROPIC_ID, stream), messagesHeaders({ 'anthropic-beta': 'a-beta' }));
      assert.equal(answer.status, 200, answer.body.toString());
      const got = up.vertex.seen[before]!;
      assert.equal(got.authOk, true);
      assert.equal(got.path, up.vertex.modelPath(VERTEX_ID, stream ? 'streamRawPredict' : 'rawPredict'));
      assert.equal(got.headers['anthropic-beta'], 'a-beta');
      const sent = JSON.parse(got.body.toString()) as Record<string, unknown>;
      assert.equal(sent.anthropic_version, 'vertex-2023-10-16');
      assert.equal('model' in sent, false);
      if (stream) assert.ok(answer.body.equals(up.vertex.lastStream!), 'SSE byte for byte');
      else assert.ok(answer.body.equals(up.vertex.lastJson!));
      const record = lastOf(gw.calls);
      assert.equal(record.model, ANTHROPIC_ID);
      assert.equal(record.upstreamModel, VERTEX_ID);
      assert.equal(record.inputTokens, VERTEX_USAGE.input_tokens);
      assert.ok(record.costUsd > 0);
    });
  }

  for (const stream of [false, true]) {
    test(`Vertex client -> Vertex${stream ? ', streamed' : ''}: the path rebuilt with the configured project and region, the body unchanged`, async () => {
      const { gw, key } = own;
      const before = up.vertex.seen.length;
      const body = vertexBody(stream);
      const answer = await send(key.socketPath, 'POST', vertexClientPath(VERTEX_ID, stream ? 'streamRawPredict' : 'rawPredict'), body, {
        authorization: 'Bearer container-junk',
      });
      assert.equal(answer.status, 200, answer.body.toString());
      const got = up.vertex.seen[before]!;
      assert.equal(got.authOk, true);
      assert.equal(
        got.path,
        `/v1/projects/${VERTEX_PROJECT}/locations/${VERTEX_REGION}/publishers/anthropic/models/${VERTEX_ID}:${stream ? 'streamRawPredict' : 'rawPredict'}`,
      );
      assert.equal(got.body.toString(), body);
      assert.ok(answer.body.equals(stream ? up.vertex.lastStream! : up.vertex.lastJson!), 'the answer byte for byte');
      const record = lastOf(gw.calls);
      assert.equal(record.model, VERTEX_ID);
      assert.equal(record.upstream, 'vertex');
      assert.equal(record.inputTokens, VERTEX_USAGE.input_tokens);
      assert.equal(record.outputTokens, VERTEX_USAGE.output_tokens);
      assert.ok(record.costUsd > 0);
      assert.equal(record.priceEntry, 'claude-sonnet-4-5');
    });
  }

  for (const stream of [false, true]) {
    test(`Vertex client -> Bedrock${stream ? ', streamed' : ''}: route matched by the Anthropic name`, async () => {
      const { gw, key } = toBedrock;
      const before = up.bedrock.seen.length;
      const answer = await send(key.socketPath, 'POST', vertexClientPath(VERTEX_ID, stream ? 'streamRawPredict' : 'rawPredict'), vertexBody(stream));
      assert.equal(answer.status, 200, answer.body.toString());
      const got = up.bedrock.seen[before]!;
      assert.equal(got.auth, 'sigv4');
      assert.equal(got.path, `/model/${BEDROCK_ID}/${stream ? 'invoke-with-response-stream' : 'invoke'}`);
      const sent = JSON.parse(got.body.toString()) as Record<string, unknown>;
      assert.equal(sent.anthropic_version, 'bedrock-2023-05-31');
      assert.equal('stream' in sent, false);
      if (stream) {
        assert.match(String(answer.headers['content-type']), /^text\/event-stream/);
        assert.deepEqual(sseDataLines(answer.body), up.bedrock.lastStreamEvents.map(String));
      } else {
        assert.equal(json(answer).type, 'message');
      }
      const record = lastOf(gw.calls);
      assert.equal(record.upstreamModel, BEDROCK_ID);
      assert.equal(record.inputTokens, STANDIN_USAGE.input_tokens);
      assert.ok(record.costUsd > 0);
    });
  }

  for (const stream of [false, true]) {
    test(`Vertex client -> Messages API${stream ? ', streamed' : ''}`, async () => {
      const { gw, key } = toAnthropic;
      const before = up.anthropic.requests.length;
      const answer = await send(key.socketPath, 'POST', vertexClientPath(VERTEX_ID, stream ? 'streamRawPredict' : 'rawPredict'), vertexBody(stream));
      assert.equal(answer.status, 200, answer.body.toString());
      const got = up.anthropic.requests[before]!;
      assert.equal(got.url, '/v1/messages');
      assert.equal(got.headers['x-api-key'], REAL_ANTHROPIC_KEY);
      const sent = JSON.parse(got.body.toString()) as Record<string, unknown>;
      assert.equal(sent.model, ANTHROPIC_ID);
      assert.equal('anthropic_version' in sent, false);
      assert.equal(sent.stream, stream ? true : undefined);
      if (stream) assert.match(String(answer.headers['content-type']), /^text\/event-stream/);
      const record = lastOf(gw.calls);
      assert.equal(record.upstreamModel, ANTHROPIC_ID);
      assert.ok(record.costUsd > 0);
    });
  }

  test('routes decide the upstream: a Messages client for a Bedrock id matches claude-* by its Anthropic name', async () => {
    const { gw, key } = toVertex;
    const before = up.vertex.seen.length;
    const answer = await send(key.socketPath, 'POST', '/v1/messages', messagesBody(BEDROCK_ID, false), messagesHeaders());
    assert.equal(answer.status, 200, answer.body.toString());
    assert.equal(up.vertex.seen.length, before + 1);
    assert.equal(lastOf(up.vertex.seen).path, up.vertex.modelPath(VERTEX_ID, 'rawPredict'));
    assert.equal(lastOf(gw.calls).upstream, 'vertex');
  });
});

describe('Bedrock API keys', () => {
  test('a bedrock provider with an API key sends it as a bearer, signs nothing, and the key reaches no client', async () => {
    const apiKey = 'bedrock-api-key-cloudformats-5e6f7a8b';
    const keyed = await startBedrockStandin({ accessKeyId: 'AKIAUNUSED', secretAccessKey: 'unused-secret', apiKey, region: 'us-east-1' });
    const gw = await startCloudGateway({ providers: { bedrock: { kind: 'bedrock', region: 'us-east-1', baseUrl: keyed.url, apiKey } } });
    gateways.push(gw);
    try {
      const key = await gw.gateway.mint({ group: 'cloud' });
      const answer = await send(key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke'), bedrockBody());
      assert.equal(answer.status, 200, answer.body.toString());
      assert.equal(keyed.seen.length, 1);
      assert.equal(keyed.seen[0]!.auth, 'bearer');
      assert.equal(keyed.seen[0]!.headers['x-amz-date'], undefined);
      assert.ok(!answer.body.toString().includes(apiKey) && !JSON.stringify(answer.headers).includes(apiKey));
      assert.ok(!JSON.stringify(gw.calls).includes(apiKey));
    } finally {
      await gw.close();
      await keyed.close();
    }
  });
});

describe('Foundry', () => {
  test('a Foundry client (/v1/messages?beta=true) -> a foundry provider: x-api-key injected, the query kept', async () => {
    const gw = await startCloudGateway({ providers: { foundry: { kind: 'foundry', baseUrl: up.anthropic.url, apiKey: REAL_ANTHROPIC_KEY } } });
    gateways.push(gw);
    try {
      const key = await gw.gateway.mint({ group: 'cloud' });
      const before = up.anthropic.requests.length;
      for (const stream of [false, true]) {
        const answer = await send(
          key.socketPath,
          'POST',
          '/v1/messages?beta=true',
          messagesBody(ANTHROPIC_ID, stream),
          messagesHeaders({ authorization: 'Bearer skip-foundry-auth' }),
        );
        assert.equal(answer.status, 200, answer.body.toString());
        if (stream) assert.match(String(answer.headers['content-type']), /^text\/event-stream/);
      }
      const got = up.anthropic.requests.slice(before);
      assert.equal(got.length, 2);
      for (const request of got) {
        assert.equal(request.url, '/v1/messages?beta=true');
        assert.equal(request.headers['x-api-key'], REAL_ANTHROPIC_KEY);
        assert.equal(request.headers.authorization, undefined);
      }
      assert.equal(gw.calls.length, 2);
      for (const record of gw.calls) {
        assert.equal(record.upstream, 'foundry');
        assert.ok(record.costUsd > 0);
      }
    } finally {
      await gw.close();
    }
  });
});

describe('counting tokens', () => {
  let own: { gw: CloudGateway; key: KeyInfo };
  let noBedrock: { gw: CloudGateway; key: KeyInfo };
  let toAnthropic: { gw: CloudGateway; key: KeyInfo };
  before(async () => {
    own = await gatewayWith();
    const { bedrock: _bedrock, ...others } = up.providers();
    noBedrock = await gatewayWith({ providers: others });
    toAnthropic = await gatewayWith({ routes: [{ models: ['claude-*'], provider: 'anthropic' }] });
  });
  after(() => Promise.all([own, noBedrock, toAnthropic].map(({ gw }) => gw.close())));

  const countBody = JSON.stringify({ input: { invokeModel: { body: Buffer.from(bedrockBody()).toString('base64') } } });

  test('Bedrock count-tokens -> Bedrock: passed through, signed, answered as Bedrock answers', async () => {
    const before = up.bedrock.seen.length;
    const answer = await send(own.key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'count-tokens'), countBody);
    assert.equal(answer.status, 200, answer.body.toString());
    assert.equal(typeof json(answer).inputTokens, 'number');
    const got = up.bedrock.seen[before]!;
    assert.equal(got.auth, 'sigv4');
    assert.equal(got.path, `/model/${BEDROCK_ID}/count-tokens`);
    assert.equal(got.body.toString(), countBody);
    assert.equal(lastOf(own.gw.calls).endpoint, 'count_tokens');
    assert.equal(lastOf(own.gw.calls).costUsd, 0);
  });

  test('Bedrock count-tokens without a Bedrock provider: 404 in Bedrock shape, nothing sent', async () => {
    const before = up.anthropic.requests.length + up.vertex.seen.length;
    const answer = await send(noBedrock.key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'count-tokens'), countBody);
    assert.equal(answer.status, 404);
    assert.deepEqual(Object.keys(json(answer)), ['message']);
    assert.equal(answer.headers['x-amzn-errortype'], 'ResourceNotFoundException');
    assert.equal(up.anthropic.requests.length + up.vertex.seen.length, before);
  });

  const vertexCount = `{"anthropic_version":"vertex-2023-10-16","model":"${VERTEX_ID}","messages":[{"role":"user","content":"count me"}]}`;
  const vertexCountPath = '/v1/projects/gateway-placeholder/locations/us-east5/publishers/anthropic/models/count-tokens:rawPredict';

  test('Vertex count-tokens -> Messages API count_tokens: the model in the Anthropic spelling, no anthropic_version', async () => {
    const before = up.anthropic.requests.length;
    const answer = await send(toAnthropic.key.socketPath, 'POST', vertexCountPath, vertexCount);
    assert.equal(answer.status, 200, answer.body.toString());
    assert.equal(typeof json(answer).input_tokens, 'number');
    const got = up.anthropic.requests[before]!;
    assert.equal(got.url, '/v1/messages/count_tokens');
    assert.equal(got.headers['x-api-key'], REAL_ANTHROPIC_KEY);
    const sent = JSON.parse(got.body.toString()) as Record<string, unknown>;
    assert.equal(sent.model, ANTHROPIC_ID);
    assert.equal('anthropic_version' in sent, false);
  });

  test('Vertex count-tokens -> Vertex: the configured project and region, the body unchanged', async () => {
    const before = up.vertex.seen.length;
    const answer = await send(own.key.socketPath, 'POST', vertexCountPath, vertexCount);
    assert.equal(answer.status, 200, answer.body.toString());
    assert.deepEqual(json(answer), { input_tokens: 42 });
    const got = up.vertex.seen[before]!;
    assert.equal(got.authOk, true);
    assert.equal(got.path, `/v1/projects/${VERTEX_PROJECT}/locations/${VERTEX_REGION}/publishers/anthropic/models/count-tokens:rawPredict`);
    assert.equal(got.body.toString(), vertexCount);
  });
});

describe("errors in the client's shape", () => {
  const isBedrockError = (answer: Answer, status: number, type: string) => {
    assert.equal(answer.status, status, answer.body.toString());
    assert.equal(answer.headers['x-amzn-errortype'], type);
    const body = json(answer);
    assert.deepEqual(Object.keys(body), ['message']);
    return String(body.message);
  };

  test('a Bedrock client: model not allowed 400 ValidationException, budget 402, rate 429 ThrottlingException, a malformed path id 400', async () => {
    const { gw, key } = await gatewayWith({}, { models: ['claude-haiku-*'] });
    const poor = await gw.gateway.mint({ group: 'poor', budgetUsd: 0.000001 });
    const slow = await gw.gateway.mint({ group: 'slow', rpm: 1 });
    try {
      const before = up.bedrock.seen.length;
      const denied = isBedrockError(await send(key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke'), bedrockBody()), 400, 'ValidationException');
      assert.match(denied, /claude-sonnet-4-5/);
      isBedrockError(await send(poor.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke'), bedrockBody()), 402, 'ServiceQuotaExceededException');
      assert.equal((await send(slow.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke'), bedrockBody())).status, 200);
      isBedrockError(await send(slow.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke'), bedrockBody()), 429, 'ThrottlingException');
      isBedrockError(await send(key.socketPath, 'POST', bedrockPath('-not-an-id', 'invoke'), bedrockBody()), 400, 'ValidationException');
      isBedrockError(await send(key.socketPath, 'POST', bedrockPath('a%ZZb', 'invoke'), bedrockBody()), 400, 'ValidationException');
      assert.equal(up.bedrock.seen.length, before + 1, 'only the allowed call went upstream');
    } finally {
      await gw.close();
    }
  });

  test('a Vertex client: model not allowed is a 400 in Anthropic shape', async () => {
    const { gw, key } = await gatewayWith({}, { models: ['claude-haiku-*'] });
    try {
      const before = up.vertex.seen.length;
      const answer = await send(key.socketPath, 'POST', vertexClientPath(VERTEX_ID, 'rawPredict'), vertexBody(false));
      assert.equal(answer.status, 400);
      assert.equal((json(answer).error as { type: string }).type, 'permission_error');
      assert.equal(up.vertex.seen.length, before);
    } finally {
      await gw.close();
    }
  });

  test('Bedrock upstream failures: a 500 is retried on the same provider, a 429 goes to the fallback at once, a 429 with nowhere to go is relayed', async () => {
    const { gw, key } = await gatewayWith({ retry: { baseBackoffMs: 1 } });
    const withFallback = await gatewayWith({ routes: [{ models: ['claude-*'], provider: 'bedrock', fallbacks: ['vertex'] }] });
    const once = await gatewayWith({ retry: { attempts: 1 } });
    try {
      let before = up.bedrock.seen.length;
      up.bedrock.failNext({ status: 500, type: 'InternalServerException', message: 'scripted 500' });
      const retried = await send(key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke-with-response-stream'), bedrockBody());
      assert.equal(retried.status, 200);
      assert.equal(decodeBedrockStream(retried.body).events.at(-1)!.type, 'message_stop');
      assert.equal(up.bedrock.seen.length, before + 2);
      assert.equal(lastOf(gw.calls).attempts, 2);
      assert.ok(lastOf(gw.calls).costUsd > 0);

      before = up.bedrock.seen.length;
      const vertexBefore = up.vertex.seen.length;
      up.bedrock.failNext({ status: 429, type: 'ThrottlingException', message: 'scripted 429' });
      const fellBack = await send(withFallback.key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke-with-response-stream'), bedrockBody());
      assert.equal(fellBack.status, 200);
      assert.equal(decodeBedrockStream(fellBack.body).events.at(-1)!.type, 'message_stop');
      assert.equal(up.bedrock.seen.length, before + 1);
      assert.equal(up.vertex.seen.length, vertexBefore + 1);
      assert.equal(lastOf(withFallback.gw.calls).upstream, 'vertex');
      assert.equal(lastOf(withFallback.gw.calls).upstreamModel, VERTEX_ID);

      up.bedrock.failNext({ status: 429, type: 'ThrottlingException', message: 'Too many requests, please wait before trying again.' });
      const relayed = isBedrockError(await send(once.key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke'), bedrockBody()), 429, 'ThrottlingException');
      assert.equal(relayed, 'Too many requests, please wait before trying again.');
      assert.equal(lastOf(once.gw.calls).costUsd, 0);
    } finally {
      await Promise.all([gw.close(), withFallback.gw.close(), once.gw.close()]);
    }
  });
});

/** A loopback upstream that breaks its streams: cut after two events, or (model id with `crc`) a message with a corrupt CRC. */
async function startBreakingUpstream() {
  const events = [
    Buffer.from(
      '{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","model":"x","content":[],"stop_reason":null,"usage":{"input_tokens":9,"output_tokens":1}}}',
    ),
    Buffer.from('{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'),
  ];
  const server = http.createServer((req, res) => {
    let bodyText = '';
    req.on('data', (chunk: Buffer) => {
      bodyText += chunk.toString();
    });
    req.on('end', () => {
      const url = req.url ?? '';
      if (url.startsWith('/model/')) {
        res.writeHead(200, { 'content-type': 'application/vnd.amazon.eventstream' });
        for (const event of events) res.write(encodeChunkMessage(event));
        if (url.includes('exc')) {
          res.end(encodeExceptionMessage('modelStreamErrorException', 'scripted mid-stream exception'));
        } else if (url.includes('crc')) {
          const bad = Buffer.from(encodeChunkMessage(Buffer.from('{"type":"ping"}')));
          bad[bad.length - 1]! ^= 0xff;
          res.end(bad);
        } else {
          setImmediate(() => res.socket?.destroy());
        }
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const event of events) res.write(`event: ${JSON.parse(String(event)).type}\ndata: ${event}\n\n`);
      if (bodyText.includes('claude-exc')) {
        res.end('event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"scripted SSE error"}}\n\n');
        return;
      }
      setImmediate(() => res.socket?.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('streams that break', () => {
  let breaking: Awaited<ReturnType<typeof startBreakingUpstream>>;
  let viaBedrock: { gw: CloudGateway; key: KeyInfo };
  let viaAnthropic: { gw: CloudGateway; key: KeyInfo };
  before(async () => {
    breaking = await startBreakingUpstream();
    const credentials = async () => ({ accessKeyId: AWS_ACCESS_KEY_ID, secretAccessKey: AWS_SECRET });
    viaBedrock = await gatewayWith({
      providers: { bedrock: { kind: 'bedrock', region: BEDROCK_REGION, baseUrl: breaking.url, awsCredentials: credentials } },
      retry: { attempts: 1 },
    });
    viaAnthropic = await gatewayWith({ providers: { anthropic: { baseUrl: breaking.url, apiKey: REAL_ANTHROPIC_KEY } }, retry: { attempts: 1 } });
  });
  after(async () => {
    await Promise.all([viaBedrock.gw.close(), viaAnthropic.gw.close()]);
    await breaking.close();
  });

  test('a Bedrock upstream cut mid-stream: a Bedrock client decodes an exception message at the end', async () => {
    const answer = await send(viaBedrock.key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke-with-response-stream'), bedrockBody());
    assert.equal(answer.status, 200);
    const decoded = decodeBedrockStream(answer.body);
    assert.deepEqual(
      decoded.events.map((event) => event.type),
      ['message_start', 'content_block_start'],
    );
    const last = decoded.headers.at(-1)!;
    assert.equal(last[':message-type'], 'exception');
    assert.equal(last[':exception-type'], 'internalServerException');
    assert.equal(lastOf(viaBedrock.gw.calls).outcome, 'upstream_failed');
  });

  test('a Messages API upstream cut mid-stream: a Bedrock client decodes an exception message at the end', async () => {
    const answer = await send(viaAnthropic.key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke-with-response-stream'), bedrockBody());
    assert.equal(answer.status, 200);
    const decoded = decodeBedrockStream(answer.body);
    assert.equal(decoded.events.length, 2);
    assert.equal(decoded.headers.at(-1)![':exception-type'], 'internalServerException');
  });

  test('a Bedrock upstream cut mid-stream: an SSE client gets event: error', async () => {
    const answer = await send(viaBedrock.key.socketPath, 'POST', '/v1/messages', messagesBody(ANTHROPIC_ID, true), messagesHeaders());
    assert.equal(answer.status, 200);
    assert.deepEqual(sseEventNames(answer.body), ['message_start', 'content_block_start', 'error']);
    assert.equal((JSON.parse(lastOf(sseDataLines(answer.body))) as { type: string }).type, 'error');
  });

  test("a Bedrock exception message mid-stream: an SSE client gets event: error with Bedrock's message", async () => {
    const answer = await send(viaBedrock.key.socketPath, 'POST', '/v1/messages', messagesBody('claude-exc-test', true), messagesHeaders());
    assert.equal(answer.status, 200);
    assert.deepEqual(sseEventNames(answer.body), ['message_start', 'content_block_start', 'error']);
    assert.match(lastOf(sseDataLines(answer.body)), /modelStreamErrorException: scripted mid-stream exception/);
  });

  test('an SSE error event mid-stream: a Bedrock client decodes an exception message with its message', async () => {
    const answer = await send(viaAnthropic.key.socketPath, 'POST', bedrockPath('us.anthropic.claude-exc-test', 'invoke-with-response-stream'), bedrockBody());
    assert.equal(answer.status, 200);
    const decoded = decodeBedrockStream(answer.body);
    assert.equal(decoded.events.length, 2);
    assert.equal(decoded.headers.at(-1)![':exception-type'], 'internalServerException');
    assert.ok(answer.body.includes('scripted SSE error'));
  });

  test('an upstream event stream with a corrupt CRC: the SSE client gets an error event, and the gateway stays up', async () => {
    const answer = await send(viaBedrock.key.socketPath, 'POST', '/v1/messages', messagesBody('claude-crc-test', true), messagesHeaders());
    assert.equal(answer.status, 200);
    assert.deepEqual(sseEventNames(answer.body), ['message_start', 'content_block_start', 'error']);
    assert.match(answer.body.toString(), /malformed event stream/);
    const next = await send(viaBedrock.key.socketPath, 'POST', '/v1/messages', messagesBody(ANTHROPIC_ID, true), messagesHeaders());
    assert.equal(next.status, 200);
    assert.deepEqual(sseEventNames(next.body).slice(0, 2), ['message_start', 'content_block_start']);
  });
});

describe('credentials', () => {
  test('an AWS credential provider that throws: 503 provider_not_configured naming the provider, in the client shape, nothing sent', async () => {
    const failing = async () => {
      throw new Error('Could not load credentials from any providers');
    };
    const { gw, key } = await gatewayWith({
      providers: { bedrock: { kind: 'bedrock', region: BEDROCK_REGION, baseUrl: up.bedrock.url, awsCredentials: failing } },
    });
    try {
      const before = up.bedrock.seen.length;
      const bedrock = await send(key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke'), bedrockBody());
      assert.equal(bedrock.status, 503);
      assert.equal(bedrock.headers['x-gateway-error'], 'provider_not_configured');
      assert.equal(bedrock.headers['x-amzn-errortype'], 'InternalServerException');
      assert.match(String(json(bedrock).message), /provider bedrock .*Could not load credentials/);
      const messages = await send(key.socketPath, 'POST', '/v1/messages', messagesBody(ANTHROPIC_ID, true), messagesHeaders());
      assert.equal(messages.status, 503);
      assert.equal((json(messages).error as { type: string }).type, 'api_error');
      assert.equal(up.bedrock.seen.length, before);
      assert.equal(lastOf(gw.calls).errorKind, 'provider_not_configured');
    } finally {
      await gw.close();
    }
  });

  test('a Google token endpoint that refuses: 503 provider_not_configured naming the provider, no key material', async () => {
    // Signed with a key the token endpoint does not know: it answers invalid_grant.
    const stranger = createServiceAccount(up.google.url);
    const { gw, key } = await gatewayWith({
      providers: {
        vertex: { kind: 'vertex', region: VERTEX_REGION, projectId: VERTEX_PROJECT, baseUrl: up.vertex.url, googleCredentialsFile: stranger.file },
      },
    });
    try {
      const before = up.vertex.seen.length;
      const answer = await send(key.socketPath, 'POST', vertexClientPath(VERTEX_ID, 'rawPredict'), vertexBody(false));
      assert.equal(answer.status, 503);
      const message = (json(answer).error as { message: string }).message;
      assert.match(message, /provider vertex/);
      for (const line of stranger.privateKeyPem.split('\n').filter((l) => l.length > 40)) {
        assert.ok(!answer.body.includes(line) && !JSON.stringify(gw.calls).includes(line), 'no private key in the answer or the record');
      }
      assert.equal(up.vertex.seen.length, before);
    } finally {
      await gw.close();
      stranger.remove();
    }
  });

  test("a client's authorization, x-api-key, x-amz-security-token, x-amz-date and x-goog-user-project never reach an upstream", async () => {
    const { gw, key } = await gatewayWith({ routes: [{ models: ['claude-opus-*'], provider: 'anthropic' }] });
    const hostile = {
      authorization: 'Bearer client-sent-authorization',
      'x-api-key': 'client-sent-api-key',
      'x-amz-security-token': 'client-sent-security-token',
      'x-amz-date': '20000101T000000Z',
      'x-amz-content-sha256': 'client-sent-sha',
      'x-goog-user-project': 'client-sent-project',
    };
    try {
      const starts = [up.bedrock.seen.length, up.vertex.seen.length, up.anthropic.requests.length];
      assert.equal((await send(key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke'), bedrockBody(), hostile)).status, 200);
      assert.equal((await send(key.socketPath, 'POST', vertexClientPath(VERTEX_ID, 'rawPredict'), vertexBody(false), hostile)).status, 200);
      const toAnthropic = await send(key.socketPath, 'POST', '/v1/messages', messagesBody('claude-opus-4-1', false), messagesHeaders(hostile));
      assert.equal(toAnthropic.status, 200);
      const received = [
        ...up.bedrock.seen.slice(starts[0]).map((r) => r.headers),
        ...up.vertex.seen.slice(starts[1]).map((r) => r.headers),
        ...up.anthropic.requests.slice(starts[2]).map((r) => r.headers),
      ];
      assert.equal(received.length, 3);
      for (const headers of received) assert.doesNotMatch(JSON.stringify(headers), /client-sent|20000101T000000Z/);
    } finally {
      await gw.close();
    }
  });
});

describe('model discovery', () => {
  const LISTED = ['claude-sonnet-4-5', 'claude-sonnet-4-5-20250929', 'claude-opus-4-1', 'claude-haiku-4-5'];
  let lister: Standin;
  before(async () => {
    lister = await startStandin({
      anthropicApiKey: REAL_ANTHROPIC_KEY,
      override: (request, res) => {
        if (request.method !== 'GET' || request.url.split('?')[0] !== '/v1/models' || request.headers['x-api-key'] !== REAL_ANTHROPIC_KEY) return false;
        const data = LISTED.map((id) => ({ type: 'model', id, display_name: id, created_at: '2025-09-29T00:00:00Z' }));
        const body = JSON.stringify({ data, has_more: false, first_id: LISTED[0], last_id: LISTED.at(-1) });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
        return true;
      },
    });
  });
  after(() => lister.close());

  test("GET /v1/models: the upstream's list filtered by the key's globs, then the route aliases they allow; a disallowed model is 404", async () => {
    const { gw, key } = await gatewayWith(
      {
        providers: { anthropic: { baseUrl: lister.url, apiKey: REAL_ANTHROPIC_KEY } },
        routes: [
          { models: ['fast'], provider: 'anthropic', rename: 'claude-haiku-4-5' },
          { models: ['big'], provider: 'anthropic', rename: 'claude-opus-4-1' },
        ],
      },
      { models: ['claude-sonnet-*', 'fast'] },
    );
    try {
      const list = await send(key.socketPath, 'GET', '/v1/models?limit=1000', undefined, { 'anthropic-version': '2023-06-01' });
      assert.equal(list.status, 200, list.body.toString());
      const ids = (json(list).data as { id: string }[]).map((entry) => entry.id);
      assert.deepEqual(ids, ['claude-sonnet-4-5', 'claude-sonnet-4-5-20250929', 'fast']);
      assert.equal(lastOf(lister.requests).headers['x-api-key'], REAL_ANTHROPIC_KEY);
      const before = lister.requests.length;
      const one = await send(key.socketPath, 'GET', '/v1/models/claude-opus-4-1', undefined, { 'anthropic-version': '2023-06-01' });
      assert.equal(one.status, 404);
      assert.equal((json(one).error as { type: string }).type, 'not_found_error');
      assert.equal(lister.requests.length, before, 'not asked upstream');
    } finally {
      await gw.close();
    }
  });

  test("GET /v1/models with only a Bedrock provider: the gateway's own list of route names and the key's literal models", async () => {
    const { bedrock } = up.providers();
    const { gw, key } = await gatewayWith(
      { providers: { bedrock: bedrock! }, routes: [{ models: ['fast'], provider: 'bedrock', rename: 'us.anthropic.claude-haiku-4-5-20251001-v1:0' }] },
      { models: ['claude-sonnet-4-5', 'claude-opus-*', 'fast'] },
    );
    try {
      const before = up.bedrock.seen.length;
      const list = await send(key.socketPath, 'GET', '/v1/models', undefined, { 'anthropic-version': '2023-06-01' });
      assert.equal(list.status, 200, list.body.toString());
      assert.deepEqual(
        (json(list).data as { id: string }[]).map((entry) => entry.id),
        ['fast', 'claude-sonnet-4-5'],
      );
      const one = await send(key.socketPath, 'GET', '/v1/models/claude-sonnet-4-5', undefined, { 'anthropic-version': '2023-06-01' });
      assert.equal(one.status, 200, one.body.toString());
      assert.equal(json(one).id, 'claude-sonnet-4-5');
      const denied = await send(key.socketPath, 'GET', '/v1/models/claude-haiku-4-5', undefined, { 'anthropic-version': '2023-06-01' });
      assert.equal(denied.status, 404);
      assert.equal(up.bedrock.seen.length, before, 'Bedrock has no model list: nothing is asked of it');
    } finally {
      await gw.close();
    }
  });
});

describe('hostile input', () => {
  let toAnthropic: { gw: CloudGateway; key: KeyInfo };
  let toBedrock: { gw: CloudGateway; key: KeyInfo };
  before(async () => {
    toAnthropic = await gatewayWith({ routes: [{ models: ['claude-*'], provider: 'anthropic' }] });
    toBedrock = await gatewayWith({ routes: [{ models: ['claude-*'], provider: 'bedrock' }] });
  });
  after(() => Promise.all([toAnthropic.gw.close(), toBedrock.gw.close()]));

  const raw = (method: string, target: string, body = bedrockBody()) =>
    `${method} ${target} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;

  test('Bedrock paths with .., %2e%2e, an id over 256 characters, a malformed % escape: refused, nothing upstream', async () => {
    const socket = toBedrock.key.socketPath;
    const before = up.bedrock.seen.length + up.anthropic.requests.length;
    const cases: [string, number][] = [
      ['/model/../invoke', 400],
      ['/model/%2e%2e/invoke', 400],
      ['/model/%2E%2E%2Fx/invoke', 400],
      ['/model/us.anthropic.claude-sonnet-4-5-v1:0/../../model/x/invoke', 404],
      [`/model/us.anthropic.claude-${'a'.repeat(300)}/invoke`, 400],
      [`/model/${'a'.repeat(600)}/invoke`, 404],
      ['/model/claude%/invoke', 400],
      ['/model/claude%zzx/invoke', 400],
      ['/model/claude%00x/invoke', 400],
    ];
    for (const [target, status] of cases) {
      const response = await rawCall(socket, raw('POST', target));
      assert.equal(rawStatus(response), status, `${target}: ${response.slice(0, 300)}`);
      assert.match(response, /x-amzn-errortype: /i, `${target} answered in Bedrock's shape`);
    }
    assert.equal(up.bedrock.seen.length + up.anthropic.requests.length, before);
  });

  test('anthropic_beta that is not an array, or has 10,000 entries: 400, nothing upstream', async () => {
    const before = up.anthropic.requests.length;
    const many = JSON.stringify(Array.from({ length: 10_000 }, (_, i) => `b${i}`));
    for (const betas of ['"context-1m-2025-08-07"', '{"a":1}', '[1,2]', '["a,b"]', many]) {
      const body = `{"anthropic_version":"bedrock-2023-05-31","anthropic_beta":${betas},"max_tokens":10,"messages":[{"role":"user","content":"x"}]}`;
      const answer = await send(toAnthropic.key.socketPath, 'POST', bedrockPath(BEDROCK_ID, 'invoke'), body);
      assert.equal(answer.status, 400, `${betas.slice(0, 40)}: ${answer.body}`);
      assert.match(String(json(answer).message), /anthropic_beta/);
    }
    assert.equal(up.anthropic.requests.length, before);
  });

  test('duplicate model keys in a Messages body routed to Bedrock: 400, nothing upstream', async () => {
    const before = up.bedrock.seen.length;
    const body = `{"model":"${ANTHROPIC_ID}","max_tokens":10,"model":"claude-opus-4-1","messages":[{"role":"user","content":"x"}]}`;
    const answer = await send(toBedrock.key.socketPath, 'POST', '/v1/messages', body, messagesHeaders());
    assert.equal(answer.status, 400);
    assert.match(answer.body.toString(), /model.*more than once/);
    assert.equal(up.bedrock.seen.length, before);
  });

  test('a GET (or PUT) on an invoke path is 405 with allow: POST; a Vertex path too', async () => {
    for (const [method, target] of [
      ['GET', bedrockPath(BEDROCK_ID, 'invoke')],
      ['PUT', bedrockPath(BEDROCK_ID, 'invoke-with-response-stream')],
      ['GET', vertexClientPath(VERTEX_ID, 'rawPredict')],
    ] as const) {
      const answer = await send(toBedrock.key.socketPath, method, target);
      assert.equal(answer.status, 405, `${method} ${target}`);
      assert.equal(answer.headers.allow, 'POST');
    }
  });
});

test('no AWS secret, session token, Google private key or access token, or API key in anything a client got or in any record', () => {
  const secrets = up.secrets();
  assert.ok(up.google.issued.length > 0, 'Google tokens were minted and used');
  assert.ok(clientsGot.length > 40);
  for (const answer of clientsGot) {
    const seen = `${JSON.stringify(answer.headers)}\n${answer.body.toString('latin1')}\n${answer.body.toString('utf8')}`;
    for (const secret of secrets) assert.ok(!seen.includes(secret), `a client got ${secret.slice(0, 12)}...`);
  }
  const records = JSON.stringify(gateways.map((gw) => gw.calls));
  assert.ok(gateways.every((gw) => gw.calls.length > 0));
  for (const secret of secrets) assert.ok(!records.includes(secret), `a record holds ${secret.slice(0, 12)}...`);
});
