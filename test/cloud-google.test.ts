// Google credentials for Vertex upstreams (src/cloud/google.ts) against a loopback stand-in for Google's token
// endpoint: a key file's token_uri is honoured, tokens are cached and refreshed inside the library's 5-minute
// threshold, first calls share one grant, errors name what failed and quote no secret. Then the Vertex
// stand-in the gateway tests stand behind is checked on its own: it refuses what Vertex refuses.
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inspect } from 'node:util';
import { createGoogleTokenSource } from '../src/cloud/google.ts';
import {
  createAuthorizedUser,
  createServiceAccount,
  GOOGLE_TOKEN_URL,
  type GoogleTokenStandin,
  type ServiceAccount,
  serviceAccountKey,
  startGoogleTokenStandin,
} from './support/google-token.ts';
import { deadPort } from './support/fixture.ts';
import { request, sseData } from './support/http.ts';
import {
  startVertexStandin,
  THINKING_SIGNATURE,
  THINKING_SIGNATURE_JSON,
  VERTEX_ANTHROPIC_VERSION,
  VERTEX_USAGE,
  type VertexStandin,
} from './support/vertex-standin.ts';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A token stand-in and a service-account file that points at it. */
async function googleAt(expiresInSeconds = 3600): Promise<{ standin: GoogleTokenStandin; account: ServiceAccount }> {
  const key = serviceAccountKey();
  const standin = await startGoogleTokenStandin({ publicKeyPem: key.publicKeyPem, clientEmail: key.clientEmail, expiresInSeconds });
  const account = createServiceAccount(standin.url, key);
  cleanups.push(
    () => standin.close(),
    () => account.remove(),
  );
  return { standin, account };
}

