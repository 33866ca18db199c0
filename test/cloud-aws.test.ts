// The host-side AWS signer (src/cloud/aws.ts) and the independent verifier it is checked with
// (support/sigv4.ts): the verifier against AWS's published SigV4 test-suite vectors, the signer against
// the verifier on the same requests, the credential chain from a shared credentials file, and the
// credentials' memoisation.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { AwsCredentialIdentity } from '@smithy/types';
import { createAwsSigner } from '../src/cloud/aws.ts';
import { verifySigV4 } from './support/sigv4.ts';

// The suite's example credentials, scope and time (aws-sig-v4-test-suite, awslabs/aws-c-auth).
const SUITE_KEY = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
const SUITE_TOKEN = '6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267';
const SUITE_DATE = '20150830T123600Z';
const CREDENTIAL = 'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request';
const EMPTY_HASH = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

interface Vector {
  name: string;
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
  signedHeaders: string;
  signature: string;
  token?: string;
  /** The published string to sign's last line (the canonical request's hash), where the suite gives it. */
  canonicalHash?: string;
}

const VECTORS: Vector[] = [
  {
    name: 'get-vanilla',
    method: 'GET',
    path: '/',
    headers: {},
    body: '',
    signedHeaders: 'host;x-amz-date',
    signature: '5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31',
    canonicalHash: 'bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63',
  },
  {
    name: 'post-vanilla',
    method: 'POST',
    path: '/',
    headers: {},
    body: '',
    signedHeaders: 'host;x-amz-date',
    signature: '5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b',
  },
  {
    name: 'get-vanilla-query-order-key-case',
    method: 'GET',
    path: '/?Param2=value2&Param1=value1',
    headers: {},
    body: '',
    signedHeaders: 'host;x-amz-date',
    signature: 'b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500',
    canonicalHash: '816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0',
  },
  {
    name: 'post-x-www-form-urlencoded',
    method: 'POST',
    path: '/',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: 'Param1=value1',
    signedHeaders: 'content-type;host;x-amz-date',
    signature: 'ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a',
    canonicalHash: '42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281',
  },
  {
    name: 'get-utf8',
    method: 'GET',
    path: '/\u1234',
    headers: {},
    body: '',
    signedHeaders: 'host;x-amz-date',
    signature: '8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85',
  },
  {
    name: 'get-vanilla-with-session-token',
    method: 'GET',
    path: '/',
    headers: {},
    body: '',
    signedHeaders: 'host;x-amz-date;x-amz-security-token',
    signature: '07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8',
    token: SUITE_TOKEN,
  },
];

const received = (vector: Vector, extra: Record<string, string>) => ({
  method: vector.method,
  path: vector.path,
  headers: { host: 'example.amazonaws.com', ...vector.headers, ...extra },
  body: Buffer.from(vector.body),
});

describe('the independent verifier, on the published vectors', () => {
  for (const vector of VECTORS) {
    test(`${vector.name}: accepts the published signature and refuses it altered`, () => {
      const headers = {
        'x-amz-date': SUITE_DATE,
        ...(vector.token ? { 'x-amz-security-token': vector.token } : {}),
        authorization: `${CREDENTIAL}, SignedHeaders=${vector.signedHeaders}, Signature=${vector.signature}`,
      };
      const result = verifySigV4(received(vector, headers), SUITE_KEY.secretAccessKey);
      assert.equal(result.ok, true, result.reason);
      assert.deepEqual([result.accessKeyId, result.region, result.service], ['AKIDEXAMPLE', 'us-east-1', 'service']);
      if (vector.canonicalHash) assert.equal(result.stringToSign?.split('\n')[3], vector.canonicalHash);

      const flipped = vector.signature.replace(/^./, (c) => (c === '0' ? '1' : '0'));
      assert.equal(
        verifySigV4(received(vector, { ...headers, authorization: headers.authorization.replace(vector.signature, flipped) }), SUITE_KEY.secretAccessKey).ok,
        false,
      );
      assert.equal(verifySigV4(received(vector, headers), 'another-secret').ok, false);
      assert.equal(verifySigV4({ ...received(vector, headers), method: vector.method === 'GET' ? 'PUT' : 'GET' }, SUITE_KEY.secretAccessKey).ok, false);
    });
  }

  test('get-vanilla: the canonical request is the published one', () => {
    const vector = VECTORS[0]!;
    const result = verifySigV4(
      received(vector, { 'x-amz-date': SUITE_DATE, authorization: `${CREDENTIAL}, SignedHeaders=host;x-amz-date, Signature=${vector.signature}` }),
      SUITE_KEY.secretAccessKey,
    );
    assert.equal(
      result.canonicalRequest,
      ['GET', '/', '', 'host:example.amazonaws.com', 'x-amz-date:20150830T123600Z', '', 'host;x-amz-date', EMPTY_HASH].join('\n'),
    );
  });

  test('a path is encoded once more for a non-S3 service: %2F signs as %252F and : as %3A', () => {
    const request = {
      method: 'POST',
      path: '/model/arn%3Aaws%2Fx:1/invoke',
      headers: { host: 'h', 'x-amz-date': SUITE_DATE, authorization: `${CREDENTIAL}, SignedHeaders=host;x-amz-date, Signature=${'0'.repeat(64)}` },
      body: Buffer.alloc(0),
    };
    assert.equal(verifySigV4(request, 'k').canonicalRequest?.split('\n')[1], '/model/arn%253Aaws%252Fx%3A1/invoke');
  });
});

