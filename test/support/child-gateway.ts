// A gateway under attack in a child process with a small heap: if an attack exhausts its memory,
// the child dies and the test fails, instead of the test runner dying with it. Adversary tests use
// it for any attack whose failure mode is a crash.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import readline from 'node:readline';
import type { GatewaySnapshot, KeyInfo, KeySnapshot } from '../../src/index.ts';
import type { ChildConfig } from './child-gateway-main.ts';

export interface ChildGateway {
  readonly pid: number;
  readonly stateDir: string;
  readonly keys: KeyInfo[];
  /** Whether the child is still running. */
  alive(): boolean;
  /** Resident set size of the child, from /proc. */
  rssBytes(): Promise<number>;
  memory(): Promise<NodeJS.MemoryUsage>;
  inspect(keyId: string): Promise<KeySnapshot>;
  /** The whole gateway's `inspect()`. */
  snapshot(): Promise<GatewaySnapshot>;
  /** Sends `signal` to the child and waits for it to end. */
  kill(signal: NodeJS.Signals): Promise<void>;
  /** Why the child ended, once it has. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  /** Closes the gateway (its state dir goes with it) and waits for the child to end. */
  close(): Promise<void>;
}

export interface ChildGatewayOptions extends ChildConfig {
  /** V8 old-space limit for the child, in MiB. Default 64. */
  heapMb?: number;
}

const MAIN = path.join(import.meta.dirname, 'child-gateway-main.ts');

export async function startChildGateway(options: ChildGatewayOptions): Promise<ChildGateway> {
  const { heapMb = 64, ...config } = options;
  const child: ChildProcess = spawn(process.execPath, [`--max-old-space-size=${heapMb}`, MAIN, JSON.stringify(config)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    if (stderr.length < 64 * 1024) stderr += chunk.toString();
  });
  let running = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) => {
    child.once('exit', (code, signal) => {
      running = false;
      resolve({ code, signal, stderr });
    });
  });
  const lines = readline.createInterface({ input: child.stdout! });
  const waiting = new Map<number, (result: unknown) => void>();
  let ready: (value: { stateDir: string; keys: KeyInfo[] }) => void;
  const started = new Promise<{ stateDir: string; keys: KeyInfo[] }>((resolve) => (ready = resolve));
  lines.on('line', (line) => {
    const message = JSON.parse(line) as { ready?: true; stateDir: string; keys: KeyInfo[] } | { id: number; result: unknown };
    if ('ready' in message) ready(message);
    else if ('id' in message) waiting.get(message.id)?.(message.result);
  });
  const first = await Promise.race([started, exited]);
  if (!('keys' in first)) throw new Error(`child gateway did not start (${first.code ?? first.signal}): ${first.stderr}`);

  let nextId = 0;
  const ask = <T>(command: object): Promise<T> => {
    if (!running) return Promise.reject(new Error('child gateway is not running'));
    const id = nextId++;
    const answer = new Promise<T>((resolve) => waiting.set(id, resolve as (result: unknown) => void));
    child.stdin!.write(`${JSON.stringify({ id, ...command })}\n`);
    return Promise.race([answer, exited.then((end) => Promise.reject(new Error(`child gateway died (${end.code ?? end.signal}): ${end.stderr}`)))]);
  };

  return {
    pid: child.pid!,
    stateDir: first.stateDir,
    keys: first.keys,
    alive: () => running,
    async rssBytes() {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
      return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
    },
    memory: () => ask({ cmd: 'memory' }),
    inspect: (keyId) => ask({ cmd: 'inspect', key: keyId }),
    snapshot: () => ask({ cmd: 'snapshot' }),
    async kill(signal) {
      if (running) child.kill(signal);
      await exited;
    },
    exited,
    async close() {
      if (running) {
        await ask({ cmd: 'close' }).catch(() => undefined);
        child.stdin!.end();
      }
      await exited;
    },
  };
}