/** Runs `fn` with these environment variables (undefined: unset), restoring them after. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((name) => [name, process.env[name]]));
  const apply = (values: Record<string, string | undefined>) => {
    for (const [name, value] of Object.entries(values)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
  apply(vars);
  try {
    return await fn();
  } finally {
    apply(saved);
  }
}

/** The error `promise` rejects with, checked to quote none of `secrets` (message, stack and every property). */
async function secretFreeError(promise: Promise<unknown>, secrets: string[]): Promise<Error> {
  const err = await promise.then(
    () => assert.fail('expected an error'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof Error);
  const shown = `${err.message}\n${inspect(err, { depth: 8 })}`;
  for (const secret of secrets) assert.ok(!shown.includes(secret), `the error quotes a secret: ${secret.slice(0, 24)}...`);
  assert.ok(!shown.includes('PRIVATE KEY'), 'the error quotes a private key');
  assert.ok(!/eyJ[\w-]{10,}\./.test(shown), 'the error quotes a JWT');
  assert.equal(err.cause, undefined, 'the error carries the library error (and its request) along');
  return err;
}

/** The base64 body lines of a PEM key, as distinct secrets to look for. */
const pemLines = (pem: string): string[] => pem.split('\n').filter((line) => line.length > 20 && !line.startsWith('-----'));

describe('createGoogleTokenSource with a service-account file', () => {
  test('returns a token the endpoint named by token_uri issued, and reuses it while it is fresh', async () => {
    const { standin, account } = await googleAt(3600);
    const source = createGoogleTokenSource({ credentialsFile: account.file });
    const first = await source.token();
    assert.deepEqual(standin.issued, [first]);
    assert.equal(await source.token(), first);
    assert.equal(standin.requests, 1);
    // google-auth-library v11 signs its assertions for Google's endpoint even when it posts them elsewhere.
    assert.deepEqual(standin.audiences, [GOOGLE_TOKEN_URL]);
  });

  test('a token outside the 5-minute refresh threshold is kept; one inside it is replaced on the next call', async () => {
    const { standin: lasting, account: lastingAccount } = await googleAt(400);
    const kept = createGoogleTokenSource({ credentialsFile: lastingAccount.file });
    assert.equal(await kept.token(), await kept.token());
    assert.equal(lasting.requests, 1);

    const { standin: expiring, account } = await googleAt(290);
    const source = createGoogleTokenSource({ credentialsFile: account.file });
    const first = await source.token();
    const second = await source.token();
    assert.notEqual(second, first);
    assert.deepEqual(expiring.issued, [first, second]);
    assert.equal(expiring.requests, 2);
  });

  test('concurrent first calls make one client and one token request', async () => {
    const { standin, account } = await googleAt();
    const source = createGoogleTokenSource({ credentialsFile: account.file });
    const tokens = await Promise.all(Array.from({ length: 8 }, () => source.token()));
    assert.equal(new Set(tokens).size, 1);
    assert.deepEqual(standin.issued, [tokens[0]]);
    assert.equal(standin.requests, 1);
  });

  test('a missing file: the error names the file and the cause', async () => {
    const missing = path.join(tmpdir(), `no-such-google-key-${process.pid}.json`);
    const err = await secretFreeError(createGoogleTokenSource({ credentialsFile: missing }).token(), []);
    assert.match(err.message, /Google credentials file .*no-such-google-key.* cannot be read: ENOENT/);
  });

  test('a malformed file: the error quotes none of its content (JSON.parse would)', async () => {
    const key = serviceAccountKey();
    const dir = mkdtempSync(path.join(tmpdir(), 'gateway-google-bad-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'key.json');
    writeFileSync(file, `${key.privateKeyPem.slice(28)}{"type":"service_account"}`);
    const err = await secretFreeError(createGoogleTokenSource({ credentialsFile: file }).token(), pemLines(key.privateKeyPem));
    assert.match(err.message, /is not a JSON object$/);

    writeFileSync(file, JSON.stringify({ type: 'external_account', private_key: key.privateKeyPem }));
    const wrongType = await secretFreeError(createGoogleTokenSource({ credentialsFile: file }).token(), pemLines(key.privateKeyPem));
    assert.match(wrongType.message, /has type "external_account"; expected service_account or authorized_user/);
  });

  test('a token_uri that is neither https nor loopback http is refused before any key is used', async () => {
    const key = serviceAccountKey();
    const account = createServiceAccount('http://token.example.com/token', key);
    cleanups.push(() => account.remove());
    const err = await secretFreeError(createGoogleTokenSource({ credentialsFile: account.file }).token(), pemLines(key.privateKeyPem));
    assert.match(err.message, /token_uri that is not an https URL/);
  });

  test('a refusing token endpoint: the error names it and the refusal, and quotes no key, assertion or token', async () => {
    const { standin, account } = await googleAt();
    const granted = await createGoogleTokenSource({ credentialsFile: account.file }).token();
    // A second account whose key the endpoint does not know: its signed assertion is refused.
    const stranger = createServiceAccount(standin.url);
    cleanups.push(() => stranger.remove());
    const err = await secretFreeError(createGoogleTokenSource({ credentialsFile: stranger.file }).token(), [
      granted,
      ...pemLines(stranger.privateKeyPem),
      ...pemLines(account.privateKeyPem),
    ]);
    assert.equal(err.message, `Google access token request to ${standin.url} failed: HTTP 400 invalid_grant`);
    assert.equal(standin.requests, 2);
    assert.deepEqual(standin.issued, [granted]);
  });
});

describe('createGoogleTokenSource when the token endpoint is down', () => {
  test('an unreachable endpoint: the error names it and ECONNREFUSED (after the library retries)', async () => {
    const key = serviceAccountKey();
    const url = `http://127.0.0.1:${await deadPort()}/token`;
    const account = createServiceAccount(url, key);
    cleanups.push(() => account.remove());
    const err = await secretFreeError(createGoogleTokenSource({ credentialsFile: account.file }).token(), pemLines(key.privateKeyPem));
    assert.equal(err.message, `Google access token request to ${url} failed: ECONNREFUSED`);
  });
});

describe('createGoogleTokenSource with an authorized-user file', () => {
  test('refreshes at the token_uri it names; a refused refresh quotes neither secret nor refresh token', async () => {
    const key = serviceAccountKey();
    const user = {
      clientId: 'standin-client.apps.googleusercontent.com',
      clientSecret: 'd-standin-client-secret-41f7',
      refreshToken: '1//standin-refresh-token-9c2e',
    };
    const standin = await startGoogleTokenStandin({ publicKeyPem: key.publicKeyPem, clientEmail: key.clientEmail, user });
    const good = createAuthorizedUser(standin.url, user);
    const stale = createAuthorizedUser(standin.url, { ...user, refreshToken: '1//revoked-refresh-token-0a7d' });
    cleanups.push(
      () => standin.close(),
      () => good.remove(),
      () => stale.remove(),
    );
    const token = await createGoogleTokenSource({ credentialsFile: good.file }).token();
    assert.deepEqual(standin.issued, [token]);
    const err = await secretFreeError(createGoogleTokenSource({ credentialsFile: stale.file }).token(), [
      user.clientSecret,
      user.refreshToken,
      '1//revoked-refresh-token-0a7d',
      token,
    ]);
    assert.equal(err.message, `Google access token request to ${standin.url} failed: HTTP 400 invalid_grant`);
  });
});

describe('createGoogleTokenSource with Application Default Credentials', () => {
  test('uses the file GOOGLE_APPLICATION_CREDENTIALS names (its token_uri honoured) when no file is passed', async () => {
    const { standin, account } = await googleAt();
    const token = await withEnv({ GOOGLE_APPLICATION_CREDENTIALS: account.file }, () => createGoogleTokenSource().token());
    assert.deepEqual(standin.issued, [token]);
  });

  test('a GOOGLE_APPLICATION_CREDENTIALS file that is missing is named in the error', async () => {
    const missing = path.join(tmpdir(), `no-such-adc-${process.pid}.json`);
    const err = await withEnv({ GOOGLE_APPLICATION_CREDENTIALS: missing }, () => secretFreeError(createGoogleTokenSource().token(), []));
    assert.equal(err.message, `the Google credentials file named by GOOGLE_APPLICATION_CREDENTIALS (${missing}) cannot be used: ENOENT`);
  });

  test('no credentials anywhere: the error says none were found (metadata server detection off, no network)', async () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'gateway-gcloud-'));
    cleanups.push(() => rmSync(empty, { recursive: true, force: true }));
    const env = { GOOGLE_APPLICATION_CREDENTIALS: undefined, CLOUDSDK_CONFIG: empty, METADATA_SERVER_DETECTION: 'none' };
    const err = await withEnv(env, () => secretFreeError(createGoogleTokenSource().token(), []));
    assert.match(err.message, /^no Google Application Default Credentials found/);
  });
});

