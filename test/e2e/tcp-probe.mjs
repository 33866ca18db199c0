// Runs inside test/e2e-tcp.test.ts's probe container, on the key's internal network with the key's
// own container address; prints one JSON line. It knocks on the key's TCP listener without a token,
// with another key's token and with the key's own (the host revokes the key once that call is
// metered), then watches the port until it refuses; meanwhile it tries every other way out: the
// host's wildcard service and a closed port on the bridge address, the host's eth0 address, its
// own loopback, and DNS.
import dns from 'node:dns/promises';
import http from 'node:http';
import net from 'node:net';
import { readFileSync } from 'node:fs';

const { PROBE_HOST: host, PROBE_PORT, PROBE_TOKEN, PROBE_OTHER_TOKEN, PROBE_WILD_PORT, PROBE_CLOSED_PORT, PROBE_ETH0 } = process.env;
const port = Number(PROBE_PORT);
const CONNECT_MS = 3000;

/** One request on a fresh connection: its status and body, or the error's code. */
function request(method, path, headers, body) {
  return new Promise((resolve) => {
    const req = http.request({ host, port, method, path, headers, agent: false, timeout: 10_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode, body: text }));
    });
    req.on('timeout', () => req.destroy(new Error('TIMEOUT')));
    req.on('error', (error) => resolve({ error: error.code ?? error.message }));
    req.end(body);
  });
}

/** CONNECTED, TIMEOUT (dropped), or the connection's error code (ECONNREFUSED, ENETUNREACH, ...). */
function connect(toHost, toPort) {
  return new Promise((resolve) => {
    const socket = net.connect(toPort, toHost);
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('TIMEOUT');
    }, CONNECT_MS);
    socket.on('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve('CONNECTED');
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      resolve(error.code);
    });
  });
}

const message = JSON.stringify({ model: 'claude-haiku-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] });
const anthropic = { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' };

const elsewhere = Promise.all([
  connect(host, Number(PROBE_WILD_PORT)),
  connect(host, Number(PROBE_CLOSED_PORT)),
  connect(PROBE_ETH0, Number(PROBE_WILD_PORT)),
  connect('127.0.0.1', Number(PROBE_WILD_PORT)),
  dns.lookup('example.com').then(
    () => 'RESOLVED',
    (error) => error.code,
  ),
]);

const noToken = await request('POST', '/v1/messages', anthropic, message);
const otherToken = await request('POST', '/v1/messages', { ...anthropic, 'x-api-key': PROBE_OTHER_TOKEN }, message);
const ownToken = await request('GET', '/v1/models', { ...anthropic, 'x-api-key': PROBE_TOKEN });
// The host revokes the key once the call above is metered: the port refuses from then on. Until
// then a connection is accepted, or reset when it lands in the listener's queue as it closes.
let afterRevoke = 'CONNECTED';
const deadline = Date.now() + 20_000;
while ((afterRevoke === 'CONNECTED' || afterRevoke === 'ECONNRESET') && Date.now() < deadline) {
  afterRevoke = await connect(host, port);
  if (afterRevoke !== 'ECONNREFUSED') await new Promise((resolve) => setTimeout(resolve, 100));
}
const [wildcard, closedPort, eth0, loopback, lookup] = await elsewhere;

console.log(
  JSON.stringify({
    noToken,
    otherToken,
    ownToken,
    afterRevoke,
    wildcard,
    closedPort,
    eth0,
    loopback,
    lookup,
    resolvConf: readFileSync('/etc/resolv.conf', 'utf8'),
  }),
);
