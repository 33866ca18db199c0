// Bedrock, Vertex and Foundry providers from the config file: a valid section becomes the library's
// provider options, a mistake names the file and the field as the file spells it; a daemon on such a
// file signs with an AWS profile from a shared credentials file and takes Google tokens for a key
// file; the env a container gets for each `claudeVia` (contribute() and the control API) holds no secret.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { resolveCredentials } from '../src/config/credentials.ts';
import { ConfigError, loadConfig } from '../src/config/load.ts';
import { type Daemon, startDaemon } from '../src/control/daemon.ts';
import { controlSocketPath } from '../src/control/socket.ts';
import { contribute } from '../src/runner/contribute.ts';
import { STANDIN_USAGE } from './support/bedrock-standin.ts';
import {
  AWS_ACCESS_KEY_ID,
  AWS_SECRET,
  AWS_SESSION_TOKEN,
  BEDROCK_REGION,
  type CloudUpstreams,
  call,
  startCloudUpstreams,
  VERTEX_PROJECT,
  VERTEX_REGION,
} from './support/cloud-fixture.ts';
import { request } from './support/http.ts';

describe('[providers.NAME] of kind bedrock, vertex and foundry', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-cloud-cfg-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('a valid file becomes the providers the library takes', async () => {
    const file = path.join(dir, 'valid.toml');
    await writeFile(
      file,
      `[providers.bedrock]
kind = "bedrock"
region = "eu-west-1"
inference_profile = "eu"
aws_profile = "claude"

[providers.vertex]
kind = "vertex"
region = "global"
project_id = "my-project"
credentials_file = "${path.join(dir, 'sa.json')}"

[providers.foundry]
kind = "foundry"
base_url = "https://res.services.ai.azure.com/anthropic"
api_key_env = "CLOUD_CFG_FOUNDRY_KEY"
`,
    );
    const config = await loadConfig(file);
    process.env.CLOUD_CFG_FOUNDRY_KEY = 'foundry-key-from-env';
    try {
      const { providers, summary } = await resolveCredentials(config.providers);
      assert.deepEqual(
        { ...providers.bedrock, timeouts: undefined },
        {
          kind: 'bedrock',
          baseUrl: undefined,
          apiKey: undefined,
          apiKeys: [],
          oauthToken: undefined,
          dropBetas: undefined,
          apiVersion: undefined,
          region: 'eu-west-1',
          inferenceProfile: 'eu',
          awsProfile: 'claude',
          timeouts: undefined,
        },
      );
      assert.equal(providers.vertex!.projectId, 'my-project');
      assert.equal(providers.vertex!.region, 'global');
      assert.equal(providers.vertex!.googleCredentialsFile, path.join(dir, 'sa.json'));
      assert.equal(providers.foundry!.apiKey, 'foundry-key-from-env');
      assert.equal(summary.bedrock, 'AWS credentials (profile claude)');
      assert.match(summary.vertex!, /Google credentials \(file /);
    } finally {
      delete process.env.CLOUD_CFG_FOUNDRY_KEY;
    }
  });

  const cases: [string, string, RegExp][] = [
    ['foundry without base_url', '[providers.f]\nkind = "foundry"\napi_key_env = "K"', /providers\.f\.base_url: is required for foundry/],
    [
      'region on an anthropic provider',
      '[providers.anthropic]\napi_key_env = "K"\nregion = "us-east-1"',
      /providers\.anthropic\.region: is for bedrock and vertex/,
    ],
    ['project_id on a bedrock provider', '[providers.b]\nkind = "bedrock"\nregion = "us-east-1"\nproject_id = "p"', /providers\.b\.project_id: is for vertex/],
    ['bedrock without region', '[providers.b]\nkind = "bedrock"', /providers\.b\.region: is required for bedrock/],
    ['vertex without project_id', '[providers.v]\nkind = "vertex"\nregion = "us-east5"', /providers\.v\.project_id: is required for vertex/],
    [
      'a bad inference_profile',
      '[providers.b]\nkind = "bedrock"\nregion = "us-east-1"\ninference_profile = "mars"',
      /providers\.b\.inference_profile: must be one of/,
    ],
    ['a region that is no region name', '[providers.b]\nkind = "bedrock"\nregion = "us east 1"', /providers\.b\.region: must be a region name/],
    ['an unknown kind', '[providers.b]\nkind = "sagemaker"', /providers\.b\.kind: must be one of/],
  ];
  for (const [what, text, expected] of cases) {
    test(what, async () => {
      const file = path.join(dir, `${what.replace(/\W+/g, '-')}.toml`);
      await writeFile(file, text);
      const error = await loadConfig(file).then(
        () => assert.fail('the config loaded'),
        (e: unknown) => e,
      );
      assert.ok(error instanceof ConfigError, String(error));
      assert.ok(error.message.startsWith(`${file}: `), error.message);
      assert.match(error.message, expected);
      assert.doesNotMatch(error.message, /inferenceProfile|projectId|baseUrl/);
    });
  }
});

