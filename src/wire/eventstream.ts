// Bedrock's streaming answer: an AWS event stream (`application/vnd.amazon.eventstream`) of binary
// messages, each a prelude (total length, headers length, prelude CRC), headers, a payload and a
// message CRC. A `chunk` event carries one Anthropic stream event, base64-encoded, in its JSON payload;
// an `exception` message ends the stream with an error. This decodes a copy of such a stream as it
// passes (for metering, or to turn it into SSE for a Messages client) and encodes one for a Bedrock
// client fed by an SSE upstream. Framing and CRCs are the real codec's (@smithy/eventstream-codec);
// what is added here is the incremental buffering and the bounds an upstream's garbage must not break.
import { crc32 } from 'node:zlib';
import { EventStreamCodec, type MessageHeaders } from '@smithy/eventstream-codec';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';

/**
 * Largest message accepted, as declared in its prelude. Bedrock's messages carry one stream event each
 * (a few hundred bytes; a whole tool input at most), so 16 MiB is far above any real one while keeping
 * what one garbled or hostile length can make the gateway allocate small.
 */
export const MAX_EVENT_STREAM_MESSAGE_BYTES = 16 * 1024 * 1024;

/** Total length, headers length, prelude CRC: 4 bytes each. */
const PRELUDE_BYTES = 12;
/** A message with no headers and no payload: the prelude and the message CRC. */
const MIN_MESSAGE_BYTES = PRELUDE_BYTES + 4;
/** What is kept of an exception's type and message (they may end up in a log or a client's error). */
const MAX_EXCEPTION_TYPE_CHARS = 128;
const MAX_EXCEPTION_MESSAGE_CHARS = 2048;
/** An SSE event name read from a JSON `type`: short, and nothing that could break the `event:` line. */
const EVENT_TYPE = /^[A-Za-z0-9_.-]{1,64}$/;
/** Anthropic puts `type` first: read it from the head without parsing the event. */
const LEADING_TYPE = /^\s*\{\s*"type"\s*:\s*"([A-Za-z0-9_.-]{1,64})"/;

const codec = new EventStreamCodec(toUtf8, fromUtf8);

/** One decoded message: an Anthropic event (the exact JSON bytes that were base64-encoded) or an exception. */
export type BedrockStreamItem = { event: Buffer } | { exception: { type: string; message: string } };

/**
 * Incremental decoder: push() any chunking of the stream (1 byte at a time included), get the complete
 * messages so far. Each message is copied once into a buffer of its declared length, so the work is
 * linear in the bytes pushed however they are cut. A declared length over the bound, a CRC mismatch or
 * a garbled message makes push() throw; the decoder then stays failed (the stream cannot be resynced).
 * Event messages other than `chunk` (Bedrock sends none today) are skipped.
 */
export class BedrockStreamDecoder {
  /** The next message's prelude, until it is all in and checked. */
  private readonly prelude = Buffer.alloc(PRELUDE_BYTES);
  /** The message being received, at its declared length (its own ArrayBuffer: see decodeMessage). */
  private message: Uint8Array | undefined;
  private filled = 0;
  private failure: Error | undefined;

  push(chunk: Buffer): BedrockStreamItem[] {
    if (this.failure) throw this.failure;
    try {
      return this.take(chunk);
    } catch (error) {
      this.failure = error as Error;
      throw error;
    }
  }

  /** bytes held awaiting the rest of a message */
  get pending(): number {
    return this.filled;
  }

  private take(chunk: Buffer): BedrockStreamItem[] {
    const items: BedrockStreamItem[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.message === undefined) {
        const count = Math.min(PRELUDE_BYTES - this.filled, chunk.length - at);
        chunk.copy(this.prelude, this.filled, at, at + count);
        this.filled += count;
        at += count;
        if (this.filled < PRELUDE_BYTES) break;
        this.message = new Uint8Array(checkedLength(this.prelude));
        this.message.set(this.prelude);
      }
      const count = Math.min(this.message.length - this.filled, chunk.length - at);
      this.message.set(chunk.subarray(at, at + count), this.filled);
      this.filled += count;
      at += count;
      if (this.filled === this.message.length) {
        const item = decodeMessage(this.message);
        this.message = undefined;
        this.filled = 0;
        if (item) items.push(item);
      }
    }
    return items;
  }
}

