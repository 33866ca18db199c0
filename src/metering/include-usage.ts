// OpenAI chat-completion streams report usage only when the client asks for it
// (`stream_options.include_usage`). The gateway asks on the client's behalf, then removes the usage
// chunk the client did not ask for, so its stream looks exactly as it expects.
import type { RequestFields } from '../body.ts';
import { SseSplitter } from './sse.ts';

const ASK = Buffer.from(',"stream_options":{"include_usage":true}');

/**
 * The body with `stream_options.include_usage` added, or undefined when no change is needed or
 * possible. The client's bytes are kept: the field is spliced in before the closing brace.
 */
export function askForStreamUsage(body: Buffer, fields: Pick<RequestFields, 'stream' | 'streamOptions'>): Buffer | undefined {
  if (!fields.stream || fields.streamOptions !== undefined) return undefined;
  let end = body.length - 1;
  while (end > 0 && body[end] !== 0x7d /* } */) end--;
  if (end <= 0) return undefined;
  return Buffer.concat([body.subarray(0, end), ASK, body.subarray(end)]);
}

/** Removes the usage-only chunk (`"choices":[]` with a usage) from a chat-completion stream. */
export class UsageChunkRemover {
  private readonly splitter = new SseSplitter({ keepRaw: true });

  /** The part of `chunk` to forward now; an incomplete trailing event waits for its end. */
  push(chunk: Buffer): Buffer {
    let out = '';
    for (const event of this.splitter.push(chunk)) {
      if (!isUsageOnly(event.data)) out += event.raw;
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
