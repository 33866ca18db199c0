// The Bedrock stand-in (support/bedrock-standin.ts) holds before other tests lean on it: it refuses a
// bad signature, a wrong secret, a wrong region, a wrong API key and no auth at all; it answers
// InvokeModel, a stream its own decoder (the real codec) reads back byte for byte, count-tokens, the
// inference-profile probe, and a scripted error.
import assert from 'node:assert/strict';
import http, { type IncomingHttpHeaders } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { createAwsSigner } from '../src/cloud/aws.ts';
import {
  type BedrockStandin,
  decodeBedrockStream,
  defaultScript,
  STANDIN_USAGE,
  startBedrockStandin,
  thinkingScript,
  TRICKY_SIGNATURE,
} from './support/bedrock-standin.ts';

const KEY = { accessKeyId: 'AKIASTANDIN', secretAccessKey: 'standinSecretKeyEEEEEEEEEEEEEEEEEEEEEEEEE' };
const API_KEY = 'bedrock-api-key-FFFF';
const MODEL = 'arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-opus-5-5';
/** As Claude Code sends it: ':' raw, '/' encoded. */
const MODEL_IN_PATH = encodeURIComponent(MODEL).replace(/%3A/g, ':');

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

function send(port: number, method: string, path: string, headers: Record<string, string>, body?: Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.setTimeout(5000, () => req.destroy(new Error('the stand-in did not answer')));
    req.on('error', reject);
    req.end(body);
  });
}

