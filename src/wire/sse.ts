// An incremental Server-Sent Events splitter: feed it response chunks as they pass, get back each
// complete event. It only observes; the bytes themselves go to the client untouched. Linear in the
// bytes it sees, however long one event is (an event echoing megabytes of instructions arrives in
// hundreds of chunks), and bounded in what it keeps: past `maxEventChars` an unfinished event keeps
// only its head (the event name, the type) and its tail (where every API puts usage). For metering,
// `PlainEvents` finds the events of a chunk by position without decoding it, when the chunk is in the
// plain form providers send (nearly every chunk): that is a tenth of the splitter's cost per event.
import { StringDecoder } from 'node:string_decoder';

export interface SseEvent {
  /** The `event:` field, or '' when absent (OpenAI chat completions send data-only events). */
  event: string;
  /** The `data:` lines joined by '\n'. */
  data: string;
  /** The event's exact text including its blank-line terminator (only when asked for). */
  raw: string;
  /** Its middle was dropped (the event was longer than `maxEventChars`): `data` is not whole. */
  truncated?: boolean;
}

const HEAD_CHARS = 64 * 1024;

const BOUNDARY = /\r?\n\r?\n/g;

export class SseSplitter {
  private readonly decoder = new StringDecoder('utf8');
  /** Text of the unfinished event, in the pieces it came in (joined once, when it ends). */
  private pieces: string[] = [];
  /** The last few characters received: a boundary may begin in them and end in the next chunk. */
  private tail = '';
  private size = 0;
  private truncated = false;
  private readonly keepRaw: boolean;
  private readonly maxEventChars: number;

  /**
   * `keepRaw`: also hand back each event's exact text (for rewriting a stream; never truncated).
   * `maxEventChars`: what an observer keeps of one unfinished event, at most (default 1 Mi chars).
   */
  constructor({ keepRaw = false, maxEventChars = 1024 * 1024 } = {}) {
    this.keepRaw = keepRaw;
    this.maxEventChars = keepRaw ? Infinity : Math.max(maxEventChars, 2 * HEAD_CHARS);
  }

  /** Returns the events completed by this chunk. Linear: only new text is searched. */
  push(chunk: Buffer): SseEvent[] {
    const text = this.decoder.write(chunk);
    if (text === '') return [];
    BOUNDARY.lastIndex = 0;
    const first = BOUNDARY.exec(this.tail + text);
    if (!first) {
      this.pieces.push(text);
      this.size += text.length;
      this.tail = (this.tail + text).slice(-3);
      if (this.size > this.maxEventChars) this.dropMiddle();
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
      const event = parseEvent(whole.slice(start, match.index), this.keepRaw ? whole.slice(start, end) : '');
      if (this.truncated) event.truncated = true;
      this.truncated = false;
      events.push(event);
      start = end;
    }
    const rest = whole.slice(start);
    this.pieces = rest === '' ? [] : [rest];
    this.size = rest.length;
    this.tail = rest.slice(-3);
    return events;
  }

  /** Keeps the unfinished event's head and its last (maxEventChars - head) characters. */
  private dropMiddle(): void {
    const whole = this.pieces.join('');
    this.pieces = [whole.slice(0, HEAD_CHARS), whole.slice(whole.length - (this.maxEventChars - HEAD_CHARS))];
    this.size = this.pieces[0]!.length + this.pieces[1]!.length;
    this.truncated = true;
  }

  /** Characters kept of the unfinished event. */
  get pendingChars(): number {
    return this.size;
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

/** A whole event found in a chunk by position: its name, and its data as the bytes [start, end). */
export interface SseSpan {
  event: string;
  start: number;
  end: number;
}

const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const EVENT_FIELD = Buffer.from('event:');
const DATA_FIELD = Buffer.from('data:');

/**
 * Reads the events of a chunk that holds whole events only, each in the plain form (an optional
 * `event:` line, then one `data:` line; LF line ends), by position and without decoding. Any other
 * chunk (CR line ends, comments, ids, several data lines, an event cut across chunks) is left to an
 * SseSplitter. Only single bytes are searched for (Buffer#indexOf with a number is native and cheap;
 * with a Buffer it costs ten times more), and an event name equal to the last one is compared in
 * place: its line is not searched and its name not decoded again.
 */
export class PlainEvents {
  private lastName = '';
  /** Reused from one chunk to the next (the caller is done with them by then): no garbage per event. */
  private readonly spans: SseSpan[] = [];

  /**
   * The chunk's events, or undefined when it is not all plain events. The chunk must start an event.
   * The spans are valid until the next call.
   */
  read(chunk: Buffer): SseSpan[] | undefined {
    const length = chunk.length;
    if (length < 2 || chunk[length - 1] !== LF || chunk[length - 2] !== LF) return undefined;
    const { spans } = this;
    let count = 0;
    for (let at = 0; at < length; ) {
      let line = at;
      let event = '';
      if (hasField(chunk, EVENT_FIELD, line)) {
        const nameStart = valueStart(chunk, line + EVENT_FIELD.length);
        let lineEnd = this.lastNameEnd(chunk, nameStart);
        if (lineEnd === -1) {
          lineEnd = chunk.indexOf(LF, line);
          // A CR before a line's LF is a CRLF stream: the splitter's.
          if (chunk[lineEnd - 1] === CR) return undefined;
          this.lastName = chunk.toString('latin1', nameStart, lineEnd);
        }
        event = this.lastName;
        line = lineEnd + 1;
      }
      if (!hasField(chunk, DATA_FIELD, line)) return undefined;
      const start = valueStart(chunk, line + DATA_FIELD.length);
      const end = chunk.indexOf(LF, start);
      // One data line, then the blank line that ends the event.
      if (chunk[end + 1] !== LF || chunk[end - 1] === CR) return undefined;
      const span = spans[count];
      if (span) {
        span.event = event;
        span.start = start;
        span.end = end;
      } else {
        spans.push({ event, start, end });
      }
      count++;
      at = end + 2;
    }
    // Setting an array's length calls into V8's runtime even when it does not change: about 12% of
    // the stream meter's time when it was done for every chunk.
    if (spans.length !== count) spans.length = count;
    return spans;
  }

  /**
   * Where the event line ends when its name, from `start`, is the last one read: the same bytes,
   * then the LF. -1 otherwise. Compared in place, so a repeated name costs no search for its line's end.
   */
  private lastNameEnd(chunk: Buffer, start: number): number {
    const last = this.lastName;
    const end = start + last.length;
    if (end >= chunk.length || chunk[end] !== LF) return -1;
    for (let i = 0; i < last.length; i++) if (chunk[start + i] !== last.charCodeAt(i)) return -1;
    return end;
  }
}

/** Whether the line at `at` is the field `name` (a few bytes: compared here, not in native code). */
function hasField(chunk: Buffer, name: Buffer, at: number): boolean {
  if (at + name.length > chunk.length) return false;
  for (let i = 0; i < name.length; i++) if (chunk[at + i] !== name[i]) return false;
  return true;
}

/** Where a field's value begins: after the colon, and one space if there is one. */
function valueStart(chunk: Buffer, afterColon: number): number {
  return chunk[afterColon] === SPACE ? afterColon + 1 : afterColon;
}
