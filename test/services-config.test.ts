// `[services.NAME]` from the config file to a container's env: its mistakes named as the file spells
// them, a valid section turned into createGateway options with the token read from env, file or
// command, the daemon following a token file and a reload that removes a service, `keys mint
// --service` (env, mcp.json, an unknown name), and contribute()/render() on another shim port.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { resolveCredentials } from '../src/config/credentials.ts';
import { ConfigError, loadConfig } from '../src/config/load.ts';
import { settingsFrom, tokenSources } from '../src/config/settings.ts';
import { startDaemon, type Daemon } from '../src/control/daemon.ts';
import { controlSocketPath } from '../src/control/socket.ts';
import { contribute } from '../src/runner/contribute.ts';
import { render } from '../src/runner/render.ts';
import { eventually } from './support/fixture.ts';
import { request } from './support/http.ts';
import { gateway } from './support/cli.ts';
import { startRestService, type RestCredential, type RestService } from './support/rest-service.ts';

describe('[services.NAME] mistakes name the file and the field as the file spells it', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-svc-cfg-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const base = 'base_url = "http://127.0.0.1:1/mcp"\ntoken_env = "T"\n';
  const cases: [string, string, RegExp][] = [
    ['a missing base_url', '[services.t]\ntoken_env = "T"', /services\.t\.base_url: is required/],
    [
      'a base_url that is not http(s)',
      '[services.t]\nbase_url = "ftp://x"\ntoken_env = "T"',
      /services\.t\.base_url: must be an http\(s\) URL, got "ftp:\/\/x"/,
    ],
    ['a base_url that is not a URL', '[services.t]\nbase_url = "tickets"\ntoken_env = "T"', /services\.t\.base_url: must be an http\(s\) URL/],
    ['no token source', '[services.t]\nbase_url = "http://127.0.0.1:1"', /services\.t: names no token: set token_env, token_file or token_command/],
    ['two injection ways', `[services.t]\n${base}header = "X-Key"\nquery_param = "k"`, /services\.t: sets more than one of header, basic_user and query_param/],
    ['a prefix with basic_user', `[services.t]\n${base}basic_user = "u"\nprefix = "Token "`, /services\.t\.prefix: goes with header only/],
    ['a header the gateway owns', `[services.t]\n${base}header = "host"`, /services\.t\.header: must be a header name the gateway does not own, got "host"/],
    ['a header that is not a name', `[services.t]\n${base}header = "a b"`, /services\.t\.header: must be a header name/],
    ['a prefix on two lines', `[services.t]\n${base}prefix = "a\\nb"`, /services\.t\.prefix: must be a string on one line/],
    ['a basic_user with a colon', `[services.t]\n${base}basic_user = "a:b"`, /services\.t\.basic_user: must be the user name/],
    ['a bad query_param', `[services.t]\n${base}query_param = "a b"`, /services\.t\.query_param: must be a query parameter name/],
    ['a bad method', `[services.t]\n${base}methods = ["G3T"]`, /services\.t\.methods: must be a non-empty array of HTTP methods/],
    ['CONNECT among the methods', `[services.t]\n${base}methods = ["get", "connect"]`, /services\.t\.methods: CONNECT cannot be allowed through a service/],
    ['a path glob without "/"', `[services.t]\n${base}paths = ["api/**"]`, /services\.t\.paths: must be path globs starting with "\/".*got "api\/\*\*"/],
    ['a bad service name', `[services."Bad Name"]\n${base}`, /services\."Bad Name": a service name is lower-case letters, digits, "-" and "_"/],
    [
      'an unknown field (a literal token)',
      `[services.t]\n${base}token = "literal"`,
      /services\.t\.token: unknown field \(expected one of: base_url, kind, token_env/,
    ],
    ['a stream that is not a boolean', `[services.t]\n${base}stream = "yes"`, /services\.t\.stream: must be true or false/],
    ['a pass_client_auth that is not a boolean', `[services.t]\n${base}pass_client_auth = 1`, /services\.t\.pass_client_auth: must be true or false/],
    ['a bad duration', `[services.t]\n${base}timeouts = { idle = "soon" }`, /services\.t\.timeouts\.idle: must be a duration/],
    ['an unknown timeout', `[services.t]\n${base}timeouts = { read = "1s" }`, /services\.t\.timeouts\.read: unknown field/],
    ['a bad kind', `[services.t]\n${base}kind = "grpc"`, /services\.t\.kind: must be "http" or "mcp"/],
    ['a negative max_concurrent', `[services.t]\n${base}max_concurrent = -1`, /services\.t\.max_concurrent: must be a non-negative integer/],
    ['a fractional max_body_bytes', `[services.t]\n${base}max_body_bytes = 1.5`, /services\.t\.max_body_bytes: must be a non-negative integer/],
    ['a section that is not a table', '[services]\nt = 3', /services\.t: must be a table/],
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
      // The library's spelling of a field never reaches the operator.
      assert.doesNotMatch(error.message, /baseUrl|basicUser|maxConcurrent|maxBodyBytes|passClientAuth|inject\.|\.basic:|\.query:|\.$/);
    });
  }

  test('through the CLI: exit status 2 and one line naming the file and field', async () => {
    const file = path.join(dir, 'cli.toml');
    await writeFile(file, `[services.t]\n${base}max_concurrent = "many"`);
    const result = await gateway(['keys', 'list', '--config', file]);
    assert.equal(result.code, 2);
    assert.equal(result.stderr, `gateway: ${file}: services.t.max_concurrent: must be a non-negative integer\n`);
  });
});

