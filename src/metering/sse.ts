// An incremental Server-Sent Events splitter: feed it response chunks as they pass, get back each
// complete event. It only observes; the bytes themselves go to the client untouched. Linear in the
// bytes it sees, however long one event is (an event echoing megabytes of instructions arrives in
// hundreds of chunks).
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
  /** Text of the unfinished event, in the pieces it came in (joined once, when it ends). */
  private pieces: string[] = [];
  /** The last few characters received: a boundary may begin in them and end in the next chunk. */
  private tail = '';
  private readonly keepRaw: boolean;

  /** `keepRaw`: also hand back each event's exact text (for rewriting a stream). */
  constructor({ keepRaw = false } = {}) {
    this.keepRaw = keepRaw;
  }

  /** Returns the events completed by this chunk. Linear: only new text is searched. */
  push(chunk: Buffer): SseEvent[] {
    const text = this.decoder.write(chunk);
    if (text === '') return [];
    BOUNDARY.lastIndex = 0;
    const first = BOUNDARY.exec(this.tail + text);
    if (!first) {
      this.pieces.push(text);
      this.tail = (this.tail + text).slice(-3);
      return [];
    }
    // The first boundary may begin in the tail: search the whole unfinished event from there on.
    this.pieces.push(text);
    const whole = this.pieces.join('');
    const events: SseEvent[] = [];
    let start = 0;
    BOUNDARY.lastIndex = whole.length - text.length - this.tail.length + first.index;
    for (let match = BOUNDARY.exec(whole); match; match = BOUNDARY.exec(whole)) {
      const end = match.index + match[0].length;
      events.push(parseEvent(whole.slice(start, match.index), this.keepRaw ? whole.slice(start, end) : ''));
      start = end;
    }
    const rest = whole.slice(start);
    this.pieces = rest === '' ? [] : [rest];
    this.tail = rest.slice(-3);
    return events;
  }

  /** Text received after the last complete event. */
  get pending(): string {
    return this.pieces.join('');
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
