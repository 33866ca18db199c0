// A streamed Claude answer carried across formats: Bedrock answers in AWS event streams (each
// message one Anthropic event, base64 in a JSON payload), the Messages API and Vertex in SSE. The
// event bytes themselves are never re-serialised, so thinking signatures arrive byte-identical. Every
// stream is also read as Anthropic SSE for the meter.
import { type ClaudeFormat, EVENT_STREAM_TYPE } from '../wire/claude-formats.ts';
import { errorBody } from '../wire/errors.ts';
import { BedrockStreamDecoder, encodeChunkMessage, encodeExceptionMessage, sseFromEvent } from '../wire/eventstream.ts';
import type { HeaderMap } from '../wire/headers.ts';
import { SseSplitter } from '../wire/sse.ts';

export interface StreamTranslation {
  /** Edits the response headers for the client (its content type; no length). */
  headers(forClient: HeaderMap): void;
  /** One upstream chunk: the bytes for the client, and the same events as Anthropic SSE for the meter. */
  push(chunk: Buffer): { client: Buffer; sse: Buffer };
  /** What ends the client's stream when the upstream fails mid-way. */
  errorEvent(message: string): Buffer;
}

/** Whether a response's content type is a stream (SSE, or Bedrock's event stream). */
export function isStreamType(contentType: string): boolean {
  return contentType.startsWith('text/event-stream') || contentType.startsWith(EVENT_STREAM_TYPE);
}

/**
 * The translation a streamed answer of `contentType` needs on its way to a `client` of that format;
 * undefined when the bytes go through as they are and the meter reads them as they are.
 */
export function streamTranslation(contentType: string, client: ClaudeFormat): StreamTranslation | undefined {
  if (contentType.startsWith(EVENT_STREAM_TYPE)) return client === 'bedrock' ? new EventStreamMetered() : new EventStreamToSse();
  if (contentType.startsWith('text/event-stream') && client === 'bedrock') return new SseToEventStream();
  return undefined;
}

/** The SSE error event Anthropic's SDKs read, for a stream that cannot go on. */
function sseError(message: string): Buffer {
  return Buffer.from(`event: error\ndata: ${errorBody('anthropic', 'upstream_failed', message)}\n\n`);
}

/** Bedrock to a Bedrock client: bytes unchanged; a decoded copy for the meter. */
class EventStreamMetered implements StreamTranslation {
  private readonly decoder = new BedrockStreamDecoder();
  private broken = false;

  headers(): void {}

  push(chunk: Buffer): { client: Buffer; sse: Buffer } {
    if (this.broken) return { client: chunk, sse: Buffer.alloc(0) };
    try {
      const events = this.decoder.push(chunk).flatMap((item) => ('event' in item ? [sseFromEvent(item.event)] : []));
      return { client: chunk, sse: Buffer.concat(events) };
    } catch {
      // The client decodes it too and will see the same fault; the meter stops here.
      this.broken = true;
      return { client: chunk, sse: Buffer.alloc(0) };
    }
  }

  errorEvent(message: string): Buffer {
    return encodeExceptionMessage('internalServerException', message);
  }
}

/** Bedrock to a Messages or Vertex client: each event as an SSE event, its JSON bytes verbatim. */
class EventStreamToSse implements StreamTranslation {
  private readonly decoder = new BedrockStreamDecoder();
  private broken = false;

  headers(forClient: HeaderMap): void {
    forClient['content-type'] = 'text/event-stream; charset=utf-8';
    delete forClient['content-length'];
  }

  push(chunk: Buffer): { client: Buffer; sse: Buffer } {
    if (this.broken) return { client: Buffer.alloc(0), sse: Buffer.alloc(0) };
    let out: Buffer;
    try {
      out = Buffer.concat(
        this.decoder
          .push(chunk)
          .map((item) => ('event' in item ? sseFromEvent(item.event) : sseError(`bedrock: ${item.exception.type}: ${item.exception.message}`))),
      );
    } catch {
      this.broken = true;
      out = sseError('bedrock upstream sent a malformed event stream');
    }
    return { client: out, sse: out };
  }

  errorEvent(message: string): Buffer {
    return sseError(message);
  }
}

// An Anthropic event is well under this; a longer one (a corrupt stream) ends the stream.
const MAX_EVENT_CHARS = 16 * 1024 * 1024;

/** The Messages API or Vertex to a Bedrock client: each SSE event's data as one `chunk` message. */
class SseToEventStream implements StreamTranslation {
  private readonly splitter = new SseSplitter({ maxEventChars: MAX_EVENT_CHARS });
  private broken = false;

  headers(forClient: HeaderMap): void {
    forClient['content-type'] = EVENT_STREAM_TYPE;
    delete forClient['content-length'];
  }

  push(chunk: Buffer): { client: Buffer; sse: Buffer } {
    if (this.broken) return { client: Buffer.alloc(0), sse: chunk };
    const out: Buffer[] = [];
    for (const event of this.splitter.push(chunk)) {
      if (event.truncated) {
        this.broken = true;
        out.push(this.errorEvent('upstream sent an event too large to relay'));
        break;
      }
      if (event.data === '') continue;
      if (event.event === 'error') out.push(encodeExceptionMessage('internalServerException', errorMessage(event.data)));
      else out.push(Buffer.from(encodeChunkMessage(Buffer.from(event.data, 'utf8'))));
    }
    return { client: Buffer.concat(out), sse: chunk };
  }

  errorEvent(message: string): Buffer {
    return encodeExceptionMessage('internalServerException', message);
  }
}

/** The message of an Anthropic error event's data, or the data itself. */
function errorMessage(data: string): string {
  try {
    const parsed = JSON.parse(data) as { error?: { message?: unknown } };
    if (typeof parsed.error?.message === 'string') return parsed.error.message;
  } catch {
    // not JSON: pass it on as it is
  }
  return data.slice(0, 1000);
}