describe('the Bedrock stand-in', () => {
  let standin: BedrockStandin;
  before(async () => {
    standin = await startBedrockStandin({ ...KEY, apiKey: API_KEY, region: 'us-east-1' });
  });
  after(() => standin.close());

  /** Signs with the host-side signer (itself checked against published vectors) and sends. */
  async function signedCall(path: string, payload: unknown, options: { secret?: string; region?: string; tamper?: boolean } = {}): Promise<Answer> {
    const signer = createAwsSigner({
      region: options.region ?? 'us-east-1',
      credentials: async () => ({ ...KEY, secretAccessKey: options.secret ?? KEY.secretAccessKey }),
    });
    const body = Buffer.from(JSON.stringify(payload));
    const headers = { 'content-type': 'application/json', accept: 'application/json', 'anthropic-beta': 'x' };
    const signed = await signer.sign({ method: 'POST', origin: standin.url, path, headers, body });
    return send(standin.port, 'POST', path, { ...headers, ...signed }, options.tamper ? Buffer.from(`${body.toString()} `) : body);
  }

  const invokeBody = { anthropic_version: 'bedrock-2023-05-31', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] };

  test('answers a signed InvokeModel with an Anthropic message for the URL-decoded model id', async () => {
    const answer = await signedCall(`/model/${MODEL_IN_PATH}/invoke`, invokeBody);
    assert.equal(answer.status, 200, answer.body.toString());
    assert.equal(answer.headers['content-type'], 'application/json');
    assert.ok(answer.headers['x-amzn-requestid']);
    const message = JSON.parse(answer.body.toString());
    assert.equal(message.model, MODEL);
    assert.deepEqual(message.content, defaultScript({}, MODEL).content);
    assert.deepEqual(message.usage, STANDIN_USAGE);
    const seen = standin.seen.at(-1)!;
    assert.deepEqual([seen.auth, seen.accessKeyId, seen.path], ['sigv4', KEY.accessKeyId, `/model/${MODEL_IN_PATH}/invoke`]);
  });

  test('refuses a changed body, a wrong secret, a wrong region, a wrong API key and no auth, as Bedrock does', async () => {
    const refusals = [
      await signedCall('/model/m/invoke', invokeBody, { tamper: true }),
      await signedCall('/model/m/invoke', invokeBody, { secret: 'anotherSecretKeyGGGGGGGGGGGGGGGGGGGGGGGGGG' }),
      await signedCall('/model/m/invoke', invokeBody, { region: 'us-west-2' }),
      await send(standin.port, 'POST', '/model/m/invoke', { authorization: 'Bearer not-the-key' }, Buffer.from(JSON.stringify(invokeBody))),
      await send(standin.port, 'POST', '/model/m/invoke', { 'content-type': 'application/json' }, Buffer.from(JSON.stringify(invokeBody))),
    ];
    for (const answer of refusals) {
      assert.equal(answer.status, 403);
      assert.equal(answer.headers['x-amzn-errortype'], 'UnrecognizedClientException');
      assert.deepEqual(JSON.parse(answer.body.toString()), { message: 'The security token included in the request is invalid.' });
    }
    assert.deepEqual(
      standin.seen.slice(-5).map((s) => s.auth),
      ['refused', 'refused', 'refused', 'refused', 'refused'],
    );
    const bearer = await send(standin.port, 'POST', '/model/m/invoke', { authorization: `Bearer ${API_KEY}` }, Buffer.from(JSON.stringify(invokeBody)));
    assert.equal(bearer.status, 200);
    assert.equal(standin.seen.at(-1)!.auth, 'bearer');
  });

  test('streams each Anthropic event as a chunk message the real codec decodes, byte-identical to lastStreamEvents', async () => {
    standin.script = thinkingScript;
    try {
      const answer = await signedCall(`/model/${MODEL_IN_PATH}/invoke-with-response-stream`, invokeBody);
      assert.equal(answer.status, 200);
      assert.equal(answer.headers['content-type'], 'application/vnd.amazon.eventstream');
      const stream = decodeBedrockStream(answer.body);
      for (const headers of stream.headers)
        assert.deepEqual(headers, { ':event-type': 'chunk', ':content-type': 'application/json', ':message-type': 'event' });
      assert.deepEqual(stream.eventBytes, standin.lastStreamEvents);
      assert.deepEqual(
        stream.events.map((e) => e.type),
        [
          'message_start',
          'content_block_start',
          'content_block_delta',
          'content_block_delta',
          'content_block_stop',
          'content_block_start',
          'content_block_delta',
          'content_block_stop',
          'message_delta',
          'message_stop',
        ],
      );
      const at = stream.events.findIndex((e) => (e.delta as { type?: string } | undefined)?.type === 'signature_delta');
      assert.equal((stream.events[at]!.delta as { signature: string }).signature, TRICKY_SIGNATURE);
      // Sent escaped: parsing and serialising it again would change the bytes.
      const raw = stream.eventBytes[at]!;
      assert.ok(raw.includes('sig\\u2028+/=='));
      assert.notDeepEqual(Buffer.from(JSON.stringify(JSON.parse(raw.toString()))), raw);
      assert.equal((stream.events.at(-1)!['amazon-bedrock-invocationMetrics'] as { outputTokenCount: number }).outputTokenCount, STANDIN_USAGE.output_tokens);
      assert.equal((stream.events[0]!.message as { model: string }).model, MODEL);
    } finally {
      standin.script = defaultScript;
    }
  });

  test('counts tokens of a base64 invoke body', async () => {
    const inner = Buffer.from(JSON.stringify(invokeBody));
    const answer = await signedCall('/model/anthropic.claude-opus-5-5/count-tokens', { input: { invokeModel: { body: inner.toString('base64') } } });
    assert.equal(answer.status, 200);
    assert.deepEqual(JSON.parse(answer.body.toString()), { inputTokens: Math.ceil(inner.length / 4) });
  });

  test('answers the inference-profile probe 404, a body with a model 400, and a scripted error once', async () => {
    const probe = await send(standin.port, 'GET', '/inference-profiles?type=SYSTEM_DEFINED', { authorization: `Bearer ${API_KEY}` });
    assert.equal(probe.status, 404);
    assert.equal(probe.headers['x-amzn-errortype'], 'ResourceNotFoundException');
    assert.equal(typeof JSON.parse(probe.body.toString()).message, 'string');

    const withModel = await signedCall('/model/m/invoke', { ...invokeBody, model: 'm' });
    assert.equal(withModel.status, 400);
    assert.equal(withModel.headers['x-amzn-errortype'], 'ValidationException');

    standin.failNext({ status: 429, type: 'ThrottlingException', message: 'Too many requests, please wait before trying again.' });
    const throttled = await signedCall('/model/m/invoke-with-response-stream', invokeBody);
    assert.equal(throttled.status, 429);
    assert.equal(throttled.headers['x-amzn-errortype'], 'ThrottlingException');
    assert.deepEqual(JSON.parse(throttled.body.toString()), { message: 'Too many requests, please wait before trying again.' });
    assert.equal((await signedCall('/model/m/invoke', invokeBody)).status, 200, 'the error is for the next call only');
  });
});
