// Ephemeral keys and their sockets. A key is nothing but a record in memory and a Unix socket in a
// directory of its own; a connection's identity is the socket it arrived on, so nothing a client
// sends can claim another key.
import { chown, chmod, copyFile, mkdir, rm, unlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { customAlphabet } from 'nanoid';
import { ValidationError } from '../util/validation.ts';

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
  readonly sockets: Set<net.Socket>;
  timer?: NodeJS.Timeout;
}

export interface KeyStoreOptions {
  keysDir: string;
  /** Hands each accepted connection, tagged with its key, to the HTTP server. */
  onConnection(socket: net.Socket, key: KeyRecord): void;
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
   * Creates a key. With `restore` (a lease from before a restart), re-creates that key with its id
   * and times, in its existing directory, replacing the stale socket file.
   */
  async mint(options: MintOptions, restore?: { id: string; createdAt: number; expiresAt?: number }): Promise<KeyRecord> {
    if (typeof options.group !== 'string' || options.group.length === 0) {
      throw new ValidationError('mint `group`', 'must be a non-empty string');
    }
    if (options.ttlMs !== undefined && !(Number.isFinite(options.ttlMs) && options.ttlMs > 0)) {
      throw new ValidationError('mint `ttlMs`', 'must be a positive number of milliseconds');
    }
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
      server: net.createServer({ noDelay: true }, (socket) => {
        sockets.add(socket);
        socket.once('close', () => sockets.delete(socket));
        this.options.onConnection(socket, record);
      }),
    };
    record.server.maxConnections = this.options.maxConnectionsPerKey;
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
    } catch (error) {
      record.server.close();
      if (!restore) await rm(dir, { recursive: true, force: true });
      throw error;
    }
    this.keys.set(id, record);
    if (record.expiresAt !== undefined) this.armExpiry(record);
    return record;
  }

  /** Closes the key's listener and connections and removes its directory. False if unknown. */
  async revoke(id: string, reason: RevokeReason = 'revoked'): Promise<boolean> {
    const record = this.keys.get(id);
    if (!record) return false;
    this.keys.delete(id);
    record.revoked = true;
    clearTimeout(record.timer);
    record.server.close();
    for (const socket of record.sockets) socket.destroy();
    if (reason === 'closed' && this.options.keepDirsOnClose) await rm(record.socketPath, { force: true });
    else await rm(record.dir, { recursive: true, force: true });
    this.options.onRevoked?.(record, reason);
    return true;
  }

  /** Stops accepting new connections on every key; open ones carry on. */
  stopAccepting(): void {
    for (const record of this.keys.values()) record.server.close();
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

function listen(server: net.Server, socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
