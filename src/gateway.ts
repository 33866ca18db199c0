// createGateway: the library entry point. One gateway = one key store, one HTTP request handler
// shared by every key's socket, and one upstream connection pool. No globals, no child processes:
// it runs in the host's own event loop, and several can live in one process.
import { mkdir } from 'node:fs/promises';
import http from 'node:http';
import type { Socket } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino, type Logger } from 'pino';
import { Agent } from 'undici';
import type { CallRecord } from './calls.ts';
import { KeyStore, type KeyInfo, type KeyRecord, type MintOptions, type Owner } from './keys.ts';
import { providersFromEnv, resolveUpstreams, type ProvidersConfig } from './providers.ts';
import { createRequestHandler } from './proxy.ts';
import { refuseUpgrade } from './upgrade.ts';

export interface GatewayOptions {
  /** Holds `keys/<id>/gateway.sock`. Created (mode 0700) if missing. Keep it short: socket paths max 107 bytes. */
  stateDir: string;
  /** Upstreams and real credentials. Default: the standard environment variables (see README). */
  providers?: ProvidersConfig;
  /** Default pino at level `warn` on stderr. Request bodies and credentials are never logged. */
  logger?: Logger;
  /** Largest request body accepted, in bytes. Default 32 MiB (the Messages API's own limit). */
  maxBodyBytes?: number;
  /** Open connections one key's socket accepts at once. Default 256. */
  maxConnectionsPerKey?: number;
  /** Upstream time to response headers, and longest silence mid-response. Defaults 10 min, 5 min. */
  timeouts?: { firstByteMs?: number; idleMs?: number };
  /** Default owner for key directories and sockets (the containers' user). */
  socketOwner?: Owner;
  /** Called once per proxied call, after its last byte. */
  onCall?: (record: CallRecord) => void;
}

export interface Gateway {
  readonly stateDir: string;
  /** Creates a key with its own socket directory. */
  mint(options: MintOptions): Promise<KeyInfo>;
  /** Closes the key's socket and connections and removes its directory. False if no such key. */
  revoke(id: string): Promise<boolean>;
  /** The live keys. */
  keys(): KeyInfo[];
  /** Stops accepting, lets in-flight requests finish (up to `drainMs`, default 10 s), revokes every key. */
  close(options?: { drainMs?: number }): Promise<void>;
}

const MiB = 1024 * 1024;

export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  const stateDir = path.resolve(options.stateDir);
  const keysDir = path.join(stateDir, 'keys');
  await mkdir(keysDir, { recursive: true, mode: 0o700 });

  const logger = options.logger ?? pino({ level: 'warn' }, pino.destination(2));
  const upstreams = resolveUpstreams(options.providers ?? providersFromEnv());
  const dispatcher = new Agent({ keepAliveTimeout: 30_000, connect: { keepAlive: true } });
  const keyOfSocket = new WeakMap<Socket, KeyRecord>();

  const server = http.createServer(
    {
      // Streams can run for many minutes: no overall request deadline here.
      requestTimeout: 0,
      keepAliveTimeout: 60_000,
      noDelay: true,
    },
    createRequestHandler({
      keyOf: (socket) => keyOfSocket.get(socket),
      upstreams: () => upstreams,
      dispatcher,
      maxBodyBytes: options.maxBodyBytes ?? 32 * MiB,
      timeouts: { firstByteMs: 600_000, idleMs: 300_000, ...options.timeouts },
      onCall(record) {
        logger.debug({ call: record }, 'call');
        options.onCall?.(record);
      },
      onInternalError(error) {
        logger.error({ err: error }, 'internal error while handling a request');
      },
    }),
  );
  server.on('upgrade', (req, socket) => refuseUpgrade(req, socket as Socket));

  const store = new KeyStore({
    keysDir,
    maxConnectionsPerKey: options.maxConnectionsPerKey ?? 256,
    onConnection(socket, key) {
      keyOfSocket.set(socket, key);
      server.emit('connection', socket);
    },
    onRevoked(key, reason) {
      logger.info({ key: key.id, group: key.group, reason }, 'key revoked');
    },
  });

  let closed = false;
  return {
    stateDir,
    async mint(mintOptions) {
      if (closed) throw new Error('gateway is closed');
      const record = await store.mint({ owner: options.socketOwner, ...mintOptions });
      logger.info({ key: record.id, group: record.group, label: record.label }, 'key minted');
      return keyInfo(record);
    },
    revoke: (id) => store.revoke(id, 'revoked'),
    keys: () => store.list().map(keyInfo),
    async close({ drainMs = 10_000 } = {}) {
      if (closed) return;
      closed = true;
      store.stopAccepting();
      const deadline = Date.now() + drainMs;
      while (store.list().some((key) => key.inFlight > 0) && Date.now() < deadline) await sleep(25);
      await Promise.all(store.list().map((key) => store.revoke(key.id, 'closed')));
      server.close();
      await dispatcher.destroy();
    },
  };
}

function keyInfo(record: KeyRecord): KeyInfo {
  const { id, group, label, dir, socketPath, createdAt, expiresAt } = record;
  return { id, group, label, dir, socketPath, createdAt, expiresAt };
}