describe('the Vertex stand-in', () => {
  const project = 'standin-project';
  const region = 'us-east5';
  const model = 'claude-opus-5-5';

  async function vertexWithGoogle(thinking = false): Promise<{ vertex: VertexStandin; token: string }> {
    const { standin, account } = await googleAt();
    const token = await createGoogleTokenSource({ credentialsFile: account.file }).token();
    const vertex = await startVertexStandin({ validToken: (t) => standin.issued.includes(t), project, region, thinking });
    cleanups.push(() => vertex.close());
    return { vertex, token };
  }

  const call = (vertex: VertexStandin, path: string, body: unknown, token?: string) =>
    request({
      port: vertex.port,
      method: 'POST',
      path,
      headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
      body: JSON.stringify(body),
    });
  const messageBody = (extra: Record<string, unknown> = {}) => ({
    anthropic_version: VERTEX_ANTHROPIC_VERSION,
    max_tokens: 64,
    messages: [{ role: 'user', content: 'hi' }],
    ...extra,
  });

  test('refuses a request without a token or with one Google did not issue (401, Google-shaped), and records both', async () => {
    const { vertex } = await vertexWithGoogle();
    for (const token of [undefined, 'ya29.forged-token']) {
      const res = await call(vertex, vertex.modelPath(model, 'rawPredict'), messageBody(), token);
      assert.equal(res.status, 401);
      const { error } = JSON.parse(res.body);
      assert.equal(error.code, 401);
      assert.equal(error.status, 'UNAUTHENTICATED');
      assert.match(error.message, /^Request had invalid authentication credentials/);
    }
    assert.deepEqual(
      vertex.seen.map((s) => [s.method, s.path, s.authOk]),
      [
        ['POST', vertex.modelPath(model, 'rawPredict'), false],
        ['POST', vertex.modelPath(model, 'rawPredict'), false],
      ],
    );
  });

  test('refuses another project or region (404), a body with model or without the Vertex version (400)', async () => {
    const { vertex, token } = await vertexWithGoogle();
    const elsewhere = [
      `/v1/projects/other-project/locations/${region}/publishers/anthropic/models/${model}:rawPredict`,
      `/v1/projects/${project}/locations/europe-west1/publishers/anthropic/models/${model}:rawPredict`,
    ];
    for (const path of elsewhere) {
      const res = await call(vertex, path, messageBody(), token);
      assert.equal(res.status, 404);
      assert.equal(JSON.parse(res.body).error.status, 'NOT_FOUND');
    }
    for (const body of [messageBody({ model }), messageBody({ anthropic_version: 'bedrock-2023-05-31' })]) {
      const res = await call(vertex, vertex.modelPath(model, 'streamRawPredict'), body, token);
      assert.equal(res.status, 400);
      assert.equal(JSON.parse(res.body).error.status, 'INVALID_ARGUMENT');
    }
    assert.ok(vertex.seen.every((s) => s.authOk));
  });

  test('answers :rawPredict with a message (usage included) and :streamRawPredict with Anthropic SSE', async () => {
    const { vertex, token } = await vertexWithGoogle();
    const json = await call(vertex, vertex.modelPath(model, 'rawPredict'), messageBody(), token);
    assert.equal(json.status, 200);
    assert.match(String(json.headers['content-type']), /^application\/json/);
    const message = JSON.parse(json.body);
    assert.equal(message.model, model);
    assert.deepEqual(message.content, [{ type: 'text', text: 'Hello from the Vertex stand-in.' }]);
    assert.deepEqual(message.usage, VERTEX_USAGE);
    assert.equal(json.body, vertex.lastJson?.toString());

    const sent = JSON.stringify(messageBody({ stream: true }));
    const sse = await call(vertex, vertex.modelPath(model, 'streamRawPredict'), JSON.parse(sent), token);
    assert.equal(sse.status, 200);
    assert.match(String(sse.headers['content-type']), /^text\/event-stream/);
    const events = sseData(sse.body) as { type: string }[];
    assert.equal(events[0]?.type, 'message_start');
    assert.equal(events.at(-1)?.type, 'message_stop');
    assert.match(sse.body, /^event: message_start\ndata: \{/);
    assert.equal(sse.body, vertex.lastStream?.toString());
    const seen = vertex.seen.at(-1)!;
    assert.equal(seen.body.toString(), sent);
    assert.equal(seen.headers.authorization, `Bearer ${token}`);
  });

  test('a thinking block carries a signature whose wire bytes do not survive re-serialisation', async () => {
    const { vertex, token } = await vertexWithGoogle(true);
    const sse = await call(vertex, vertex.modelPath(model, 'streamRawPredict'), messageBody({ stream: true }), token);
    const wire = Buffer.from(sse.body);
    assert.ok(wire.equals(vertex.lastStream!));
    assert.ok(wire.includes(Buffer.from(`"signature":${THINKING_SIGNATURE_JSON}`)));
    assert.ok(wire.includes(Buffer.from('\u2028')), 'a raw U+2028 is on the wire');
    const line = sse.body
      .split('\n')
      .find((l) => l.includes('signature_delta'))!
      .slice('data: '.length);
    const parsed = JSON.parse(line);
    assert.equal(parsed.delta.signature, THINKING_SIGNATURE);
    assert.notEqual(JSON.stringify(parsed), line);

    const json = await call(vertex, vertex.modelPath(model, 'rawPredict'), messageBody(), token);
    assert.equal(JSON.parse(json.body).content[0].signature, THINKING_SIGNATURE);
    assert.ok(Buffer.from(json.body).includes(Buffer.from(THINKING_SIGNATURE_JSON)));
  });

  test('counts tokens, and answers the next call with a queued error', async () => {
    const { vertex, token } = await vertexWithGoogle();
    const countPath = `/v1/projects/${project}/locations/${region}/publishers/anthropic/models/count-tokens:rawPredict`;
    const count = await call(vertex, countPath, { model, messages: [{ role: 'user', content: 'hi' }] }, token);
    assert.equal(count.status, 200);
    assert.deepEqual(JSON.parse(count.body), { input_tokens: 42 });

    const overloaded = { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } };
    vertex.failNext({ status: 529, body: overloaded });
    const failed = await call(vertex, vertex.modelPath(model, 'rawPredict'), messageBody(), token);
    assert.equal(failed.status, 529);
    assert.deepEqual(JSON.parse(failed.body), overloaded);
    assert.equal((await call(vertex, vertex.modelPath(model, 'rawPredict'), messageBody(), token)).status, 200);
  });
});