describe('a daemon on a config file with bedrock (an AWS profile) and vertex (a key file) providers', () => {
  let up: CloudUpstreams;
  let dir: string;
  let daemon: Daemon;
  const saved = { file: process.env.AWS_SHARED_CREDENTIALS_FILE, config: process.env.AWS_CONFIG_FILE };

  before(async () => {
    up = await startCloudUpstreams();
    dir = await mkdtemp(path.join(tmpdir(), 'gw-cloud-d-'));
    const credentials = path.join(dir, 'aws-credentials');
    await writeFile(
      credentials,
      `[cloudtest]\naws_access_key_id = ${AWS_ACCESS_KEY_ID}\naws_secret_access_key = ${AWS_SECRET}\naws_session_token = ${AWS_SESSION_TOKEN}\n`,
      { mode: 0o600 },
    );
    await writeFile(path.join(dir, 'aws-config'), '');
    // Read by the AWS SDK when it first signs.
    process.env.AWS_SHARED_CREDENTIALS_FILE = credentials;
    process.env.AWS_CONFIG_FILE = path.join(dir, 'aws-config');
    const configFile = path.join(dir, 'gateway.toml');
    await writeFile(
      configFile,
      `state_dir = "${path.join(dir, 's')}"
[providers.bedrock]
kind = "bedrock"
region = "${BEDROCK_REGION}"
inference_profile = "us"
aws_profile = "cloudtest"
base_url = "${up.bedrock.url}"

[providers.vertex]
kind = "vertex"
region = "${VERTEX_REGION}"
project_id = "${VERTEX_PROJECT}"
credentials_file = "${up.serviceAccount.file}"
base_url = "${up.vertex.url}"

[[routes]]
models = ["claude-sonnet-*"]
provider = "bedrock"
`,
    );
    daemon = await startDaemon({ configFile, logger: pino({ level: 'silent' }) });
  });
  after(async () => {
    await daemon.shutdown();
    await up.close();
    await rm(dir, { recursive: true, force: true });
    for (const [name, value] of [
      ['AWS_SHARED_CREDENTIALS_FILE', saved.file],
      ['AWS_CONFIG_FILE', saved.config],
    ] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  const mint = (body: Record<string, unknown>) =>
    request({
      socketPath: controlSocketPath(daemon.gateway.stateDir),
      path: '/v1/keys',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  test("the control API's mint with claudeVia vertex: the Vertex env, no secret; its key's calls are signed by the profile and by a Google token", async () => {
    const res = await mint({ group: 'cloud', claudeVia: 'vertex' });
    assert.equal(res.status, 201, res.body);
    const key = JSON.parse(res.body) as { socketPath: string; env: Record<string, string> };
    assert.equal(key.env.CLAUDE_CODE_USE_VERTEX, '1');
    assert.equal(key.env.CLAUDE_CODE_SKIP_VERTEX_AUTH, '1');
    assert.equal(key.env.ANTHROPIC_VERTEX_BASE_URL, 'http://127.0.0.1:9460/v1');
    assert.equal(key.env.ANTHROPIC_VERTEX_PROJECT_ID, 'gateway-placeholder');
    assert.equal(key.env.CLOUD_ML_REGION, 'us-east5');
    assert.equal(key.env.GOOGLE_APPLICATION_CREDENTIALS, undefined);
    for (const secret of up.secrets()) assert.ok(!res.body.includes(secret));

    const body = '{"anthropic_version":"vertex-2023-10-16","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}';
    // Claude Code's ANTHROPIC_VERTEX_BASE_URL with the placeholders it was given.
    const sonnet = await call(
      key.socketPath,
      'POST',
      '/v1/projects/gateway-placeholder/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict',
      body,
    );
    assert.equal(sonnet.status, 200, sonnet.body.toString());
    const signed = up.bedrock.seen.at(-1)!;
    assert.equal(signed.auth, 'sigv4');
    assert.equal(signed.accessKeyId, AWS_ACCESS_KEY_ID);
    assert.equal(signed.headers['x-amz-security-token'], AWS_SESSION_TOKEN);
    assert.equal(signed.path, '/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream');
    assert.match(sonnet.body.toString(), new RegExp(`"output_tokens":${STANDIN_USAGE.output_tokens}`));
    const haiku = await call(
      key.socketPath,
      'POST',
      '/v1/projects/p/locations/l/publishers/anthropic/models/claude-haiku-4-5@20251001:rawPredict',
      body.replace(',"stream":true', ''),
    );
    assert.equal(haiku.status, 200, haiku.body.toString());
    assert.equal(up.vertex.seen.at(-1)!.authOk, true);
    assert.equal(up.vertex.seen.at(-1)!.path, up.vertex.modelPath('claude-haiku-4-5@20251001', 'rawPredict'));
    for (const answer of [sonnet, haiku]) for (const secret of up.secrets()) assert.ok(!answer.body.includes(secret));
  });

  test('a bad claudeVia is a 400 naming the choices, and no key is minted', async () => {
    const keys = daemon.gateway.inspect().keys.length;
    const res = await mint({ group: 'cloud', claudeVia: 'azure' });
    assert.equal(res.status, 400);
    assert.match(res.body, /claudeVia must be one of anthropic, bedrock, vertex, foundry/);
    assert.equal(daemon.gateway.inspect().keys.length, keys);
  });

  test("contribute() with claudeVia bedrock: Claude Code's Bedrock mode on the shim, and no AWS credential", async () => {
    const contribution = await contribute(daemon.gateway, { group: 'cloud', claudeVia: 'bedrock' });
    try {
      const { env } = contribution;
      assert.equal(env.CLAUDE_CODE_USE_BEDROCK, '1');
      assert.equal(env.CLAUDE_CODE_SKIP_BEDROCK_AUTH, '1');
      assert.equal(env.ANTHROPIC_BEDROCK_BASE_URL, 'http://127.0.0.1:9460');
      assert.equal(env.AWS_REGION, 'us-east-1');
      for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_BEARER_TOKEN_BEDROCK'])
        assert.equal(env[name], undefined);
      const values = JSON.stringify(env);
      for (const secret of [...up.secrets(), AWS_ACCESS_KEY_ID]) assert.ok(!values.includes(secret));
    } finally {
      await contribution.close();
    }
  });
});
