// A real redis-server for the shared-store tests: on a free loopback port or a Unix socket, with AOF on
// or off and no RDB snapshots, in its own temporary directory; killed, stopped and restarted (empty or
// not) by the tests to play a store that dies, hangs or loses its data.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { deadPort } from './fixture.ts';
import { runs } from './requirements.ts';

export const hasRedisServer = runs('redis-server');

export interface RedisServer {
  /** redis://127.0.0.1:PORT or unix://PATH (with the password, if any). */
  url: string;
  port?: number;
  socketPath?: string;
  /** Sends a signal to the server (SIGKILL, SIGSTOP, SIGCONT ...). */
  kill(signal: NodeJS.Signals): void;
  /** Kills the server if it runs and starts it again on the same port or socket; `empty` drops its files first. */
  restart(options?: { empty?: boolean }): Promise<void>;
  close(): Promise<void>;
}

export interface RedisServerOptions {
  aof?: boolean;
  unixSocket?: boolean;
  password?: string;
}

const START_TIMEOUT_MS = 10_000;

export async function startRedis(options: RedisServerOptions = {}): Promise<RedisServer> {
  const dir = mkdtempSync(path.join(tmpdir(), 'redis-test-'));
  const socketPath = options.unixSocket ? path.join(dir, 'redis.sock') : undefined;
  const port = socketPath ? undefined : await deadPort();
  const args = [
    '--port',
    String(port ?? 0),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    options.aof ? 'yes' : 'no',
    // Every write on disk before its reply: a SIGKILL loses nothing, so the AOF test is deterministic.
    '--appendfsync',
    'always',
    '--dir',
    dir,
    '--logfile',
    '',
    ...(socketPath ? ['--unixsocket', socketPath, '--unixsocketperm', '700'] : []),
    ...(options.password ? ['--requirepass', options.password] : []),
  ];
  let child: ChildProcess | undefined;

  const launch = () =>
    new Promise<void>((resolve, reject) => {
      const proc = spawn('redis-server', args, {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child = proc;
      let output = '';
      const fail = (why: string) => {
        clearTimeout(timer);
        proc.kill('SIGKILL');
        reject(new Error(`redis-server did not start: ${why}\n${output.slice(-2000)}`));
      };
      const timer = setTimeout(() => fail('timed out'), START_TIMEOUT_MS);
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (/ready to accept connections/i.test(output)) {
          clearTimeout(timer);
          proc.stdout.off('data', onData);
          resolve();
        }
      };
      proc.stdout.on('data', onData);
      proc.stderr.on('data', (chunk: Buffer) => {
        output += chunk.toString();
      });
      proc.on('error', (err) => fail(err.message));
      proc.on('exit', (code, signal) => {
        if (/ready to accept connections/i.test(output)) return;
        fail(`exited (${code ?? signal})`);
      });
    });

  const stop = async () => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGCONT');
    proc.kill('SIGKILL');
    await exited;
  };

  await launch();
  const auth = options.password ? `:${encodeURIComponent(options.password)}@` : '';
  return {
    url: socketPath ? `unix://${auth}${socketPath}` : `redis://${auth}127.0.0.1:${port}`,
    port,
    socketPath,
    kill(signal) {
      child?.kill(signal);
    },
    async restart({ empty = false } = {}) {
      await stop();
      if (empty) {
        rmSync(dir, { recursive: true, force: true });
        mkdirSync(dir, { mode: 0o700 });
      }
      await launch();
    },
    async close() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