/** The message length a prelude declares, once its CRC and lengths are checked (before anything is allocated). */
function checkedLength(prelude: Buffer): number {
  if (crc32(prelude.subarray(0, 8)) !== prelude.readUInt32BE(8)) throw new Error('Bedrock event stream: prelude CRC mismatch');
  const total = prelude.readUInt32BE(0);
  const headers = prelude.readUInt32BE(4);
  if (total > MAX_EVENT_STREAM_MESSAGE_BYTES) {
    throw new Error(`Bedrock event stream: a message of ${total} bytes declared, over the ${MAX_EVENT_STREAM_MESSAGE_BYTES}-byte bound`);
  }
  if (total < MIN_MESSAGE_BYTES || headers > total - MIN_MESSAGE_BYTES) {
    throw new Error(`Bedrock event stream: impossible lengths (message ${total}, headers ${headers})`);
  }
  return total;
}

/**
 * One whole message -> its item, or undefined for an event to skip. `bytes` must be the whole of its
 * ArrayBuffer: the codec reads headers through `.buffer`, and a garbled header length must find only
 * this message's bytes there, never a neighbour's from a shared pool.
 */
function decodeMessage(bytes: Uint8Array): BedrockStreamItem | undefined {
  let headers: MessageHeaders;
  let body: Buffer;
  try {
    const message = codec.decode(bytes);
    headers = message.headers;
    body = Buffer.from(message.body.buffer, message.body.byteOffset, message.body.byteLength);
  } catch (error) {
    throw new Error(`Bedrock event stream: a garbled message (${(error as Error).message})`);
  }
  const kind = stringHeader(headers, ':message-type');
  switch (kind) {
    case 'event':
      return stringHeader(headers, ':event-type') === 'chunk' ? { event: chunkEvent(body) } : undefined;
    case 'exception':
      return {
        exception: { type: bounded(stringHeader(headers, ':exception-type') ?? 'unknownException', MAX_EXCEPTION_TYPE_CHARS), message: exceptionText(body) },
      };
    case 'error': // the event-stream protocol's own error
      return {
        exception: {
          type: bounded(stringHeader(headers, ':error-code') ?? 'unknownError', MAX_EXCEPTION_TYPE_CHARS),
          message: bounded(stringHeader(headers, ':error-message') ?? '', MAX_EXCEPTION_MESSAGE_CHARS),
        },
      };
    default:
      throw new Error(`Bedrock event stream: unknown :message-type ${JSON.stringify(bounded(kind ?? '(none)', MAX_EXCEPTION_TYPE_CHARS))}`);
  }
}

function stringHeader(headers: MessageHeaders, name: string): string | undefined {
  const header = Object.hasOwn(headers, name) ? headers[name] : undefined;
  return header?.type === 'string' ? header.value : undefined;
}

/** `{"bytes":"<base64>"}` (and Bedrock's `p` padding) -> the encoded bytes, exactly. */
function chunkEvent(payload: Buffer): Buffer {
  let encoded: unknown;
  try {
    encoded = (JSON.parse(payload.toString('utf8')) as { bytes?: unknown } | null)?.bytes;
  } catch {
    throw new Error('Bedrock event stream: a chunk whose payload is not JSON');
  }
  if (typeof encoded !== 'string') throw new Error('Bedrock event stream: a chunk without its bytes');
  const bytes = Buffer.from(encoded, 'base64');
  // Node skips what is not base64; a length short of the text's means the text was not all base64.
  const padding = encoded.endsWith('==') ? 2 : encoded.endsWith('=') ? 1 : 0;
  if (bytes.length !== Math.floor(((encoded.length - padding) * 3) / 4)) throw new Error('Bedrock event stream: a chunk whose bytes are not base64');
  return bytes;
}

