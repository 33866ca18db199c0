#!/usr/bin/env node
// In-container shim: listens on 127.0.0.1:PORT and relays every TCP connection, byte for byte, to the
// gateway's Unix socket (bind-mounted read-only at /run/gateway). Clients inside a --network=none
// container then use ANTHROPIC_BASE_URL=http://127.0.0.1:PORT and OPENAI_BASE_URL=http://127.0.0.1:PORT/v1.
//
// One dependency-free file, plain JS for Node >= 18: it is copied next to each key's socket and run by
// whatever Node the agent image has. It never writes to stdout (except --check, which is its output),
// so it cannot pollute an agent's output.
//
//   node shim.mjs [--port N] [--socket PATH]              relay until SIGINT/SIGTERM
//   node shim.mjs [--port N] [--socket PATH] --check      is the gateway answering, is the network isolated?
//   node shim.mjs [--port N] [--socket PATH] -- CMD ARGS  relay while CMD runs; exit with CMD's status
//
// Env: GATEWAY_SHIM_PORT (default 9460), GATEWAY_SOCKET (default /run/gateway/gateway.sock).
// --port 0 picks a free port (the readiness line and CMD's env carry the real one).

import net from 'node:net';
import http from 'node:http';
import os from 'node:os';
import fs from 'node:fs';
import { spawn } from 'node:child_process';

const HOST = '127.0.0.1';
const HEAD_LIMIT = 16 * 1024; // bytes of a request we read, at most, to pick the 502's error shape
const HEAD_WAIT_MS = 2000; // how long we wait for those bytes before answering anyway
const DRAIN_MS = 2000; // after a 502, how long we swallow the rest of the request before closing

/** @typedef {{ port: number, socket: string, check: boolean, command: string[] | null }} Options */

/**
 * @param {string} message
 * @returns {never}
 */
function usage(message) {
  process.stderr.write(`shim: ${message}\nusage: shim.mjs [--port N] [--socket PATH] [--check | -- CMD [ARGS...]]\n`);
  process.exit(2);
}

/**
 * @param {string[]} argv
 * @returns {Options}
 */
function parseArgs(argv) {
  /** @type {Omit<Options, 'port'> & { port: string }} */
  const opts = {
    port: process.env.GATEWAY_SHIM_PORT || '9460',
    socket: process.env.GATEWAY_SOCKET || '/run/gateway/gateway.sock',
    check: false,
    command: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      opts.command = argv.slice(i + 1);
      if (opts.command.length === 0) usage('-- needs a command');
      break;
    } else if (arg === '--port' || arg === '--socket') {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      opts[/** @type {'port' | 'socket'} */ (arg.slice(2))] = argv[++i];
    } else if (arg === '--check') {
      opts.check = true;
    } else if (arg === '-h' || arg === '--help') {
      usage('help');
    } else {
      usage(`unknown argument ${arg}`);
    }
  }
  const port = Number(opts.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`bad port ${opts.port}`);
  return { ...opts, port };
}

// ---------------------------------------------------------------------------------------------------
// Relay

/**
 * @param {string} socketPath
 * @param {number} port
 * @returns {Promise<{ server: net.Server, port: number }>}
 */
function startRelay(socketPath, port) {
  const server = net.createServer({ allowHalfOpen: true }, (client) => relay(client, socketPath));
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, HOST, () => {
      server.off('error', reject);
      const actual = /** @type {net.AddressInfo} */ (server.address()).port;
      process.stderr.write(`shim: listening on ${HOST}:${actual} -> ${socketPath}\n`);
      resolve({ server, port: actual });
    });
  });
}

/**
 * @param {net.Socket} client
 * @param {string} socketPath
 */
function relay(client, socketPath) {
  client.setNoDelay(true);
  // The client stays paused until the upstream connects: its bytes wait in the socket buffer (and,
  // beyond the high-water mark, in TCP), so nothing is lost and nothing is read twice.
  client.pause();
  const upstream = net.createConnection({ path: socketPath, allowHalfOpen: true });
  let connected = false;

  upstream.once('connect', () => {
    connected = true;
    // pipe() gives back-pressure both ways and, with allowHalfOpen, forwards each side's FIN as a
    // half-close (end()) instead of tearing the connection down: an SSE stream or a request body
    // sent after the response started keep working.
    client.pipe(upstream);
    upstream.pipe(client);
  });
  upstream.on('error', (err) => {
    if (connected)
      client.destroy(); // the gateway went away mid-connection: reset the client too
    else answerUnreachable(client, socketPath, err);
  });
  client.on('error', () => upstream.destroy());
  // Once the client is fully gone nothing upstream can still be delivered.
  client.on('close', () => upstream.destroy());
}

