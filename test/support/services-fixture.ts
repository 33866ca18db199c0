// What the services tests share: a gateway with only services configured (no LLM provider), a fetch
// that goes over a key's Unix socket (for the MCP SDK's client), a tiny upstream whose awkward
// answers are gated on the test (a credential split across two writes, an SSE stream that waits for
// the client to see each event, a request held open), and the gateway's JSON error shape, parsed.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http, { type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { Agent, fetch as undiciFetch } from 'undici';
import { createGateway, type CallRecord, type Gateway, type GatewayOptions } from '../../src/index.ts';
import type { ServiceOptions } from '../../src/services/service.ts';
import type { HttpExchange, RequestSpec } from './http.ts';

export interface ServicesGateway {
  gateway: Gateway;
  calls: CallRecord[];
  stateDir: string;
  /** Closes the gateway (which flushes its audit trail) and returns every line of `audit.jsonl`. */
  close(): Promise<string[]>;
}

export async function startServicesGateway(services: Record<string, ServiceOptions>, extra: Partial<GatewayOptions> = {}): Promise<ServicesGateway> {
  // Short: socket paths are limited to 107 bytes.
  const stateDir = await mkdtemp(path.join(tmpdir(), 'gw-'));
  const calls: CallRecord[] = [];
  const gateway = await createGateway({
    stateDir,
    logger: pino({ level: 'silent' }),
    providers: {},
    services,
    onCall: (record) => calls.push(record),
    ...extra,
  });
  return {
    gateway,
    calls,
    stateDir,
    async close() {
      await gateway.close({ drainMs: 500 });
      const text = await readFile(path.join(stateDir, 'audit.jsonl'), 'utf8').catch(() => '');
      await rm(stateDir, { recursive: true, force: true });
      return text.split('\n').filter((line) => line !== '');
    },
  };
}

/** The gateway's own error answer: `{ error: { message, type, code } }`, checked for its shape. */
export function gatewayError(res: HttpExchange): { message: string; type: string; code: string } {
  const parsed = JSON.parse(res.body) as { error?: { message?: unknown; type?: unknown; code?: unknown } };
  const error = parsed.error;
  if (!error || typeof error.message !== 'string' || typeof error.type !== 'string' || typeof error.code !== 'string') {
    throw new Error(`not a gateway error body: ${res.body.slice(0, 200)}`);
  }
  return { message: error.message, type: error.type, code: error.code };
}

/** A WHATWG fetch whose every request goes over `socketPath` (the host part of the URL is ignored). */
export function socketFetch(socketPath: string): { fetch: typeof globalThis.fetch; close(): Promise<void> } {
  const agent = new Agent({ connect: { socketPath } });
  const fetch = ((url: string | URL, init?: RequestInit) =>
    undiciFetch(url, { ...(init as Parameters<typeof undiciFetch>[1]), dispatcher: agent })) as unknown as typeof globalThis.fetch;
  return { fetch, close: () => agent.close() };
}

/**
 * Resolves when `release()` is called; fails `ms` after the first `arm()` (a request waiting on it),
 * so a test waiting on a buffered stream fails instead of hanging.
 */
export function gate(what: string, ms = 3000): { opened: Promise<void>; arm(): void; release(): void; cancel(): void } {
  let release!: () => void;
  let cancel!: () => void;
  let arm!: () => void;
  let timer: NodeJS.Timeout | undefined;
  const opened = new Promise<void>((resolve, reject) => {
    arm = () => {
      timer ??= setTimeout(() => reject(new Error(`${what}: not released within ${ms} ms`)), ms);
    };
    release = () => {
      clearTimeout(timer);
      resolve();
    };
    cancel = () => {
      clearTimeout(timer);
      reject(new Error(`${what}: closed`));
    };
  });
  opened.catch(() => undefined);
  return { opened, arm, release, cancel };
}

export interface GatedUpstream {
  url: string;
  /** Paths with query, as received. */
  seen: string[];
  /** Opened by the test: `/split` writes its second half, `/sse` its second event, `/hold` answers. */
  next: ReturnType<typeof gate>;
  /** Fired when a `/hold` or `/sse` request has arrived. */
  arrived: Promise<void>;
  close(): Promise<void>;
}

/**
 * `/split`: `before:<first half of token>`, then once released `<second half>:after` (two writes, two
 * chunks on the wire). `/sse`: one event, then once released a second and the end. `/hold`: answers
 * 200 once released. `/leak-redirect`: a 302 whose Location carries the token in its query. `/cookie`:
 * sets a cookie that reveals nothing.
 */
export async function startGatedUpstream(token: string): Promise<GatedUpstream> {
  let arrive!: () => void;
  const state: GatedUpstream = {
    url: '',
    seen: [],
    next: gate('gated upstream'),
    arrived: new Promise<void>((resolve) => {
      arrive = resolve;
    }),
    close: async () => undefined,
  };
  const afterRelease = (res: ServerResponse, write: () => void) => {
    state.next.arm();
    state.next.opened.then(write, () => res.destroy());
  };
  const half = Math.floor(token.length / 2);
  const server = http.createServer((req, res) => {
    state.seen.push(req.url ?? '');
    req.resume();
    const route = (req.url ?? '').split('?')[0];
    if (route === '/split') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write(`before:${token.slice(0, half)}`);
      afterRelease(res, () => res.end(`${token.slice(half)}:after`));
    } else if (route === '/sse') {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('event: one\ndata: 1\n\n');
      arrive();
      afterRelease(res, () => res.end('event: two\ndata: 2\n\n'));
    } else if (route === '/hold') {
      arrive();
      afterRelease(res, () => res.end('released'));
    } else if (route === '/cookie') {
      res.writeHead(200, { 'set-cookie': 'pref=dark; Path=/', 'content-length': '2' });
      res.end('ok');
    } else if (route === '/leak-redirect') {
      res.writeHead(302, { location: `/elsewhere?token=${token}`, 'content-length': '0' });
      res.end();
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  state.close = async () => {
    state.next.cancel();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  };
  return state;
}

/** Like http.ts' `request`, calling `onData` with each body chunk the moment it arrives. */
export function requestStreaming(spec: RequestSpec, onData: (text: string) => void): Promise<HttpExchange> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: spec.socketPath, method: spec.method ?? 'GET', path: spec.path, headers: spec.headers, agent: false }, (res) => {
      const chunks: HttpExchange['chunks'] = [];
      res.on('data', (chunk: Buffer) => {
        chunks.push({ at: performance.now(), text: chunk.toString() });
        onData(chunk.toString());
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: chunks.map((c) => c.text).join(''), chunks }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(spec.body);
  });
}
