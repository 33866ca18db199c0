// The gateway under test, in a process of its own (so its CPU time and memory are its own and the
// load generator does not share its event loop). Driven over IPC by bench/run.mjs:
//   mint {n}      -> mints n keys one after another, timing each; answers their ids and socket paths
//   revoke {ids}  -> revokes them one after another, timing each
//   mem           -> process.memoryUsage() after two full GCs (needs --expose-gc)
//   cpu           -> process.cpuUsage()
//   store         -> the shared store's state and what it reports of the group `shared` (with BENCH_STORE_URL)
// The configuration is the real one a host would use: audit trail to a file, metering on; with
// BENCH_EGRESS (JSON of the `egress` option), the forward proxy on each key's socket too; with
// BENCH_STORE_URL, a shared store (Redis) holding the budget of the group `shared` (BENCH_SHARED_BUDGET USD).
// mint takes an optional group and key budget (default: group bench, no key budget).
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { pino } from 'pino';

// What ships: the compiled dist/ (`make bench` builds it). The TypeScript sources run under Node's
// type stripping, which loads a WebAssembly compiler (~60 MB of RSS) a real host would not have.
const entry = process.env.BENCH_GATEWAY_ENTRY ?? (existsSync(new URL('../dist/index.js', import.meta.url)) ? '../dist/index.js' : '../src/index.ts');
const { createGateway } = await import(entry);

const stateDir = mkdtempSync('/tmp/gwb-');
const gateway = await createGateway({
  stateDir,
  logger: pino({ level: 'warn' }, pino.destination(2)),
  providers: { anthropic: { baseUrl: process.env.BENCH_UPSTREAM_URL, apiKey: process.env.BENCH_REAL_KEY } },
  // The workloads drive up to 64 requests at once through one key: above the default cap of 32.
  defaultLimits: { maxConcurrent: 128 },
  ...(process.env.BENCH_EGRESS ? { egress: JSON.parse(process.env.BENCH_EGRESS) } : {}),
  ...(process.env.BENCH_STORE_URL
    ? { store: { url: process.env.BENCH_STORE_URL, hostId: 'bench' }, groupBudgets: { shared: Number(process.env.BENCH_SHARED_BUDGET ?? 1000) } }
    : {}),
});

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
        send({ type: 'store', state: snapshot.store?.state, shared: snapshot.groups.find((/** @type {any} */ g) => g.group === 'shared')?.shared });
        break;
      }
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
        await gateway.close({ drainMs: 1000 });
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