// The gateway socket is missing or refuses (gateway down, key revoked): rather than a bare reset,
// answer with a well-formed HTTP 502 in the error shape of the provider the client thinks it talks to.
/**
 * @param {net.Socket} client
 * @param {string} socketPath
 * @param {NodeJS.ErrnoException} err
 */
function answerUnreachable(client, socketPath, err) {
  /** @type {Buffer[]} */
  const chunks = [];
  let size = 0;
  let answered = false;
  const answer = () => {
    if (answered) return;
    answered = true;
    clearTimeout(timer);
    const head = Buffer.concat(chunks).toString('latin1');
    const message = `LLM gateway unreachable at ${socketPath} (${err.code || err.message}); the gateway may be restarting or the key revoked`;
    const body = JSON.stringify(
      looksAnthropic(head)
        ? { type: 'error', error: { type: 'api_error', message } }
        : { error: { message, type: 'api_error', param: null, code: 'gateway_unreachable' } },
    );
    client.end(
      'HTTP/1.1 502 Bad Gateway\r\n' +
        'Content-Type: application/json\r\n' +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        'Connection: close\r\n\r\n' +
        body,
    );
    // Keep reading (and discarding) what the client still sends: closing with unread bytes makes the
    // kernel send a RST, which can destroy the 502 before the client has read it.
    setTimeout(() => client.destroy(), DRAIN_MS).unref();
  };
  const timer = setTimeout(answer, HEAD_WAIT_MS);
  client.on('data', (chunk) => {
    if (answered) return;
    chunks.push(chunk);
    size += chunk.length;
    if (size >= HEAD_LIMIT || enoughToDecide(Buffer.concat(chunks).toString('latin1'))) answer();
  });
  client.on('end', answer);
  client.resume();
}

const ANTHROPIC_PATH = /^[A-Z]+ \/v1\/messages/; // request line of /v1/messages[/count_tokens][?...]

// Enough of the request is in once the path already says Anthropic, or all headers are in.
/** @param {string} head */
function enoughToDecide(head) {
  return ANTHROPIC_PATH.test(head) || head.includes('\r\n\r\n');
}

/** @param {string} head */
function looksAnthropic(head) {
  const headers = head.split('\r\n\r\n')[0];
  return ANTHROPIC_PATH.test(headers) || /\r\nanthropic-version:/i.test(headers);
}

// ---------------------------------------------------------------------------------------------------
// --check: reachability and isolation, without sending a single packet off the machine.

// The key a gateway answers for, from `x-gateway-key` on HEAD /api/hello, over the socket or a port.
/**
 * @param {{ socketPath: string } | { host: string, port: number }} target
 * @returns {Promise<string | string[] | undefined>}
 */
function keyBehind(target) {
  return new Promise((resolve) => {
    const req = http.request({ ...target, method: 'HEAD', path: '/api/hello', timeout: 2000, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode === 200 ? res.headers['x-gateway-key'] : undefined);
    });
    req.on('timeout', () => req.destroy(new Error('no answer')));
    req.on('error', () => resolve(undefined));
    req.end();
  });
}

// A second shim for the same key (an image whose entrypoint starts one, run under `gateway run`'s own)
// finds the port taken: when what answers there is the same key's gateway, it only runs the command.
/**
 * @param {string} socketPath
 * @param {number} port
 */
async function servedForSameKey(socketPath, port) {
  const [own, there] = await Promise.all([keyBehind({ socketPath }), keyBehind({ host: HOST, port })]);
  return own !== undefined && own === there;
}

/**
 * @param {string} socketPath
 * @returns {Promise<{ ok: boolean, line: string }>}
 */
