// Reading a request body: bounded in size, kept as the exact bytes the client sent, in the chunks
// they came in (they are forwarded unchanged: thinking-block signatures and prompt-cache prefixes
// depend on them), and handed chunk by chunk to its watchers (the memory charge, and the fields'
// reader in wire/).
import type { IncomingMessage } from 'node:http';
import type { BodyHold } from './body-memory.ts';
import { BodyCollector, type BodyBytes } from '../wire/body-bytes.ts';
import { ClientGone, GatewayError } from '../wire/errors.ts';

/** What reads a body as it arrives: its memory charge, and a reader of its fields. */
export interface BodyWatchers {
  /** Charged with the declared length at once, then with each byte past it. */
  hold?: BodyHold;
  /** Scans each chunk as it arrives (so no single step costs more than one chunk's scan). */
  reader?: { push(chunk: Buffer): void };
}

/**
 * Scan time a body may take in one turn of the event loop. Node reads up to 32 socket chunks (2 MiB)
 * per turn, and a body shaped to be slow scans at ~1.5 ms per 64 KiB: without a yield one turn held
 * every other key for ~60 ms (p50 of a bystander's calls under attack).
 */
const SCAN_SLICE_MS = 2;

/**
 * The body's bytes, in the chunks they arrived in; rejects with 413 past `limitBytes`, 408 after
 * `idleMs` without a byte, and with whatever a watcher throws (the rest of the body is then not read).
 */
export function readBody(req: IncomingMessage, limitBytes: number, idleMs: number, watchers: BodyWatchers = {}): Promise<BodyBytes> {
  const declared = Number(req.headers['content-length']);
  if (declared > limitBytes) {
    return Promise.reject(tooLarge(limitBytes));
  }
  try {
    if (declared > 0) watchers.hold?.grow(declared);
  } catch (error) {
    return Promise.reject(error as Error);
  }
  return new Promise((resolve, reject) => {
    const body = new BodyCollector();
    let size = 0;
    let scanMs = 0;
    let done = false;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      try {
        if (size > limitBytes) throw tooLarge(limitBytes);
        watchers.hold?.grow(size);
        const started = performance.now();
        watchers.reader?.push(chunk);
        scanMs += performance.now() - started;
        if (scanMs > SCAN_SLICE_MS) {
          // This body had its turn: let the other sockets have theirs before reading on.
          scanMs = 0;
          req.pause();
          setImmediate(() => done || req.resume());
        }
      } catch (error) {
        cleanup();
        reject(
          error instanceof GatewayError && !error.headers.connection
            ? new GatewayError(error.kind, error.message, { ...error.headers, connection: 'close' })
            : error,
        );
        return;
      }
      body.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(body.finish());
    };
    // A request stream only errors when the client's connection breaks.
    const onError = () => {
      cleanup();
      reject(new ClientGone('client closed the connection before sending the whole body'));
    };
    const onIdle = () => {
      cleanup();
      reject(new GatewayError('request_timeout', `no request body bytes for ${Math.round(idleMs / 1000)} s`, { connection: 'close' }));
    };
    function cleanup() {
      done = true;
      // The same socket then waits quietly for the upstream, however long that takes.
      req.socket.setTimeout(0);
      req.off('timeout', onIdle);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    }
    function onClose() {
      if (!req.complete) onError();
    }
    // On the request, not the socket: with a listener there, Node's server leaves the socket open
    // for our 408 instead of destroying it.
    req.setTimeout(idleMs);
    req.once('timeout', onIdle);
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

function tooLarge(limitBytes: number): GatewayError {
  // The rest of the body is not read: the connection is closed after the answer.
  return new GatewayError('body_too_large', `request body is larger than this key's limit of ${limitBytes} bytes`, {
    connection: 'close',
  });
}

export function isJsonContentType(value: string | undefined): boolean {
  if (value === undefined) return false;
  if (value === 'application/json') return true; // what every SDK sends
  const type = value.split(';', 1)[0]!.trim().toLowerCase();
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}
