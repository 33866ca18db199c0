// The gateway under test, in a process of its own (so its CPU time and memory are its own and the
// load generator does not share its event loop). Driven over IPC by bench/run.mjs:
//   mint {n}      -> mints n keys one after another, timing each; answers their ids and socket paths
//   revoke {ids}  -> revokes them one after another, timing each
//   mem           -> process.memoryUsage() after two full GCs (needs --expose-gc)
//   cpu           -> process.cpuUsage()
//   store         -> the shared store's state, what it reports of the group `shared` (with BENCH_STORE_URL)
//                    and what this gateway spent of it
//   telemetry     -> scrapes done and OTLP exports received so far (with BENCH_TELEMETRY=1)
// The configuration is the real one a host would use: audit trail to a file, metering on; with
// BENCH_EGRESS (JSON of the `egress` option), the forward proxy on each key's socket too; with
// BENCH_STORE_URL, a shared store (Redis) holding the budget of the group `shared` (BENCH_SHARED_BUDGET USD).
// BENCH_HOST_ID names this gateway to the store (several gateways share one with `--cores N`).
// With BENCH_TELEMETRY=1, the telemetry outputs a host would run: the Prometheus endpoint (scraped here
// once a second, so the scrape's cost counts) and the OTLP trace exporter (to a sink in this process
// answering 200), both fed from onCall.
// mint takes an optional group and key budget (default: group bench, no key budget).
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { Session } from 'node:inspector/promises';
import { pino } from 'pino';

// What ships: the compiled dist/ (`make bench` builds it). The TypeScript sources run under Node's
// type stripping, which loads a WebAssembly compiler (~60 MB of RSS) a real host would not have.
const entry = process.env.BENCH_GATEWAY_ENTRY ?? (existsSync(new URL('../dist/index.js', import.meta.url)) ? '../dist/index.js' : '../src/index.ts');
const { createGateway, startMetricsServer, createTraceExporter } = await import(entry);
// `metrics`: the Prometheus endpoint only; `all` (or `1`): with the OTLP trace exporter too.
const TELEMETRY = ['metrics', 'all', '1'].includes(process.env.BENCH_TELEMETRY ?? '');
const TRACES = TELEMETRY && process.env.BENCH_TELEMETRY !== 'metrics';
/** @type {{ onCall(record: unknown): void, close(): Promise<void>, url?: string }[]} */
const sinks = [];

const stateDir = mkdtempSync('/tmp/gwb-');
const gateway = await createGateway({
  stateDir,
  logger: pino({ level: 'warn' }, pino.destination(2)),
  providers: { anthropic: { baseUrl: process.env.BENCH_UPSTREAM_URL, apiKey: process.env.BENCH_REAL_KEY } },
  // The workloads drive up to 64 requests at once through one key: above the default cap of 32.
  defaultLimits: { maxConcurrent: 128 },
  ...(process.env.BENCH_EGRESS ? { egress: JSON.parse(process.env.BENCH_EGRESS) } : {}),
  ...(process.env.BENCH_STORE_URL
    ? {
        store: { url: process.env.BENCH_STORE_URL, hostId: process.env.BENCH_HOST_ID ?? 'bench' },
        groupBudgets: { shared: Number(process.env.BENCH_SHARED_BUDGET ?? 1000) },
      }
    : {}),
  ...(TELEMETRY
    ? {
        onCall: (/** @type {unknown} */ record) => {
          for (const sink of sinks) sink.onCall(record);
        },
      }
    : {}),
});