describe('a valid [services.NAME] becomes createGateway options', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-svc-ok-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("the documented example loads into the ServiceSource the library's options come from", async () => {
    const file = path.join(dir, 'full.toml');
    await writeFile(
      file,
      `[services.tickets]
base_url = "http://127.0.0.1:4000/mcp"
kind = "mcp"
token_env = "TICKETS_TOKEN"
header = "Authorization"
prefix = "Bearer "
methods = ["GET", "POST"]
paths = ["/api/**"]
groups = ["research"]
stream = true
pass_client_auth = false
rpm = 60
max_concurrent = 16
max_body_bytes = 1048576
timeouts = { connect = "10s", first_byte = "60s", idle = "5m", total = "10m" }
`,
    );
    const config = await loadConfig(file);
    assert.deepEqual(config.services, {
      tickets: {
        baseUrl: 'http://127.0.0.1:4000/mcp',
        kind: 'mcp',
        token: [{ env: 'TICKETS_TOKEN' }],
        inject: { header: 'Authorization', prefix: 'Bearer ' },
        methods: ['GET', 'POST'],
        paths: ['/api/**'],
        groups: ['research'],
        stream: true,
        passClientAuth: false,
        rpm: 60,
        maxConcurrent: 16,
        maxBodyBytes: 1048576,
        timeouts: { connectMs: 10_000, firstByteMs: 60_000, idleMs: 300_000, totalMs: 600_000 },
      },
    });
  });

  test('the injection defaults: Bearer for Authorization, no prefix for another header, Basic and query as written', async () => {
    const file = path.join(dir, 'inject.toml');
    const url = 'base_url = "http://127.0.0.1:4000"\ntoken_env = "T"\n';
    await writeFile(
      file,
      `[services.plain]\n${url}[services.auth]\n${url}header = "authorization"\n[services.keyed]\n${url}header = "X-Api-Key"\n[services.prefixed]\n${url}prefix = "token "\n[services.basic]\n${url}basic_user = "x-access-token"\n[services.query]\n${url}query_param = "api_key"\n`,
    );
    const inject = Object.fromEntries(Object.entries((await loadConfig(file)).services).map(([name, s]) => [name, s.inject]));
    assert.deepEqual(inject, {
      plain: undefined,
      auth: { header: 'authorization', prefix: 'Bearer ' },
      keyed: { header: 'X-Api-Key', prefix: '' },
      prefixed: { header: 'authorization', prefix: 'token ' },
      basic: { basic: 'x-access-token' },
      query: { query: 'api_key' },
    });
  });

  test('settingsFrom reads each token from its env var, file or command; the token never sits in the config', async () => {
    const tokenFile = path.join(dir, 'file.token');
    await writeFile(tokenFile, 'file-token-6a1f\n', { mode: 0o600 });
    const file = path.join(dir, 'tokens.toml');
    const url = 'base_url = "http://127.0.0.1:4000"\n';
    await writeFile(
      file,
      `[services.from-env]\n${url}token_env = "SVC_CFG_TEST_TOKEN"\n[services.from-file]\n${url}token_file = "${tokenFile}"\n[services.from-command]\n${url}kind = "mcp"\ntoken_command = "printf 'command-token-93c0\\\\n'"\n[services.unset]\n${url}token_env = "SVC_CFG_TEST_UNSET"\n`,
    );
    process.env.SVC_CFG_TEST_TOKEN = 'env-token-25be';
    delete process.env.SVC_CFG_TEST_UNSET;
    try {
      const config = await loadConfig(file);
      assert.ok(!/env-token|file-token/.test(JSON.stringify(config)), 'the config holds where tokens are, not tokens');
      const tokens = await resolveCredentials(tokenSources(config));
      const settings = await settingsFrom(config, {}, tokens.providers);
      const credentials = Object.fromEntries(Object.entries(settings.services ?? {}).map(([name, s]) => [name, s.credential]));
      assert.deepEqual(credentials, {
        'from-env': 'env-token-25be',
        'from-file': 'file-token-6a1f',
        'from-command': 'command-token-93c0',
        unset: undefined,
      });
      assert.equal(settings.services?.['from-command']?.kind, 'mcp');
      assert.equal(settings.services?.['from-file']?.baseUrl, 'http://127.0.0.1:4000');
      assert.ok(!('token' in settings.services!['from-env']!), 'the sources stay out of the options');
    } finally {
      delete process.env.SVC_CFG_TEST_TOKEN;
    }
  });
});

