// Ephemeral keys and their sockets. A key is nothing but a record in memory and a Unix socket in a
// directory of its own; a connection's identity is the socket it arrived on, so nothing a client
// sends can claim another key. A key in TCP mode also listens on a TCP address of its own, where a
// connection must in addition show the key's token (keys/token.ts, http/token-guard.ts).
import { chown, chmod, copyFile, mkdir, rm, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { customAlphabet } from 'nanoid';
import { ValidationError } from '../util/validation.ts';
import { checkTcpListen, sourceFilter, type TcpEndpoint, type TcpListen } from './tcp-listen.ts';
import { newToken, tokenDigest } from './token.ts';

// Lower-case alphanumerics: safe in paths, container names and labels. 16 chars = 82 bits.
const newKeyId = customAlphabet('0123456789abcdefghijklmnopqrstuvwxyz', 16);

const SOCKET_NAME = 'gateway.sock';
export const SHIM_NAME = 'shim.mjs';
/** The in-container relay shipped with this package, copied into every key's directory. */
const SHIM_SOURCE = fileURLToPath(new URL('../../shim/shim.mjs', import.meta.url));
// Linux sun_path holds 107 bytes plus the terminating NUL.
const MAX_SOCKET_PATH = 107;
// setTimeout fires at once beyond this many milliseconds; longer TTLs re-arm.
const MAX_TIMER_MS = 2_147_483_647;

export interface Owner {
  uid: number;
  gid: number;
}

export interface MintOptions {
  /** Who the key belongs to (a chat group, a task); later budgets are shared per group. */
  group: string;
  label?: string;
  /** Revoked by itself after this long. Default: lives until revoked. */
  ttlMs?: number;
  /** Give the key's directory and socket to this user (the container's), instead of 0700 to us. */
  owner?: Owner;
  /** Also listen for the key on this TCP address, guarded by a token (TCP mode, docs/deploy.md). */
  tcp?: TcpListen;
}

/** What a host needs to launch a container for a key. */
export interface KeyInfo {
  id: string;
  group: string;
  label?: string;
  /** The key's own directory: bind-mount this, not the socket file. */
  dir: string;
  socketPath: string;
  createdAt: number;
  expiresAt?: number;
  /** Whether the key may use its socket's forward proxy (its own or its group's egress list): runners set the proxy env then. */
  egress?: boolean;
  /** The configured services the key may use at `/svc/NAME/` (its own grants and its group's). */
  services?: ServiceGrant[];
  /** In TCP mode: where the key listens; with its token in `mint`'s answer only. */
  tcp?: TcpEndpoint;
}

/** A service a key may use, as its container is told about it (`mcp`: listed in the key's `mcp.json`). */
export interface ServiceGrant {
  name: string;
  kind: 'http' | 'mcp';
}

export type RevokeReason = 'revoked' | 'expired' | 'closed';

export interface KeyRecord extends KeyInfo {
  revoked: boolean;
  /** Requests being served right now. */
  inFlight: number;
  readonly server: net.Server;
  /** In TCP mode: the key's TCP listener and the digest of its token. */
  readonly tcpServer?: net.Server;
  readonly tokenDigest?: Buffer;
  readonly sockets: Set<net.Socket>;
  timer?: NodeJS.Timeout;
}

/** How a connection reached its key: the socket is proof enough, a TCP connection must show the token. */
type Transport = 'socket' | 'tcp';

/** What `mint` restores of a key from before a restart. */
export interface RestoredKey {
  id: string;
  createdAt: number;
  expiresAt?: number;
  /** TCP mode: the token the container still holds, by its digest. */
  tokenDigest?: Buffer;
}

export interface KeyStoreOptions {
  keysDir: string;
  /** Hands each accepted connection, tagged with its key and how it came, to the HTTP server. */
  onConnection(socket: net.Socket, key: KeyRecord, transport: Transport): void;
  /** A TCP connection from an address the key's `allowFrom` does not list (it is closed). */
  onRefusedSource?(key: KeyRecord, address: string | undefined): void;
  onRevoked?(key: KeyRecord, reason: RevokeReason): void;
  maxConnectionsPerKey: number;
  /**
   * On close, keep each key's directory and remove only its socket: containers have the directory
   * bind-mounted, and only the same directory (inode) shows them the socket of the next start.
   */
  keepDirsOnClose?: boolean;
}

export class KeyStore {
  private readonly keys = new Map<string, KeyRecord>();
  private readonly options: KeyStoreOptions;

  constructor(options: KeyStoreOptions) {
    this.options = options;
  }

  list(): KeyRecord[] {
    return [...this.keys.values()];
  }

  /**
   * Creates a key, and in TCP mode its token (returned here once, kept as a digest). With `restore`
   * (a lease from before a restart), re-creates that key with its id, times and token, in its
   * existing directory, replacing the stale socket file.
   */
  async mint(options: MintOptions, restore?: RestoredKey): Promise<{ record: KeyRecord; token?: string }> {
    if (typeof options.group !== 'string' || options.group.length === 0) {
      throw new ValidationError('mint `group`', 'must be a non-empty string');
    }
    if (options.ttlMs !== undefined && !(Number.isFinite(options.ttlMs) && options.ttlMs > 0)) {
      throw new ValidationError('mint `ttlMs`', 'must be a positive number of milliseconds');
    }
    const tcp = options.tcp === undefined ? undefined : checkTcpListen(options.tcp);
    const token = tcp && !restore?.tokenDigest ? newToken() : undefined;
    const id = restore?.id ?? newKeyId();
    const dir = path.join(this.options.keysDir, id);
    const socketPath = path.join(dir, SOCKET_NAME);
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
      throw new Error(`socket path ${socketPath} is longer than ${MAX_SOCKET_PATH} bytes: use a shorter state dir`);
    }
    if (restore) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await chmod(dir, 0o700);
      await unlink(socketPath).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
      });
    } else {
      await mkdir(dir, { mode: 0o700 });
    }
    const sockets = new Set<net.Socket>();
    const now = restore?.createdAt ?? Date.now();
    const accept = (socket: net.Socket, transport: Transport) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      this.options.onConnection(socket, record, transport);
    };
    const allowed = tcp?.allowFrom ? sourceFilter(tcp.allowFrom) : () => true;
    const record: KeyRecord = {
      id,
      group: options.group,
      label: options.label,
      dir,
      socketPath,
      createdAt: now,
      expiresAt: restore ? restore.expiresAt : options.ttlMs === undefined ? undefined : now + options.ttlMs,
      revoked: false,
      inFlight: 0,
      sockets,
      server: net.createServer({ noDelay: true }, (socket) => accept(socket, 'socket')),
      ...(tcp && {
        tokenDigest: restore?.tokenDigest ?? tokenDigest(token!),
        tcpServer: net.createServer({ noDelay: true }, (socket) => {
          if (allowed(socket.remoteAddress)) return accept(socket, 'tcp');
          this.options.onRefusedSource?.(record, socket.remoteAddress);
          socket.destroy();
        }),
      }),
    };
    record.server.maxConnections = this.options.maxConnectionsPerKey;
    if (record.tcpServer) record.tcpServer.maxConnections = this.options.maxConnectionsPerKey;
    try {
      // Any image with Node can start its relay from the mount: `node /run/gateway/shim.mjs -- CMD`.
      await copyFile(SHIM_SOURCE, path.join(dir, SHIM_NAME));
      await chmod(path.join(dir, SHIM_NAME), 0o644);
      await listen(record.server, socketPath);
      await chmod(socketPath, 0o600);
      if (options.owner) {
        await chown(dir, options.owner.uid, options.owner.gid);
        await chown(socketPath, options.owner.uid, options.owner.gid);
      }
      if (tcp) record.tcp = await listenTcp(record.tcpServer!, tcp);
    } catch (error) {
      record.server.close();
      record.tcpServer?.close();
      if (!restore) await rm(dir, { recursive: true, force: true });
      throw error;
    }
    this.keys.set(id, record);
    if (record.expiresAt !== undefined) this.armExpiry(record);
    return { record, token };
  }

  /** Closes the key's listener and connections and removes its directory. False if unknown. */
  async revoke(id: string, reason: RevokeReason = 'revoked'): Promise<boolean> {
    const record = this.keys.get(id);
    if (!record) return false;
    this.keys.delete(id);
    record.revoked = true;
    clearTimeout(record.timer);
    record.server.close();
    record.tcpServer?.close();
    for (const socket of record.sockets) socket.destroy();
    if (reason === 'closed' && this.options.keepDirsOnClose) await rm(record.socketPath, { force: true });
    else await rm(record.dir, { recursive: true, force: true });
    this.options.onRevoked?.(record, reason);
    return true;
  }

  /** Stops accepting new connections on every key; open ones carry on. */
  stopAccepting(): void {
    for (const record of this.keys.values()) {
      record.server.close();
      record.tcpServer?.close();
    }
  }

  private armExpiry(record: KeyRecord): void {
    const remaining = record.expiresAt! - Date.now();
    record.timer = setTimeout(
      () => {
        if (record.expiresAt! <= Date.now()) this.revoke(record.id, 'expired').catch(() => undefined);
        else this.armExpiry(record);
      },
      Math.min(Math.max(remaining, 0), MAX_TIMER_MS),
    );
    // Expiry alone must not keep a host's process alive.
    record.timer.unref();
  }
}

function listen(server: net.Server, where: string | net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(where, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** Listens on the key's TCP address; the endpoint with the port the system chose for port 0. */
async function listenTcp(server: net.Server, tcp: TcpListen): Promise<TcpEndpoint> {
  // exclusive: a cluster worker must not share the listener, ipv6Only: `::1` is not also 127.0.0.1.
  await listen(server, { host: tcp.host, port: tcp.port ?? 0, exclusive: true, ipv6Only: true });
  const { port } = server.address() as net.AddressInfo;
  return { host: tcp.host, port, ...(tcp.allowFrom ? { allowFrom: tcp.allowFrom } : {}) };
}