describe("createAwsSigner, on the vectors' requests", () => {
  for (const vector of VECTORS) {
    test(`${vector.name}: the verifier accepts what it signs, over the vector's headers and the body hash`, async () => {
      const signer = createAwsSigner({
        region: 'us-east-1',
        service: 'service',
        credentials: async () => ({ ...SUITE_KEY, ...(vector.token ? { sessionToken: vector.token } : {}) }),
        now: () => new Date('2015-08-30T12:36:00Z'),
      });
      const signed = await signer.sign({
        method: vector.method,
        origin: 'https://example.amazonaws.com',
        path: vector.path,
        headers: { ...vector.headers, 'User-Agent': 'x' },
        body: vector.body === '' ? null : Buffer.from(vector.body),
      });
      assert.equal(signed['x-amz-date'], SUITE_DATE);
      assert.equal(signed['x-amz-security-token'], vector.token);
      assert.ok(
        signed.authorization?.startsWith(
          `${CREDENTIAL}, SignedHeaders=${[...vector.signedHeaders.split(';'), 'x-amz-content-sha256'].sort().join(';')}, Signature=`,
        ),
        signed.authorization,
      );
      const result = verifySigV4(received(vector, { 'user-agent': 'changed later by the HTTP client', ...signed }), SUITE_KEY.secretAccessKey);
      assert.equal(result.ok, true, result.reason);
      // Every other part of the canonical request is the published one: with x-amz-content-sha256
      // taken out, the verifier's canonical request hashes to the suite's.
      if (vector.canonicalHash) {
        const withoutHashHeader = verifySigV4(
          received(vector, { 'x-amz-date': SUITE_DATE, authorization: `${CREDENTIAL}, SignedHeaders=${vector.signedHeaders}, Signature=${vector.signature}` }),
          SUITE_KEY.secretAccessKey,
        );
        assert.equal(withoutHashHeader.stringToSign?.split('\n')[3], vector.canonicalHash);
      }
    });
  }

  test('a client-sent x-amz-content-sha256 or x-amz-date is not trusted: the body is hashed', async () => {
    const signer = createAwsSigner({ region: 'us-east-1', credentials: async () => SUITE_KEY });
    const body = Buffer.from('{"a":1}');
    const signed = await signer.sign({
      method: 'POST',
      origin: 'https://bedrock-runtime.us-east-1.amazonaws.com',
      path: '/model/m/invoke',
      headers: { 'x-amz-content-sha256': EMPTY_HASH, 'X-Amz-Date': '20000101T000000Z' },
      body,
    });
    assert.equal(signed['x-amz-content-sha256'], '015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862');
    assert.notEqual(signed['x-amz-date'], '20000101T000000Z');
  });
});