/** An exception's `{"message": ...}`, else its payload as text; bounded either way. */
function exceptionText(payload: Buffer): string {
  let message: unknown;
  try {
    const parsed = JSON.parse(payload.toString('utf8')) as { message?: unknown; Message?: unknown } | null;
    message = parsed?.message ?? parsed?.Message;
  } catch {
    // Not JSON: the text itself.
  }
  const text = typeof message === 'string' ? message : payload.toString('utf8', 0, Math.min(payload.length, 4 * MAX_EXCEPTION_MESSAGE_CHARS));
  return bounded(text, MAX_EXCEPTION_MESSAGE_CHARS);
}

function bounded(text: string, chars: number): string {
  return text.length > chars ? `${text.slice(0, chars)}...` : text;
}

const stringValue = (value: string) => ({ type: 'string' as const, value });

/** One `chunk` event message carrying `eventJson` (its bytes base64-encoded as is). */
export function encodeChunkMessage(eventJson: Buffer): Buffer {
  const body = Buffer.from(`{"bytes":"${eventJson.toString('base64')}"}`, 'latin1');
  const headers = { ':event-type': stringValue('chunk'), ':content-type': stringValue('application/json'), ':message-type': stringValue('event') };
  const message = codec.encode({ headers, body });
  return Buffer.from(message.buffer, message.byteOffset, message.byteLength);
}

/** An exception message (ends a stream with an error a Bedrock client understands). */
export function encodeExceptionMessage(type: string, message: string): Buffer {
  const headers = { ':exception-type': stringValue(type), ':content-type': stringValue('application/json'), ':message-type': stringValue('exception') };
  const encoded = codec.encode({ headers, body: Buffer.from(JSON.stringify({ message })) });
  return Buffer.from(encoded.buffer, encoded.byteOffset, encoded.byteLength);
}

/**
 * An Anthropic event as the Messages API streams it: `event: <type>\ndata: <eventJson>\n\n`, the JSON's
 * bytes verbatim. The type is the JSON's top-level `type`, and must be a short plain word. JSON has line
 * breaks only as whitespace between tokens; should an event hold any, each line gets its own `data:`
 * (an SSE reader joins them with `\n`, the same JSON).
 */
export function sseFromEvent(eventJson: Buffer): Buffer {
  const type = eventType(eventJson);
  const parts: Buffer[] = [Buffer.from(`event: ${type}\n`)];
  let start = 0;
  for (let i = 0; i < eventJson.length; i++) {
    const byte = eventJson[i];
    if (byte !== 0x0a && byte !== 0x0d) continue;
    parts.push(DATA, eventJson.subarray(start, i), NEWLINE);
    if (byte === 0x0d && eventJson[i + 1] === 0x0a) i++;
    start = i + 1;
  }
  parts.push(DATA, eventJson.subarray(start), END);
  return Buffer.concat(parts);
}

const DATA = Buffer.from('data: ');
const NEWLINE = Buffer.from('\n');
const END = Buffer.from('\n\n');

/** The event's top-level `type`: read from its head when it comes first (Anthropic's order), else parsed. */
function eventType(eventJson: Buffer): string {
  const leading = LEADING_TYPE.exec(eventJson.toString('latin1', 0, 128));
  if (leading) return leading[1]!;
  let type: unknown;
  try {
    type = (JSON.parse(eventJson.toString('utf8')) as { type?: unknown } | null)?.type;
  } catch {
    throw new Error('Bedrock event stream: an event that is not JSON');
  }
  if (typeof type !== 'string' || !EVENT_TYPE.test(type)) throw new Error('Bedrock event stream: an event without a plain top-level type');
  return type;
}