function checkGateway(socketPath) {
  return new Promise((resolve) => {
    const req = http.request({ socketPath, method: 'HEAD', path: '/api/hello', timeout: 5000 }, (res) => {
      res.resume();
      const ok = res.statusCode === 200;
      resolve({ ok, line: `gateway: ${ok ? 'ok' : 'FAIL'} HEAD /api/hello on ${socketPath} answered ${res.statusCode}` });
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 5s')));
    req.on('error', (/** @type {NodeJS.ErrnoException} */ err) =>
      resolve({ ok: false, line: `gateway: FAIL ${socketPath} unreachable (${err.code || err.message})` }),
    );
    req.end();
  });
}

// Findings that show a way out of the machine: non-loopback interfaces with an address, and default
// routes (IPv4 and IPv6) on anything but lo. Both come from the kernel's own tables; nothing is sent.
function checkIsolation() {
  /** @type {string[]} */
  const findings = [];
  for (const [name, addrs] of Object.entries(os.networkInterfaces())) {
    const outside = (addrs || []).filter((a) => !a.internal);
    if (outside.length > 0) {
      findings.push(`network: FAIL interface ${name} has ${outside.map((a) => a.address).join(', ')}`);
    }
  }
  const RTF_UP = 0x1;
  const RTF_REJECT = 0x200; // e.g. the kernel's unreachable IPv6 default on lo: not a way out
  // Each table: file, fields a route line has at least, is-default test, [iface, flags] of a line.
  /** @type {[string, number, (f: string[]) => boolean, (f: string[]) => [string, number]][]} */
  const tables = [
    // /proc/net/route: Iface Destination Gateway Flags RefCnt Use Metric Mask ... (hex).
    ['/proc/net/route', 8, (f) => f[1] === '00000000' && f[7] === '00000000', (f) => [f[0], parseInt(f[3], 16)]],
    // /proc/net/ipv6_route: dest destlen src srclen nexthop metric refcnt use flags iface.
    ['/proc/net/ipv6_route', 10, (f) => /^0{32}$/.test(f[0]) && f[1] === '00', (f) => [f[9], parseInt(f[8], 16)]],
  ];
  let readable = 0;
  for (const [file, minFields, isDefault, ifaceAndFlags] of tables) {
    /** @type {string} */
    let text;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue; // no IPv6 in this kernel, or not Linux
    }
    readable++;
    for (const line of text.split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f.length < minFields || !isDefault(f)) continue;
      const [iface, flags] = ifaceAndFlags(f);
      if (iface === 'lo' || !(flags & RTF_UP) || flags & RTF_REJECT) continue;
      findings.push(`network: FAIL default route via ${iface} (${file})`);
    }
  }
  if (readable === 0) findings.push('network: FAIL cannot read /proc/net/route to verify isolation');
  if (findings.length === 0) findings.push('network: ok isolated (only loopback, no default route)');
  return { ok: findings.every((l) => l.startsWith('network: ok')), lines: findings };
}

/** @param {string} socketPath */
async function runCheck(socketPath) {
  const gateway = await checkGateway(socketPath);
  const isolation = checkIsolation();
  process.stdout.write(`${[gateway.line, ...isolation.lines].join('\n')}\n`);
  process.exit(gateway.ok && isolation.ok ? 0 : 1);
}

// ---------------------------------------------------------------------------------------------------
// -- CMD: run the agent with base URLs on the shim, forward signals, exit with its status.

/**
 * @param {string[]} command
 * @param {number} port
 */
function runCommand(command, port) {
  const env = { ...process.env };
  // An empty value counts as unset: the SDKs treat it as "use the public API", which cannot work here.
  if (!env.ANTHROPIC_BASE_URL) env.ANTHROPIC_BASE_URL = `http://${HOST}:${port}`;
  if (!env.OPENAI_BASE_URL) env.OPENAI_BASE_URL = `http://${HOST}:${port}/v1`;
  const child = spawn(command[0], command.slice(1), { stdio: 'inherit', env });
  for (const sig of /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP'])) {
    process.on(sig, () => child.kill(sig));
  }
  child.on('error', (/** @type {NodeJS.ErrnoException} */ err) => {
    process.stderr.write(`shim: cannot run ${command[0]}: ${err.message}\n`);
    process.exit(err.code === 'ENOENT' ? 127 : 126);
  });
  child.on('exit', (code, signal) => {
    process.exit(code !== null ? code : 128 + (os.constants.signals[/** @type {NodeJS.Signals} */ (signal)] || 0));
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.check) return runCheck(opts.socket);
  let port;
  try {
    ({ port } = await startRelay(opts.socket, opts.port));
  } catch (caught) {
    const err = /** @type {NodeJS.ErrnoException} */ (caught);
    if (err.code === 'EADDRINUSE' && opts.command && (await servedForSameKey(opts.socket, opts.port))) {
      process.stderr.write(`shim: ${HOST}:${opts.port} is already relayed to this key's gateway; running the command\n`);
      return runCommand(opts.command, opts.port);
    }
    process.stderr.write(`shim: cannot listen on ${HOST}:${opts.port}: ${err.message}\n`);
    process.exit(1);
  }
  if (opts.command) {
    runCommand(opts.command, port);
  } else {
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => process.exit(0));
  }
}

main();
