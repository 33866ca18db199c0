// The forward proxy on a key's socket (issue 14): tunnels and plain HTTP requests to hosts the key's
// policy allows, refused with a message the model can act on otherwise, and the checks that make the
// allowlist hold: addresses resolved and checked on the host and connected to as checked, TLS server
// name bound to the tunnel's host, byte and tunnel limits, revocation. Real sockets, real TLS, a real
// DNS server on loopback; the "internet" is servers on 127.0.0.1 reached through pinned names.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import type { EgressOptions } from '../src/index.ts';
import type { EgressRecord } from '../src/egress/record.ts';
import { startDnsServer, type DnsServer } from './support/dns-server.ts';
import { eventually, startFixture, type Fixture } from './support/fixture.ts';
import { anthropicHeaders, request } from './support/http.ts';
import { createTestCa, type TestCa } from './support/test-ca.ts';

/** Sends a CONNECT on the key's socket; resolves with the answer's head (and body, for a refusal) and the socket. */
async function connectVia(socketPath: string, authority: string): Promise<{ status: number; head: string; body: string; socket: net.Socket }> {
  const socket = net.connect(socketPath);
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\n\r\n`);
  let received = Buffer.alloc(0);
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = received.subarray(0, end).toString();
      const status = Number(head.split(' ')[1]);
      if (status === 200) {
        socket.off('data', onData);
        // Paused, or the tunnel's first bytes would be emitted to no listener before the caller reads.
        socket.pause();
        if (received.length > end + 4) socket.unshift(received.subarray(end + 4));
        resolve({ status, head, body: '', socket });
      }
    };
    socket.on('data', onData);
    socket.once('end', () => {
      const text = received.toString();
      const end = text.indexOf('\r\n\r\n');
      resolve({ status: Number(text.split(' ')[1]), head: text.slice(0, end), body: text.slice(end + 4), socket });
    });
    socket.once('error', reject);
  });
}

/** An HTTPS GET through an open tunnel, with `servername` as the TLS server name (none when undefined). */
function getOverTunnel(socket: net.Socket, servername: string | undefined, ca: string, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const secure = tls.connect({ socket, servername: servername ?? '', ca, checkServerIdentity: () => undefined });
    secure.once('error', reject);
    secure.once('secureConnect', () => {
      const req = http.request({ createConnection: () => secure, path, headers: { host: servername ?? 'x', connection: 'close' } });
      req.once('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.once('end', () => {
          secure.destroy();
          resolve({ status: res.statusCode ?? 0, body });
        });
        res.once('error', reject);
      });
      req.once('error', reject);
      req.end();
    });
  });
}

/** A plain HTTP request through the proxy, in absolute form. */
function proxyRequest(
  socketPath: string,
  method: string,
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: url, headers: { host: new URL(url).host, ...headers } });
    req.once('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.once('error', reject);
    req.end();
  });
}

describe('egress through the key socket', () => {
  let fx: Fixture;
  let ca: TestCa;
  let dns: DnsServer;
  let site: https.Server;
  let plain: http.Server;
  let sitePort: number;
  let plainPort: number;
  let testEgress: EgressOptions;
  const plainRequests: { method?: string; url?: string; host?: string }[] = [];
  let loopbackConnections = 0;
  let bystander: net.Server;
  let bystanderPort: number;

  before(async () => {
    ca = createTestCa();
    site = https.createServer({ ...ca.issue(['pkg.test', 'other.test']) }, (req, res) => {
      const size = Number(new URL(req.url ?? '/', 'https://x').searchParams.get('size') ?? 0);
      res.end(size ? Buffer.alloc(size, 'x') : `hello from ${req.headers.host}`);
    });
    await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve));
    sitePort = (site.address() as net.AddressInfo).port;
    plain = http.createServer((req, res) => {
      plainRequests.push({ method: req.method, url: req.url, host: req.headers.host });
      res.end(`plain ${req.method} ${req.url}`);
    });
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    plainPort = (plain.address() as net.AddressInfo).port;
    bystander = net.createServer((socket) => {
      loopbackConnections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => bystander.listen(0, '127.0.0.1', resolve));
    bystanderPort = (bystander.address() as net.AddressInfo).port;
    // rebind.test: a public address on the first query, loopback on every later one.
    dns = await startDnsServer((name, type, n) => {
      if (name === 'rebind.test') return type === 'A' ? [n === 1 ? '93.184.216.34' : '127.0.0.1'] : [];
      if (name === 'private.test') return type === 'A' ? ['10.1.2.3'] : [];
      if (name === 'metadata.test') return type === 'A' ? ['169.254.169.254'] : [];
      return undefined;
    });
    testEgress = {
      hosts: { 'pkg.test': ['127.0.0.1'], 'other.test': ['127.0.0.1'] },
      dnsServers: [dns.address],
      connectTimeoutMs: 1000,
      presets: { testpkg: [`pkg.test:${sitePort}`] },
      groups: { ceiling: [`pkg.test:${sitePort}`] },
    };
    fx = await startFixture({}, { egress: testEgress });
  });
  after(async () => {
    await fx.close();
    site.close();
    plain.close();
    bystander.close();
    await dns.close();
    ca.close();
  });

  const auditLines = (): EgressRecord[] =>
    readFileSync(`${fx.stateDir}/audit.jsonl`, 'utf8')
      .split('\n')
      .filter((line) => line.includes('"record":"egress"'))
      .map((line) => JSON.parse(line) as EgressRecord);

  test('a key without egress is refused with a 403 that names the host and what would allow it', async () => {
    const key = await fx.gateway.mint({ group: 'none' });
    assert.equal(key.egress, false);
    const tunnel = await connectVia(key.socketPath, 'registry.npmjs.org:443');
    assert.equal(tunnel.status, 403);
    assert.match(tunnel.body, /registry\.npmjs\.org:443/);
    assert.match(tunnel.body, /preset "npm"/);
    assert.match(tunnel.head, /proxy-status: llm-socket-gateway; error=http_request_denied/);
    const plainHttp = await proxyRequest(key.socketPath, 'GET', 'http://deb.debian.org/debian/dists/');
    assert.equal(plainHttp.status, 403);
    assert.match(plainHttp.body, /GET http:\/\/deb\.debian\.org:80\/debian\/dists\//);
    assert.match(plainHttp.body, /preset "debian"/);
  });

  test('an allowed tunnel carries TLS to the named host; bytes, SNI and rule are audited', async () => {
    const key = await fx.gateway.mint({ group: 'g', egress: ['testpkg'] });
    assert.equal(key.egress, true);
    const tunnel = await connectVia(key.socketPath, `pkg.test:${sitePort}`);
    assert.equal(tunnel.status, 200);
    const answer = await getOverTunnel(tunnel.socket, 'pkg.test', ca.certPem);
    assert.deepEqual(answer, { status: 200, body: `hello from pkg.test` });
    await eventually(() => auditLines().some((line) => line.keyId === key.id && line.decision === 'allowed'));
    const line = auditLines().find((entry) => entry.keyId === key.id)!;
    assert.equal(line.host, 'pkg.test');
    assert.equal(line.sni, 'pkg.test');
    assert.equal(line.address, '127.0.0.1');
    assert.equal(line.rule, `testpkg: pkg.test:${sitePort}`);
    assert.ok(line.bytesUp > 100 && line.bytesDown > 100, JSON.stringify(line));
    const use = fx.gateway.inspect().keys.find((entry) => entry.id === key.id)!.egressUse!;
    assert.equal(use.tunnels, 1);
    assert.equal(use.tunnelsOpen, 0);
    assert.equal(use.bytesDown, line.bytesDown);
  });

  test('a tunnel opened for one name cannot carry TLS to another name (SNI mismatch), nor TLS without a name', async () => {
    const key = await fx.gateway.mint({ group: 'g', egress: [`pkg.test:${sitePort}`] });
    for (const servername of ['other.test', undefined]) {
      const tunnel = await connectVia(key.socketPath, `pkg.test:${sitePort}`);
      assert.equal(tunnel.status, 200);
      await assert.rejects(getOverTunnel(tunnel.socket, servername, ca.certPem));
    }
    await eventually(() => auditLines().filter((line) => line.keyId === key.id && line.reason === 'sni_mismatch').length === 2);
    assert.ok(auditLines().some((line) => line.keyId === key.id && line.sni === 'other.test'));
  });

  test('a rule for one port does not open another', async () => {
    const key = await fx.gateway.mint({ group: 'g', egress: ['pkg.test:443'] });
    const tunnel = await connectVia(key.socketPath, `pkg.test:${sitePort}`);
    assert.equal(tunnel.status, 403);
    assert.match(tunnel.body, /pkg\.test:443 allows other ports/);
  });

  test('port 443 carries TLS only', async () => {
    const key = await fx.gateway.mint({ group: 'g', egress: [{ host: 'pkg.test', ports: [443], addresses: ['127.0.0.1'] }] });
    // Nothing listens on 127.0.0.1:443 here: refused at connect, answered 502, never a hang.
    const tunnel = await connectVia(key.socketPath, 'pkg.test:443');
    assert.ok([200, 502].includes(tunnel.status), String(tunnel.status));
    tunnel.socket.destroy();
  });

  test('SSRF: loopback, metadata, private and host names resolving to them are refused unless a rule names the address', async () => {
    const key = await fx.gateway.mint({ group: 'g', egress: ['*:*'] });
    const cases: [string, RegExp][] = [
      [`127.0.0.1:${bystanderPort}`, /loopback/],
      ['169.254.169.254:80', /link-local/],
      ['[fd00:ec2::254]:80', /private/],
      ['[::1]:80', /loopback/],
      ['100.64.0.1:80', /cgnat/],
      ['224.0.0.1:80', /multicast/],
      [`localhost:${bystanderPort}`, /loopback/],
      ['private.test:80', /10\.1\.2\.3, a private address/],
      ['metadata.test:80', /169\.254\.169\.254, a link-local address/],
    ];
    for (const [target, why] of cases) {
      const tunnel = await connectVia(key.socketPath, target);
      assert.equal(tunnel.status, 403, target);
      assert.match(tunnel.body, why, target);
      assert.match(tunnel.head, /destination_ip_prohibited/);
    }
    assert.equal(loopbackConnections, 0);
    // A rule that names the address reaches it.
    const named = await fx.gateway.mint({ group: 'g', egress: [{ host: '127.0.0.1', ports: [bystanderPort] }] });
    const allowed = await connectVia(named.socketPath, `127.0.0.1:${bystanderPort}`);
    assert.equal(allowed.status, 200);
    await eventually(() => loopbackConnections === 1);
    allowed.socket.destroy();
  });

  test('a DNS answer that changes after the check cannot redirect the connection (one lookup, checked address connected)', async () => {
    const key = await fx.gateway.mint({ group: 'g', egress: [`rebind.test:${bystanderPort}`] });
    const before = loopbackConnections;
    const tunnel = await connectVia(key.socketPath, `rebind.test:${bystanderPort}`);
    // The first answer (a public address) is the one connected to: unreachable here, so 502.
    assert.equal(tunnel.status, 502, tunnel.body);
    assert.equal(dns.queries('rebind.test', 'A'), 1);
    assert.equal(loopbackConnections, before, 'the later loopback answer was never used');
    // Asked again, the name now resolves to loopback: refused at the check.
    const again = await connectVia(key.socketPath, `rebind.test:${bystanderPort}`);
    assert.equal(again.status, 403);
    assert.match(again.body, /loopback/);
    assert.equal(loopbackConnections, before);
  });

  test('plain HTTP: method and path rules hold on the normalized path, and Host is the checked authority', async () => {
    const key = await fx.gateway.mint({ group: 'g', egress: [{ host: 'pkg.test', ports: [plainPort], methods: ['GET'], paths: ['/simple/'] }] });
    const base = `http://pkg.test:${plainPort}`;
    const ok = await proxyRequest(key.socketPath, 'GET', `${base}/simple/left-pad/?x=1`, { host: 'evil.example' });
    assert.equal(ok.status, 200);
    assert.equal(ok.body, 'plain GET /simple/left-pad/?x=1');
    assert.equal(plainRequests.at(-1)!.host, `pkg.test:${plainPort}`);
    const count = plainRequests.length;
    for (const [method, path, why] of [
      ['POST', '/simple/x', /allows other methods/],
      ['GET', '/admin', /allows other paths/],
      ['GET', '/simple/../admin', /allows other paths/],
      ['GET', '/simple/%2e%2e/admin', /allows other paths/],
    ] as const) {
      const refused = await proxyRequest(key.socketPath, method, `${base}${path}`);
      assert.equal(refused.status, 403, `${method} ${path}`);
      assert.match(refused.body, why);
    }
    assert.equal(plainRequests.length, count, 'nothing refused reached the server');
    // The same rule never opens a tunnel: its method and path would be invisible.
    const tunnel = await connectVia(key.socketPath, `pkg.test:${plainPort}`);
    assert.equal(tunnel.status, 403);
    assert.match(tunnel.body, /only plain HTTP/);
  });

  test("an API call sent through the proxy to the shim's own loopback address is served as an API call", async () => {
    const key = await fx.gateway.mint({ group: 'g' });
    const body = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
    const res = await request({ socketPath: key.socketPath, path: 'http://127.0.0.1:9460/v1/messages', headers: anthropicHeaders(), body });
    assert.equal(res.status, 200);
  });

  test("a group's list is the ceiling of its keys' lists, and the default of keys that name none", async () => {
    const narrowed = await fx.gateway.mint({ group: 'ceiling', egress: [`other.test:${sitePort}`] });
    const refused = await connectVia(narrowed.socketPath, `other.test:${sitePort}`);
    assert.equal(refused.status, 403);
    assert.match(refused.body, /no rule of group ceiling allows it/);
    const inherits = await fx.gateway.mint({ group: 'ceiling' });
    assert.equal(inherits.egress, true);
    const tunnel = await connectVia(inherits.socketPath, `pkg.test:${sitePort}`);
    assert.equal(tunnel.status, 200);
    assert.equal((await getOverTunnel(tunnel.socket, 'pkg.test', ca.certPem)).status, 200);
  });

  test('the byte budget cuts a tunnel and refuses the next; the tunnel limit refuses one too many', async () => {
    const key = await fx.gateway.mint({ group: 'g', egress: [`pkg.test:${sitePort}`], egressBudgetBytes: 50_000, egressMaxTunnels: 2 });
    const tunnel = await connectVia(key.socketPath, `pkg.test:${sitePort}`);
    await assert.rejects(getOverTunnel(tunnel.socket, 'pkg.test', ca.certPem, '/?size=1000000'));
    await eventually(() => auditLines().some((line) => line.keyId === key.id && line.reason === 'byte_budget'));
    const use = fx.gateway.inspect().keys.find((entry) => entry.id === key.id)!.egressUse!;
    assert.ok(use.bytesDown < 200_000, `stopped near the budget: ${use.bytesDown}`);
    const next = await connectVia(key.socketPath, `pkg.test:${sitePort}`);
    assert.equal(next.status, 403);
    assert.match(next.body, /egress budget of 50000 bytes/);

    const limited = await fx.gateway.mint({ group: 'g', egress: [`pkg.test:${sitePort}`], egressMaxTunnels: 2 });
    const open = [await connectVia(limited.socketPath, `pkg.test:${sitePort}`), await connectVia(limited.socketPath, `pkg.test:${sitePort}`)];
    assert.deepEqual(
      open.map((t) => t.status),
      [200, 200],
    );
    const third = await connectVia(limited.socketPath, `pkg.test:${sitePort}`);
    assert.equal(third.status, 429);
    for (const t of open) t.socket.destroy();
  });

  test("revoking a key closes its tunnels, and inspect shows the key's last refusals", async () => {
    const key = await fx.gateway.mint({ group: 'g', egress: [`pkg.test:${sitePort}`] });
    await connectVia(key.socketPath, 'nowhere.example:443');
    const refusals = fx.gateway.inspect().keys.find((entry) => entry.id === key.id)!.egressUse!.recentRefusals;
    assert.equal(refusals[0]!.host, 'nowhere.example');
    assert.equal(refusals[0]!.reason, 'not_allowed');
    const tunnel = await connectVia(key.socketPath, `pkg.test:${sitePort}`);
    assert.equal(tunnel.status, 200);
    const closed = new Promise((resolve) => tunnel.socket.once('close', resolve));
    await fx.gateway.revoke(key.id);
    await closed;
  });

  test("provider-side fetching (the MCP connector) follows the key's egress policy", async () => {
    const key = await fx.gateway.mint({ group: 'g', egress: ['mcp.example.com:443'] });
    const body = (url: string) =>
      JSON.stringify({
        model: 'claude-sonnet-4-5',
        max_tokens: 16,
        messages: [{ role: 'user', content: 'hi' }],
        mcp_servers: [{ type: 'url', url, name: 'docs' }],
      });
    const allowed = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: body('https://mcp.example.com/mcp') });
    assert.equal(allowed.status, 200, allowed.body);
    const refused = await request({
      socketPath: key.socketPath,
      path: '/v1/messages',
      headers: anthropicHeaders(),
      body: body('https://attacker.example/mcp'),
    });
    assert.equal(refused.status, 403);
    assert.match(refused.body, /egress rule for attacker\.example:443/);
    const none = await fx.gateway.mint({ group: 'g' });
    const withoutEgress = await request({
      socketPath: none.socketPath,
      path: '/v1/messages',
      headers: anthropicHeaders(),
      body: body('https://mcp.example.com/mcp'),
    });
    assert.equal(withoutEgress.status, 403);
  });

  test("the operator's upstream proxy carries egress too, and a reload changes a group's list for its live keys", async () => {
    const seen: string[] = [];
    const parent = http.createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      res.end('via parent');
    });
    parent.on('connect', (req, client: net.Socket, head) => {
      seen.push(`CONNECT ${req.url}`);
      // The parent resolves the name itself: the test's names live on loopback.
      const upstream = net.connect(Number(String(req.url).split(':')[1]), '127.0.0.1', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.write(head);
        upstream.pipe(client).pipe(upstream);
      });
      upstream.on('error', () => client.destroy());
    });
    await new Promise<void>((resolve) => parent.listen(0, '127.0.0.1', resolve));
    const proxyUrl = `http://127.0.0.1:${(parent.address() as net.AddressInfo).port}`;
    const egress = { hosts: { 'pkg.test': ['127.0.0.1'] }, groups: { reload: [`pkg.test:${sitePort}`] } };
    fx.gateway.reconfigure({ network: { proxyUrl }, egress });
    try {
      const key = await fx.gateway.mint({ group: 'reload' });
      const tunnel = await connectVia(key.socketPath, `pkg.test:${sitePort}`);
      assert.equal(tunnel.status, 200);
      assert.equal((await getOverTunnel(tunnel.socket, 'pkg.test', ca.certPem)).body, 'hello from pkg.test');
      assert.deepEqual(seen, [`CONNECT pkg.test:${sitePort}`]);
      // A plain HTTP request goes to the parent in absolute form.
      const plainKey = await fx.gateway.mint({ group: 'g', egress: [`pkg.test:${plainPort}`] });
      const viaParent = await proxyRequest(plainKey.socketPath, 'GET', `http://pkg.test:${plainPort}/x`);
      assert.equal(viaParent.body, 'via parent');
      assert.equal(seen.at(-1), `GET http://pkg.test:${plainPort}/x`);
      // The group's list is replaced: the same live key is now refused.
      fx.gateway.reconfigure({ egress: { ...egress, groups: { reload: ['npm'] } } });
      const refused = await connectVia(key.socketPath, `pkg.test:${sitePort}`);
      assert.equal(refused.status, 403);
      assert.match(refused.body, /group reload allows: registry\.npmjs\.org:443/);
    } finally {
      fx.gateway.reconfigure({ network: {}, egress: testEgress });
      parent.close();
    }
  });

  test("egress refusals have their own rate: past it egress is refused at once, and the key's API calls still pass", async () => {
    const key = await fx.gateway.mint({ group: 'g', egress: ['npm'], maxRefusalsPerMinute: 3 });
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push((await connectVia(key.socketPath, 'refused.example:443')).status);
    assert.deepEqual(statuses, [403, 403, 403, 429, 429]);
    const body = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
    const call = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body });
    assert.equal(call.status, 200);
  });

  test('the status line carries the refusal, for clients that print it and drop the body', async () => {
    const key = await fx.gateway.mint({ group: 'g' });
    const tunnel = await connectVia(key.socketPath, 'refused.example:443');
    assert.match(tunnel.head, /^HTTP\/1\.1 403 Forbidden \(egress to refused\.example:443 refused: this key has no egress allowed .*\)\r\n/);
    const statusMessage = await new Promise<string>((resolve, reject) => {
      const req = http.request({ socketPath: key.socketPath, path: 'http://refused.example/x', headers: { host: 'refused.example' } });
      req.once('response', (res) => {
        res.resume();
        resolve(res.statusMessage ?? '');
      });
      req.once('error', reject);
      req.end();
    });
    assert.match(statusMessage, /^Forbidden \(egress to GET http:\/\/refused\.example:80\/x refused: /);
  });

  test('a destination that sends its last bytes and closes: a slow reader still gets every byte', async () => {
    const size = 8 * 1024 * 1024;
    const sender = net.createServer((socket) => socket.end(Buffer.alloc(size, 7)));
    await new Promise<void>((resolve) => sender.listen(0, '127.0.0.1', resolve));
    const port = (sender.address() as net.AddressInfo).port;
    try {
      const key = await fx.gateway.mint({ group: 'g', egress: [{ host: '127.0.0.1', ports: [port] }] });
      const tunnel = await connectVia(key.socketPath, `127.0.0.1:${port}`);
      assert.equal(tunnel.status, 200);
      let received = 0;
      // Read a chunk at a time with a pause between: the destination has long closed when the tail arrives.
      for await (const chunk of tunnel.socket) {
        received += (chunk as Buffer).length;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      assert.equal(received, size);
    } finally {
      sender.close();
    }
  });

  test('bad CONNECT targets get a 400', async () => {
    const key = await fx.gateway.mint({ group: 'g', egress: ['*:*'] });
    for (const target of ['no-port', 'host:0', 'host:99999', '[zz::1]:443', 'a b:443', `${'a'.repeat(300)}.test:443`, '127.1:443']) {
      const tunnel = await connectVia(key.socketPath, target);
      assert.ok([400, 403].includes(tunnel.status), `${target}: ${tunnel.status}`);
    }
  });
});