describe('credentials from the shared files', () => {
  const SAVED = [
    'AWS_SHARED_CREDENTIALS_FILE',
    'AWS_CONFIG_FILE',
    'AWS_PROFILE',
    'AWS_ACCESS_KEY_ID',
    'AWS_SECRET_ACCESS_KEY',
    'AWS_SESSION_TOKEN',
    'AWS_EC2_METADATA_DISABLED',
    'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI',
    'AWS_CONTAINER_CREDENTIALS_FULL_URI',
    'AWS_WEB_IDENTITY_TOKEN_FILE',
    'AWS_ROLE_ARN',
  ];
  const saved = new Map(SAVED.map((name) => [name, process.env[name]]));
  const dir = mkdtempSync(path.join(tmpdir(), 'aws-signer-'));
  const PROFILE_SECRET = 'profileSecretKeyAAAAAAAAAAAAAAAAAAAAAAAAA';
  const TOKEN_SECRET = 'tokenProfileSecretBBBBBBBBBBBBBBBBBBBBBBB';
  const SESSION_TOKEN = 'IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKENCCCCCCCCCCCCCCCC';
  const DEFAULT_SECRET = 'defaultSecretDDDDDDDDDDDDDDDDDDDDDDDDDDDDD';

  before(() => {
    writeFileSync(
      path.join(dir, 'credentials'),
      [
        '[default]',
        'aws_access_key_id = AKIADEFAULT',
        `aws_secret_access_key = ${DEFAULT_SECRET}`,
        '[bedrock-test]',
        'aws_access_key_id = AKIAPROFILE',
        `aws_secret_access_key = ${PROFILE_SECRET}`,
        '[with-token]',
        'aws_access_key_id = ASIATOKEN',
        `aws_secret_access_key = ${TOKEN_SECRET}`,
        `aws_session_token = ${SESSION_TOKEN}`,
        '',
      ].join('\n'),
    );
    writeFileSync(path.join(dir, 'config'), '');
    for (const name of SAVED) delete process.env[name];
    process.env.AWS_SHARED_CREDENTIALS_FILE = path.join(dir, 'credentials');
    process.env.AWS_CONFIG_FILE = path.join(dir, 'config');
    // No instance-metadata call leaves the machine when a profile is missing.
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
  });
  after(() => {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const bedrockRequest = (extra: Record<string, string> = {}) => ({
    method: 'POST',
    origin: 'https://bedrock-runtime.us-west-2.amazonaws.com',
    path: '/model/arn:aws:bedrock:us-west-2:123456789012:inference-profile%2Fus.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke',
    headers: { 'content-type': 'application/json', 'anthropic-beta': 'x', ...extra },
    body: Buffer.from('{"anthropic_version":"bedrock-2023-05-31","max_tokens":1,"messages":[]}'),
  });
  const asReceived = (request: ReturnType<typeof bedrockRequest>, signed: Record<string, string>) => ({
    method: request.method,
    path: request.path,
    headers: { host: 'bedrock-runtime.us-west-2.amazonaws.com', ...request.headers, ...signed },
    body: request.body,
  });

  test("a named profile signs with that profile's key, over a path with ':' and '%2F'", async () => {
    const signer = createAwsSigner({ region: 'us-west-2', profile: 'bedrock-test' });
    const request = bedrockRequest();
    const signed = await signer.sign(request);
    const result = verifySigV4(asReceived(request, signed), PROFILE_SECRET);
    assert.equal(result.ok, true, result.reason);
    assert.deepEqual([result.accessKeyId, result.region, result.service], ['AKIAPROFILE', 'us-west-2', 'bedrock']);
    assert.equal(
      result.canonicalRequest?.split('\n')[1],
      '/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%252Fus.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke',
    );
    assert.deepEqual(result.signedHeaders, ['content-type', 'host', 'x-amz-content-sha256', 'x-amz-date']);
    assert.equal(verifySigV4(asReceived(request, signed), DEFAULT_SECRET).ok, false);
    assert.equal(signed['x-amz-security-token'], undefined);
  });

  test('a session token is sent as x-amz-security-token, and signed', async () => {
    const signer = createAwsSigner({ region: 'us-west-2', profile: 'with-token' });
    const request = bedrockRequest();
    const signed = await signer.sign(request);
    assert.equal(signed['x-amz-security-token'], SESSION_TOKEN);
    const result = verifySigV4(asReceived(request, signed), TOKEN_SECRET);
    assert.equal(result.ok, true, result.reason);
    assert.ok(result.signedHeaders?.includes('x-amz-security-token'));
    assert.equal(verifySigV4(asReceived(request, { ...signed, 'x-amz-security-token': 'another' }), TOKEN_SECRET).ok, false);
  });

  test('without a profile, the default chain reads the default profile', async () => {
    const signed = await createAwsSigner({ region: 'us-west-2' }).sign(bedrockRequest());
    assert.equal(verifySigV4(asReceived(bedrockRequest(), signed), DEFAULT_SECRET).ok, true);
  });

  test('a missing profile fails with a message naming it, and no secret', async () => {
    const signer = createAwsSigner({ region: 'us-west-2', profile: 'absent' });
    const error: Error = await signer.sign(bedrockRequest()).then(
      () => assert.fail('signed without credentials'),
      (e: Error) => e,
    );
    assert.match(error.message, /^no AWS credentials found from AWS profile "absent": /);
    for (const secret of [PROFILE_SECRET, TOKEN_SECRET, SESSION_TOKEN, DEFAULT_SECRET]) assert.ok(!error.message.includes(secret), error.message);
  });
});

describe('memoised credentials', () => {
  test('concurrent first signs fetch the credentials once', async () => {
    let calls = 0;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const signer = createAwsSigner({
      region: 'us-east-1',
      credentials: async () => {
        calls++;
        await gate;
        return SUITE_KEY;
      },
    });
    const request = { method: 'POST', origin: 'https://h', path: '/model/m/invoke', headers: {}, body: null };
    const signing = Array.from({ length: 8 }, () => signer.sign(request));
    release();
    const all = await Promise.all(signing);
    assert.equal(calls, 1);
    assert.equal(all.length, 8);
    await signer.sign(request);
    assert.equal(calls, 1, 'credentials without an expiration are kept');
  });

  test('credentials are fetched again five minutes before they expire, and a failed refresh of still-valid ones keeps them', async () => {
    let clock = Date.parse('2026-01-01T00:00:00Z');
    const issued: AwsCredentialIdentity[] = [];
    let fail = false;
    const signer = createAwsSigner({
      region: 'us-east-1',
      now: () => new Date(clock),
      credentials: async () => {
        if (fail) throw new Error('the refresh failed');
        const next = { accessKeyId: `AKID${issued.length}`, secretAccessKey: `secret${issued.length}`, expiration: new Date(clock + 60 * 60_000) };
        issued.push(next);
        return next;
      },
    });
    const request = { method: 'POST', origin: 'https://h', path: '/', headers: {}, body: null };
    const keyOf = async () => /Credential=(\w+)\//.exec((await signer.sign(request)).authorization!)![1];
    assert.equal(await keyOf(), 'AKID0');
    clock += 54 * 60_000; // six minutes left: kept
    assert.equal(await keyOf(), 'AKID0');
    clock += 2 * 60_000; // four minutes left: fetched again
    assert.equal(await keyOf(), 'AKID1');
    assert.equal(issued.length, 2);
    clock += 56 * 60_000; // four minutes left on AKID1, and the refresh fails: AKID1 still signs
    fail = true;
    assert.equal(await keyOf(), 'AKID1');
    clock += 5 * 60_000; // expired, and the refresh fails: no signature
    await assert.rejects(signer.sign(request), /^Error: no AWS credentials found from the host's AWS credential provider: the refresh failed$/);
  });

  test('a failed first fetch is not kept: the next sign tries again', async () => {
    let calls = 0;
    const signer = createAwsSigner({
      region: 'us-east-1',
      credentials: async () => {
        calls++;
        if (calls === 1) throw new Error('not yet');
        return SUITE_KEY;
      },
    });
    const request = { method: 'GET', origin: 'https://h', path: '/', headers: {}, body: null };
    await assert.rejects(signer.sign(request), /not yet/);
    assert.ok((await signer.sign(request)).authorization);
    assert.equal(calls, 2);
  });
});
