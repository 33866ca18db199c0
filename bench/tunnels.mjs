// The load generator's egress workloads (bench/loadgen.mjs runs them): TLS connections to the bench
// site, opened directly over TCP or through a forward proxy (CONNECT on a key's Unix socket, or on
// the shim's TCP port, which relays to it), timed from the first connect to the finished handshake;
// and large downloads over such connections, timed from the request to the last byte.
//   target: {host, port} (direct) | {proxy: {path} | {host, port}, authority: 'bench.test:PORT'}
import net from 'node:net';
import tls from 'node:tls';
import { quantiles } from './stats.mjs';

const now = () => performance.now();
const HEAD_END = Buffer.from('\r\n\r\n');
/** A proxy's answer to CONNECT longer than this is not one. */
const MAX_PROXY_HEAD = 16 * 1024;

/**
 * A TLS connection to the site; `proxyMs` is the time until the proxy's 200 (0 direct).
 * @returns {Promise<{ secure: tls.TLSSocket, proxyMs: number }>}
 */
function open(cmd, start) {
  const { target } = cmd;
  const tlsOptions = { servername: cmd.servername, ca: cmd.ca };
  if (!target.proxy) {
    return new Promise((resolve, reject) => {
      const raw = net.connect({ host: target.host, port: target.port, noDelay: true });
      const secure = tls.connect({ ...tlsOptions, socket: raw });
      secure.once('secureConnect', () => resolve({ secure, proxyMs: 0 }));
      secure.once('error', reject);
    });
  }
  return new Promise((resolve, reject) => {
    const raw = target.proxy.path ? net.connect(target.proxy.path) : net.connect({ host: target.proxy.host, port: target.proxy.port, noDelay: true });
    raw.once('error', reject);
    raw.write(`CONNECT ${target.authority} HTTP/1.1\r\nhost: ${target.authority}\r\n\r\n`);
    let head = Buffer.alloc(0);
    const onData = (/** @type {Buffer} */ chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf(HEAD_END);
      if (end === -1) {
        if (head.length > MAX_PROXY_HEAD) raw.destroy(new Error('proxy answer too long'));
        return;
      }
      raw.off('data', onData);
      const status = head.toString('latin1', 0, Math.min(end, 200)).split(' ')[1];
      if (status !== '200') return void raw.destroy(new Error(`proxy answered ${status}: ${head.toString('latin1', 0, 300)}`));
      const proxyMs = now() - start;
      if (head.length > end + 4) raw.unshift(head.subarray(end + 4));
      const secure = tls.connect({ ...tlsOptions, socket: raw });
      secure.once('secureConnect', () => resolve({ secure, proxyMs }));
      secure.once('error', reject);
    };
    raw.on('data', onData);
  });
}

/**
 * Sends GET /bytes?n=size on `secure`; resolves with the body's length once all of it is in. The
 * client hangs up then, as a keep-alive HTTP/1.1 client that read Content-Length bytes would; the
 * server never closes first (a connection that ends short is an error).
 */
function download(secure, size, host) {
  return new Promise((resolve, reject) => {
    let body = 0;
    /** @type {Buffer | undefined} */
    let head = Buffer.alloc(0);
    secure.on('data', (/** @type {Buffer} */ chunk) => {
      if (head) {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf(HEAD_END);
        if (end === -1) return;
        if (!head.toString('latin1', 0, 12).endsWith('200')) return void secure.destroy(new Error(`site answered ${head.toString('latin1', 0, 40)}`));
        chunk = head.subarray(end + 4);
        head = undefined;
      }
      body += chunk.length;
      if (body >= size) {
        secure.destroy();
        resolve(body);
      }
    });
    secure.once('close', () => reject(new Error(`download ended after ${body} of ${size} bytes`)));
    secure.once('error', reject);
    secure.write(`GET /bytes?n=${size} HTTP/1.1\r\nhost: ${host}\r\n\r\n`);
  });
}

/** Closed loop, `concurrency` workers, until the deadline; `one` resolves when its operation is done. */
async function loop(cmd, one) {
  const t0 = now();
  const deadline = t0 + cmd.durationMs;
  const maxOps = cmd.maxRequests ?? 1e6;
  let started = 0;
  const worker = async () => {
    while (now() < deadline && started < maxOps) {
      started++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: cmd.concurrency ?? 1 }, worker));
  return now() - t0;
}

/** Handshakes one after another (per worker): the time to a finished TLS handshake, with the proxy's share. */
export async function connectLoop(cmd) {
  const cap = 1_000_000;
  const totals = new Float64Array(cap);
  const proxied = new Float64Array(cap);
  let n = 0;
  let errors = 0;
  let errorSample;
  const elapsed = await loop(cmd, async () => {
    const start = now();
    try {
      const { secure, proxyMs } = await open(cmd, start);
      const total = now() - start;
      secure.destroy();
      if (n < cap) {
        proxied[n] = proxyMs;
        totals[n++] = total;
      }
    } catch (error) {
      errors++;
      errorSample ??= String(/** @type {Error} */ (error)?.message ?? error);
    }
  });
  return {
    requests: n,
    errors,
    errorSample,
    elapsedMs: elapsed,
    rps: (n * 1000) / elapsed,
    latency: quantiles(totals, n),
    proxyLatency: cmd.target.proxy ? quantiles(proxied, n) : undefined,
    loadgenCpu: process.cpuUsage(),
  };
}

/** Downloads of `size` bytes, each on a connection of its own; throughput in MB/s (10^6 bytes), handshakes excluded. */
export async function downloadLoop(cmd) {
  let bytes = 0;
  let busyMs = 0;
  let n = 0;
  let errors = 0;
  let errorSample;
  const perDownload = [];
  const elapsed = await loop(cmd, async () => {
    try {
      const { secure } = await open(cmd, now());
      const start = now();
      const body = await download(secure, cmd.size, cmd.servername);
      const ms = now() - start;
      busyMs += ms;
      bytes += body;
      n++;
      perDownload.push(body / 1000 / ms);
    } catch (error) {
      errors++;
      errorSample ??= String(/** @type {Error} */ (error)?.message ?? error);
    }
  });
  return {
    requests: n,
    errors,
    errorSample,
    elapsedMs: elapsed,
    bytes,
    // Aggregate over the window (all workers together), and per connection while it transferred.
    mbps: bytes / 1000 / elapsed,
    perConnection: quantiles(Float64Array.from(perDownload)),
    busyMs,
    loadgenCpu: process.cpuUsage(),
  };
}