describe('the daemon with [services.NAME]', () => {
  const OLD_TOKEN = 'svc-cfg-old-token-4d2a';
  const NEW_TOKEN = 'svc-cfg-new-token-b71e';
  const credential: RestCredential = { kind: 'bearer', token: OLD_TOKEN };
  let dir: string;
  let rest: RestService;
  let daemon: Daemon;
  let configFile: string;
  let tokenFile: string;
  let logs = '';

  const config = (withTickets: boolean) =>
    `state_dir = "${path.join(dir, 's')}"
[providers.anthropic]
api_key_env = "SVC_CFG_NO_SUCH_VAR"
${withTickets ? `[services.tickets]\nbase_url = "${rest.url}"\ntoken_file = "${tokenFile}"\npaths = ["/api/**"]\n` : ''}[services.team-notes]
kind = "mcp"
base_url = "${rest.url}/mcp"
token_command = "echo notes-token"
`;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-svc-d-'));
    rest = await startRestService({ credential });
    tokenFile = path.join(dir, 'tickets.token');
    await writeFile(tokenFile, `${OLD_TOKEN}\n`, { mode: 0o600 });
    configFile = path.join(dir, 'gateway.toml');
    await writeFile(configFile, config(true));
    const logger = pino(
      { level: 'info' },
      {
        write(line: string) {
          logs += line;
        },
      },
    );
    daemon = await startDaemon({ configFile, logger });
  });
  after(async () => {
    await daemon.shutdown();
    await rest.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('keys mint --service: the env names each service on the shim, mcp.json lists the MCP one', async () => {
    const minted = await gateway(['keys', 'mint', '--config', configFile, '--group', 'research', '--service', 'tickets,team-notes', '--json']);
    assert.equal(minted.code, 0, minted.stderr);
    const key = JSON.parse(minted.stdout) as { id: string; dir: string; services: unknown; env: Record<string, string> };
    assert.deepEqual(key.services, [
      { name: 'tickets', kind: 'http' },
      { name: 'team-notes', kind: 'mcp' },
    ]);
    assert.equal(key.env.GATEWAY_SERVICE_TICKETS_URL, 'http://127.0.0.1:9460/svc/tickets');
    assert.equal(key.env.GATEWAY_SERVICE_TEAM_NOTES_URL, 'http://127.0.0.1:9460/svc/team-notes');
    assert.equal(key.env.GATEWAY_MCP_CONFIG, '/run/gateway/mcp.json');
    assert.deepEqual(JSON.parse(await readFile(path.join(key.dir, 'mcp.json'), 'utf8')), {
      mcpServers: { 'team-notes': { type: 'http', url: 'http://127.0.0.1:9460/svc/team-notes' } },
    });
    assert.ok(!minted.stdout.includes('notes-token') && !minted.stdout.includes(OLD_TOKEN));

    // Without an MCP service: no GATEWAY_MCP_CONFIG and no mcp.json; the plain output lists the env.
    const plain = await gateway(['keys', 'mint', '--config', configFile, '--group', 'research', '--service', 'tickets']);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, /^ {2}GATEWAY_SERVICE_TICKETS_URL=http:\/\/127\.0\.0\.1:9460\/svc\/tickets$/m);
    assert.doesNotMatch(plain.stdout, /GATEWAY_MCP_CONFIG|TEAM_NOTES/);
    const plainDir = /^dir {5}(\S+)/m.exec(plain.stdout)![1]!;
    assert.deepEqual((await readdir(plainDir)).sort(), ['gateway.sock', 'shim.mjs']);
  });

  test('keys mint --service nope: exit status 2 naming the configured services, and no key', async () => {
    const before = daemon.gateway.keys().length;
    const result = await gateway(['keys', 'mint', '--config', configFile, '--group', 'research', '--service', 'nope']);
    assert.equal(result.code, 2);
    assert.equal(result.stderr, 'gateway: mint `services`: no service "nope" (configured: tickets, team-notes)\n');
    assert.equal(result.stdout, '');
    assert.equal(daemon.gateway.keys().length, before);
  });

  test('the control API with shimPort: env and mcp.json on that port', async () => {
    const res = await request({
      socketPath: controlSocketPath(daemon.gateway.stateDir),
      path: '/v1/keys',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ group: 'research', services: ['team-notes'], shimPort: 9999 }),
    });
    assert.equal(res.status, 201, res.body);
    const key = JSON.parse(res.body) as { dir: string; env: Record<string, string> };
    assert.equal(key.env.GATEWAY_SERVICE_TEAM_NOTES_URL, 'http://127.0.0.1:9999/svc/team-notes');
    assert.equal(key.env.ANTHROPIC_BASE_URL, 'http://127.0.0.1:9999');
    assert.equal(JSON.parse(await readFile(path.join(key.dir, 'mcp.json'), 'utf8')).mcpServers['team-notes'].url, 'http://127.0.0.1:9999/svc/team-notes');
  });

  test('contribute() on port 9999 and render(): the service env and mcp.json on that port, in the runtime argv', async () => {
    const c = await contribute(daemon.gateway, { group: 'research', services: ['tickets', 'team-notes'], port: 9999 });
    try {
      assert.equal(c.env.GATEWAY_SERVICE_TICKETS_URL, 'http://127.0.0.1:9999/svc/tickets');
      assert.equal(c.env.GATEWAY_SERVICE_TEAM_NOTES_URL, 'http://127.0.0.1:9999/svc/team-notes');
      assert.equal(c.env.GATEWAY_MCP_CONFIG, '/run/gateway/mcp.json');
      assert.deepEqual(JSON.parse(await readFile(path.join(c.key.dir, 'mcp.json'), 'utf8')), {
        mcpServers: { 'team-notes': { type: 'http', url: 'http://127.0.0.1:9999/svc/team-notes' } },
      });
      const podman = render('podman', c, { image: 'localhost/agent', command: ['claude', '--mcp-config', '/run/gateway/mcp.json'] });
      assert.ok(podman.includes('GATEWAY_SERVICE_TICKETS_URL=http://127.0.0.1:9999/svc/tickets'), podman.join(' '));
      assert.ok(podman.includes('GATEWAY_MCP_CONFIG=/run/gateway/mcp.json'));
      const bwrap = render('bwrap', c, { command: ['claude'] }).join(' ');
      assert.ok(bwrap.includes('--setenv GATEWAY_SERVICE_TEAM_NOTES_URL http://127.0.0.1:9999/svc/team-notes'), bwrap);
      assert.ok(!podman.join(' ').includes('notes-token') && !bwrap.includes(OLD_TOKEN));
    } finally {
      await c.close();
    }
  });

  test('a changed token_file is picked up: the next request through the socket carries the new token', async () => {
    const key = await daemon.gateway.mint({ group: 'research', services: ['tickets'] });
    const get = () => request({ socketPath: key.socketPath, path: '/svc/tickets/api/tickets/7', headers: { authorization: 'Bearer container-placeholder' } });
    const first = await get();
    assert.equal(first.status, 200, first.body);
    assert.equal(rest.requests.at(-1)!.headers.authorization, `Bearer ${OLD_TOKEN}`);

    credential.token = NEW_TOKEN;
    const changes = logs.split('credentials changed').length;
    // Tools replace token files by rename; the daemon watches the directory.
    await writeFile(`${tokenFile}.new`, `${NEW_TOKEN}\n`, { mode: 0o600 });
    await rename(`${tokenFile}.new`, tokenFile);
    await eventually(() => logs.split('credentials changed').length > changes, 5000);
    const second = await get();
    assert.equal(second.status, 200, second.body);
    assert.equal(rest.requests.at(-1)!.headers.authorization, `Bearer ${NEW_TOKEN}`);
    assert.ok(!logs.includes(NEW_TOKEN) && !logs.includes(OLD_TOKEN), 'no token in the log');
  });

  test('reload() without the section: the service answers 404 with nothing sent upstream, and minting it is refused', async () => {
    const key = await daemon.gateway.mint({ group: 'research', services: ['tickets', 'team-notes'] });
    const path_ = '/svc/tickets/api/tickets/8';
    assert.equal((await request({ socketPath: key.socketPath, path: path_ })).status, 200);
    await writeFile(configFile, config(false));
    await daemon.reload();
    const seen = rest.requests.length;
    const gone = await request({ socketPath: key.socketPath, path: path_ });
    assert.equal(gone.status, 404);
    assert.match(gone.body, /no service \\"tickets\\" for this key/, gone.body);
    assert.equal(rest.requests.length, seen, 'nothing went upstream');
    assert.deepEqual(Object.keys(daemon.config.services), ['team-notes']);
    const minted = await gateway(['keys', 'mint', '--config', configFile, '--group', 'research', '--service', 'tickets']);
    assert.equal(minted.code, 2);
    assert.match(minted.stderr, /no service "tickets" \(configured: team-notes\)/);
  });
});
