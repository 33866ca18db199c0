// OpenAI chat-completion streams report usage only when the client asks for it
// (`stream_options.include_usage`). The gateway asks on the client's behalf (merged into any
// `stream_options` the client sent), then removes the usage chunk the client did not ask for, so its
// stream looks exactly as it expects.
import type { RequestFields } from '../wire/request-fields.ts';
import { setTopLevelField } from '../wire/json-splice.ts';
import { SseSplitter } from '../wire/sse.ts';

const MAX_USAGE_CHUNK_CHARS = 64 * 1024;

/**
 * The body with `stream_options.include_usage: true`, or undefined when no change is needed (not a
 * stream, or the client asked for usage itself) or possible. Whatever else the client put in
 * `stream_options` is kept; every other byte of the body stays as sent.
 */
export function askForStreamUsage(body: Buffer, fields: Pick<RequestFields, 'stream' | 'streamOptions'>): Buffer | undefined {
  if (!fields.stream) return undefined;
  const sent = fields.streamOptions;
  const options = sent !== null && typeof sent === 'object' && !Array.isArray(sent) ? (sent as Record<string, unknown>) : {};
  if (options.include_usage === true) return undefined;
  return setTopLevelField(body, 'stream_options', JSON.stringify({ ...options, include_usage: true }));
}

/** Removes the usage-only chunk (`"choices":[]` with a usage) from a chat-completion stream. */
export class UsageChunkRemover {
  private splitter = new SseSplitter({ keepRaw: true });

  /** The part of `chunk` to forward now; an incomplete trailing event waits for its end. */
  push(chunk: Buffer): Buffer {
    let out = '';
    for (const event of this.splitter.push(chunk)) {
      if (!isUsageOnly(event.data)) out += event.raw;
    }
    // A usage-only chunk is a few hundred bytes: an unfinished event this long is not one, so it goes
    // on to the client now instead of being held whole (memory, and the client's stream would stall).
    if (this.splitter.pendingChars > MAX_USAGE_CHUNK_CHARS) {
      out += this.splitter.pending;
      this.splitter = new SseSplitter({ keepRaw: true });
    }
    return Buffer.from(out);
  }

  /** Whatever was left unterminated when the stream ended. */
  flush(): Buffer {
    return Buffer.from(this.splitter.pending);
  }
}

function isUsageOnly(data: string): boolean {
  if (!data.includes('"usage"') || !data.includes('"choices"')) return false;
  try {
    const chunk = JSON.parse(data) as { choices?: unknown[]; usage?: unknown };
    return Array.isArray(chunk.choices) && chunk.choices.length === 0 && chunk.usage != null;
  } catch {
    return false;
  }
}
