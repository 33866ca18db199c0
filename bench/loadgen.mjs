// Load generator, in a process of its own: closed-loop workers over undici's raw dispatch API (no
// streams, no body parsing) so it stays cheap next to what it measures. Driven over IPC by run.mjs:
//   {type:'run', target, mode, concurrency, durationMs, maxRequests, method, path, headers, body}
//   {type:'connect' | 'download', ...}: TLS handshakes and large downloads, direct or through the
//   egress proxy (bench/tunnels.mjs)
// target: {origin} for TCP, or {socketPaths:[...]} for Unix sockets (one pool per socket; every
// request picks a socket at random). mode: 'json' | 'stream' (events as fast as they come) |
// 'paced' (events carry their send time; one-way delay per event). A stream stalls when some gap
// between its events exceeds STALL_MS (counted per stream, issue 20).
import { Pool } from 'undici';
import { connectLoop, downloadLoop } from './tunnels.mjs';
import { quantiles } from './stats.mjs';

const now = () => performance.now();
const NL2 = Buffer.from('\n\n');
const T_MARK = Buffer.from('"t":"');
const STALL_MS = 100;
// Forked by bench/run.mjs, so the IPC channel is always there; its messages are plain JSON.
const send = /** @type {NonNullable<typeof process.send>} */ (process.send).bind(process);

function makePools(target, concurrency) {
  if (target.origin) return [new Pool(target.origin, { connections: concurrency, pipelining: 1, keepAliveTimeout: 30_000 })];
  const perSocket = Math.max(1, Math.ceil(concurrency / Math.min(concurrency, target.socketPaths.length)));
  return target.socketPaths.map((socketPath) => new Pool('http://localhost', { socketPath, connections: perSocket, pipelining: 1, keepAliveTimeout: 30_000 }));
}

async function run(cmd) {
  const { mode, concurrency, durationMs, maxRequests = 1e7 } = cmd;
  const pools = makePools(cmd.target, concurrency);
  // GET (plain HTTP through the proxy) has no body; POST (the API) always has one.
  const method = cmd.method ?? 'POST';
  const body = method === 'GET' ? null : Buffer.from(cmd.body);
  const headers = body ? { ...cmd.headers, 'content-length': String(body.length) } : cmd.headers;
  const streaming = mode !== 'json';
  const latencies = new Float64Array(Math.min(maxRequests, 2_000_000));
  const ttfbs = new Float64Array(latencies.length);
  const GAP_CAP = 3_000_000;
  const gaps = streaming ? new Float64Array(GAP_CAP) : null;
  const delays = mode === 'paced' ? new Float64Array(GAP_CAP) : null;
  let nLat = 0,
    nGaps = 0,
    nDelays = 0,
    errors = 0,
    started = 0,
    events = 0,
    reads = 0,
    streams = 0,
    stalls = 0;
  const statuses = {};
  let errorSample;
  const t0 = now();
  const deadline = t0 + durationMs;

  function one(done) {
    started++;
    const pool = pools.length === 1 ? pools[0] : pools[(Math.random() * pools.length) | 0];
    const start = now();
    let status = 0,
      ttfb = 0,
      lastEventAt = -1,
      maxGap = 0,
      tail = 0,
      evCount = 0;
    pool.dispatch(
      { path: cmd.path, method, headers, body },
      {
        onRequestStart() {},
        onResponseStart(_c, statusCode) {
          status = statusCode;
          ttfb = now() - start;
        },
        onResponseData(_c, chunk) {
          if (!streaming) return;
          const at = now();
          reads++;
          // Count complete events ("\n\n"), including one split across reads.
          let k = 0;
          if (tail === 0x0a && chunk[0] === 0x0a) {
            k++;
          }
          let i = chunk.indexOf(NL2);
          while (i !== -1) {
            k++;
            i = chunk.indexOf(NL2, i + 2);
          }
          tail = chunk[chunk.length - 1];
          for (let e = 0; e < k; e++) {
            if (lastEventAt >= 0) {
              const gap = at - lastEventAt;
              if (gap > maxGap) maxGap = gap;
              if (nGaps < GAP_CAP) /** @type {Float64Array} */ (gaps)[nGaps++] = gap; // streaming, so not null
            }
            lastEventAt = at;
          }
          evCount += k;
          if (delays) {
            const recv = process.hrtime.bigint();
            let j = chunk.indexOf(T_MARK);
            while (j !== -1 && nDelays < GAP_CAP) {
              const s = j + T_MARK.length;
              const e = chunk.indexOf(0x22, s);
              delays[nDelays++] = Number(recv - BigInt(chunk.toString('latin1', s, e))) / 1e6;
              j = chunk.indexOf(T_MARK, e);
            }
          }
        },
        onResponseEnd() {
          statuses[status] = (statuses[status] ?? 0) + 1;
          if (status !== 200) errors++;
          if (nLat < latencies.length) {
            ttfbs[nLat] = ttfb;
            latencies[nLat++] = now() - start;
          }
          if (streaming) {
            events += evCount;
            streams++;
            if (maxGap > STALL_MS) stalls++;
          }
          done();
        },
        onResponseError(_c, err) {
          errors++;
          errorSample ??= String(err?.code ?? err?.message ?? err);
          done();
        },
      },
    );
  }

  await new Promise((resolve) => {
    let active = 0;
    const next = () => {
      if (now() < deadline && started < maxRequests) {
        active++;
        one(finished);
      } else if (active === 0) resolve(undefined);
    };
    const finished = () => {
      active--;
      next();
    };
    for (let w = 0; w < concurrency; w++) next();
  });
  const elapsed = now() - t0;
  const cpu = process.cpuUsage();
  await Promise.all(pools.map((p) => p.close()));
  return {
    requests: nLat,
    errors,
    statuses,
    errorSample,
    elapsedMs: elapsed,
    rps: (nLat * 1000) / elapsed,
    latency: quantiles(latencies, nLat),
    ttfb: streaming ? quantiles(ttfbs, nLat) : undefined,
    gaps: gaps ? quantiles(gaps, nGaps) : undefined,
    eventDelay: delays ? quantiles(delays, nDelays) : undefined,
    eventsPerStream: streams ? events / streams : undefined,
    readsPerStream: streams ? reads / streams : undefined,
    stalls: streaming ? stalls : undefined,
    loadgenCpu: cpu,
  };
}

/** @type {Record<string, (cmd: any) => Promise<object>>} */
const RUNNERS = { run, connect: connectLoop, download: downloadLoop };
process.on('message', async (/** @type {any} */ msg) => {
  const runner = Object.hasOwn(RUNNERS, msg.type) ? RUNNERS[msg.type] : undefined;
  if (runner) {
    try {
      send({ type: 'result', result: await runner(msg) });
    } catch (error) {
      send({ type: 'error', message: String(/** @type {Error} */ (error)?.stack ?? error) });
    }
  }
  if (msg.type === 'exit') process.exit(0);
});
process.on('disconnect', () => process.exit(0));
send({ type: 'ready' });
