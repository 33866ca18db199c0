// Reading a request body: bounded in size, kept as the exact bytes the client sent (they are
// forwarded unchanged: thinking-block signatures and prompt-cache prefixes depend on them), and
// parsed once for the few fields routing and metering need.
import type { IncomingMessage } from 'node:http';
import { GatewayError } from './errors.ts';

/** What the gateway learns from a request body. Unknown or missing fields stay undefined. */
export interface RequestFields {
  model?: string;
  stream: boolean;
  /** `max_tokens` (Anthropic), `max_completion_tokens` / `max_tokens` (chat), `max_output_tokens` (responses). */
  maxOutputTokens?: number;
  /** The parsed body, for later stages that need more (never re-serialized to the upstream). */
  json: Record<string, unknown>;
}

/** The client went away before its body was complete: nothing to answer, nothing to forward. */
export class ClientGone extends Error {}

/** The body's bytes; rejects with 413 past `limitBytes`, 408 after `idleMs` without a byte. */
export function readBody(req: IncomingMessage, limitBytes: number, idleMs: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > limitBytes) {
    return Promise.reject(tooLarge(limitBytes));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limitBytes) {
        cleanup();
        reject(tooLarge(limitBytes));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
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
  const type = value.split(';', 1)[0]!.trim().toLowerCase();
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}

export function parseRequestFields(body: Buffer): RequestFields {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new GatewayError('invalid_request', `request body is not valid JSON: ${(error as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new GatewayError('invalid_request', 'request body must be a JSON object');
  }
  const object = json as Record<string, unknown>;
  if (object.model !== undefined && typeof object.model !== 'string') {
    throw new GatewayError('invalid_request', '`model` must be a string');
  }
  const max = object.max_tokens ?? object.max_completion_tokens ?? object.max_output_tokens;
  return {
    model: object.model as string | undefined,
    stream: object.stream === true,
    maxOutputTokens: typeof max === 'number' && Number.isFinite(max) && max > 0 ? max : undefined,
    json: object,
  };
}
