// An incremental Server-Sent Events splitter: feed it response chunks as they pass, get back each
// complete event. It only observes; the bytes themselves go to the client untouched.
import { StringDecoder } from 'node:string_decoder';

export interface SseEvent {
  /** The `event:` field, or '' when absent (OpenAI chat completions send data-only events). */
  event: string;
  /** The `data:` lines joined by '\n'. */
  data: string;
  /** The event's exact text including its blank-line terminator (only when asked for). */
  raw: string;
}

const BOUNDARY = /\r?\n\r?\n/g;

export class SseSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private carry = '';
  private readonly keepRaw: boolean;

  /** `keepRaw`: also hand back each event's exact text (for rewriting a stream). */
  constructor({ keepRaw = false } = {}) {
    this.keepRaw = keepRaw;
  }

  /** Returns the events completed by this chunk. */
  push(chunk: Buffer): SseEvent[] {
    const text = this.carry + this.decoder.write(chunk);
    const events: SseEvent[] = [];
    let start = 0;
    BOUNDARY.lastIndex = 0;
    for (let match = BOUNDARY.exec(text); match; match = BOUNDARY.exec(text)) {
      const end = match.index + match[0].length;
      events.push(parseEvent(text.slice(start, match.index), this.keepRaw ? text.slice(start, end) : ''));
      start = end;
    }
    this.carry = text.slice(start);
    return events;
  }

  /** Text received after the last complete event. */
  get pending(): string {
    return this.carry;
  }
}

function parseEvent(block: string, raw: string): SseEvent {
  let event = '';
  let data: string | undefined;
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith('data:')) {
      const value = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
      data = data === undefined ? value : `${data}\n${value}`;
    } else if (line.startsWith('event:')) {
      event = line.slice(line.charCodeAt(6) === 32 ? 7 : 6);
    }
  }
  return { event, data: data ?? '', raw };
}