const telemetry = { scrapes: 0, scrapeErrors: 0, exports: 0, exportBytes: 0 };
/** @type {NodeJS.Timeout | undefined} */
let scraper;
/** @type {http.Server | undefined} */
let otlpSink;
if (TELEMETRY) {
  otlpSink = http.createServer((req, res) => {
    req.on('data', (chunk) => {
      telemetry.exportBytes += chunk.length;
    });
    req.on('end', () => {
      telemetry.exports++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise((resolve) => otlpSink?.listen(0, '127.0.0.1', () => resolve(undefined)));
  const { port } = /** @type {import('node:net').AddressInfo} */ (otlpSink.address());
  const metrics = await startMetricsServer({ listen: { host: '127.0.0.1', port: 0 }, gateway });
  sinks.push(metrics);
  if (TRACES) sinks.push(await createTraceExporter({ endpoint: `http://127.0.0.1:${port}/v1/traces` }));
  scraper = setInterval(async () => {
    try {
      await (await fetch(metrics.url)).text();
      telemetry.scrapes++;
    } catch {
      telemetry.scrapeErrors++;
    }
  }, 1000);
}

const now = () => performance.now();
// Forked by bench/run.mjs, so the IPC channel is always there; its messages are plain JSON.
const send = /** @type {NonNullable<typeof process.send>} */ (process.send).bind(process);
let session;
function memory() {
  for (let i = 0; i < 3; i++) globalThis.gc?.();
  return process.memoryUsage();
}

process.on('message', async (/** @type {any} */ msg) => {
  try {
    switch (msg.type) {
      case 'mint': {
        const keys = [];
        const times = new Float64Array(msg.n);
        for (let i = 0; i < msg.n; i++) {
          const t0 = now();
          const key = await gateway.mint({ group: msg.group ?? 'bench', label: `k${i}`, ...(msg.budgetUsd ? { budgetUsd: msg.budgetUsd } : {}) });
          times[i] = now() - t0;
          keys.push({ id: key.id, socketPath: key.socketPath });
        }
        send({ type: 'minted', keys, times: Array.from(times) });
        break;
      }
      case 'revoke': {
        const times = new Float64Array(msg.ids.length);
        for (let i = 0; i < msg.ids.length; i++) {
          const t0 = now();
          await gateway.revoke(msg.ids[i]);
          times[i] = now() - t0;
        }
        send({ type: 'revoked', times: Array.from(times) });
        break;
      }
      case 'mem':
        send({ type: 'mem', mem: memory(), gcExposed: typeof globalThis.gc === 'function' });
        break;
      case 'cpu':
        send({ type: 'cpu', cpu: process.cpuUsage() });
        break;
      case 'store': {
        const snapshot = gateway.inspect();
        const group = snapshot.groups.find((/** @type {any} */ g) => g.group === 'shared');
        send({ type: 'store', state: snapshot.store?.state, shared: group?.shared, spentUsd: group?.spentUsd ?? 0 });
        break;
      }
      case 'telemetry':
        send({ type: 'telemetry', telemetry: TELEMETRY ? telemetry : undefined });
        break;
      case 'profile-start':
        // One workload at a time, in-process (node:inspector), so each profile is that workload's alone.
        session ??= new Session();
        session.connect();
        await session.post('Profiler.enable');
        await session.post('Profiler.setSamplingInterval', { interval: 100 });
        await session.post('Profiler.start');
        send({ type: 'profile-started' });
        break;
      case 'profile-stop': {
        const { profile } = await session.post('Profiler.stop');
        session.disconnect();
        writeFileSync(msg.file, JSON.stringify(profile));
        send({ type: 'profile-stopped', file: msg.file });
        break;
      }
      case 'exit':
        clearInterval(scraper);
        await gateway.close({ drainMs: 1000 });
        for (const sink of sinks) await sink.close();
        otlpSink?.close();
        rmSync(stateDir, { recursive: true, force: true });
        process.exit(0); // --cpu-prof writes its profile here
    }
  } catch (error) {
    send({ type: 'error', message: String(/** @type {Error} */ (error)?.stack ?? error) });
  }
});
process.on('disconnect', () => {
  rmSync(stateDir, { recursive: true, force: true });
  process.exit(0);
});
send({ type: 'ready', stateDir, entry });
