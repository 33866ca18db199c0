// Token usage as each API reports it, extracted from JSON responses and SSE streams while they pass.
import type { Endpoint } from '../wire/endpoints.ts';
import { PlainEvents, SseSplitter, type SseEvent } from '../wire/sse.ts';

/** Tokens of one call, in separately priced line items. */
export interface Usage {
  /** Input tokens billed at the plain input price (cache reads and writes excluded). */
  inputTokens: number;
  /** Output tokens, reasoning included. */
  outputTokens: number;
  /** Prompt-cache writes with a 5-minute lifetime (Anthropic). */
  cacheWriteTokens: number;
  /** Prompt-cache writes with a 1-hour lifetime (Anthropic; billed higher). */
  cacheWrite1hTokens: number;
  /** Prompt-cache reads (Anthropic cache hits, OpenAI cached input). */
  cacheReadTokens: number;
  /** Of outputTokens, how many were reasoning (informational; already counted). */
  reasoningTokens: number;
  /** Server-side web searches, billed per use (Anthropic `server_tool_use`, OpenAI `web_search_call` items). */
  webSearchRequests: number;
  /** Server-side web fetches (Anthropic `server_tool_use.web_fetch_requests`). */
  webFetchRequests: number;
}

export const ZERO_USAGE: Usage = Object.freeze({
  inputTokens: 0,
  outputTokens: 0,
  cacheWriteTokens: 0,
  cacheWrite1hTokens: 0,
  cacheReadTokens: 0,
  reasoningTokens: 0,
  webSearchRequests: 0,
  webFetchRequests: 0,
});

type Json = Record<string, unknown>;

const num = (value: unknown): number => (typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : 0);
const obj = (value: unknown): Json => (value !== null && typeof value === 'object' ? (value as Json) : {});

/** Anthropic `usage`, from a message, `message_start` or `message_delta` (later fields win). */
function anthropicUsage(raw: unknown, into: Usage = { ...ZERO_USAGE }): Usage {
  const usage = obj(raw);
  if ('input_tokens' in usage) into.inputTokens = num(usage.input_tokens);
  if ('output_tokens' in usage) into.outputTokens = num(usage.output_tokens);
  if ('cache_read_input_tokens' in usage) into.cacheReadTokens = num(usage.cache_read_input_tokens);
  if ('cache_creation_input_tokens' in usage) {
    // The 5m/1h split, when present, divides the same total. message_delta repeats the total
    // without the split: the split already known from message_start stands.
    const total = num(usage.cache_creation_input_tokens);
    const known = 'cache_creation' in usage ? num(obj(usage.cache_creation).ephemeral_1h_input_tokens) : into.cacheWrite1hTokens;
    const oneHour = Math.min(known, total);
    into.cacheWrite1hTokens = oneHour;
    into.cacheWriteTokens = total - oneHour;
  }
  if ('server_tool_use' in usage) {
    // Cumulative, like the token counts: message_delta repeats the totals so far.
    const tools = obj(usage.server_tool_use);
    into.webSearchRequests = Math.max(into.webSearchRequests, num(tools.web_search_requests));
    into.webFetchRequests = Math.max(into.webFetchRequests, num(tools.web_fetch_requests));
  }
  return into;
}

/** OpenAI chat-completions `usage`: prompt_tokens include the cached ones. */
function chatUsage(raw: unknown): Usage {
  const usage = obj(raw);
  const cached = num(obj(usage.prompt_tokens_details).cached_tokens);
  return {
    ...ZERO_USAGE,
    inputTokens: Math.max(0, num(usage.prompt_tokens) - cached),
    cacheReadTokens: cached,
    outputTokens: num(usage.completion_tokens),
    reasoningTokens: num(obj(usage.completion_tokens_details).reasoning_tokens),
  };
}

/** OpenAI Responses `usage`: input_tokens include the cached ones. Web searches are output items, not usage. */
function responsesUsage(raw: unknown): Usage {
  const usage = obj(raw);
  const cached = num(obj(usage.input_tokens_details).cached_tokens);
  return {
    ...ZERO_USAGE,
    inputTokens: Math.max(0, num(usage.input_tokens) - cached),
    cacheReadTokens: cached,
    outputTokens: num(usage.output_tokens),
    reasoningTokens: num(obj(usage.output_tokens_details).reasoning_tokens),
  };
}

/** What a meter saw of one response. */
export interface MeteredUsage {
  usage: Usage;
  /**
   * True when the provider reported the final counts. False for a stream cut short: then output
   * tokens are estimated from the text actually delivered (about 4 characters a token).
   */
  reported: boolean;
}

/** Watches one response go by; `result()` is undefined when it carried no usage at all. */
export interface UsageMeter {
  push(chunk: Buffer): void;
  result(): MeteredUsage | undefined;
}

// A JSON body's usage is read from its tail when it is a root member (rootUsageFromTail); otherwise
// a body up to this size is parsed whole at its end. Past it, only its tail is kept, where every API
// puts `usage` (after the content), so memory per call stays bounded.
const WHOLE_JSON_BYTES = 1024 * 1024;
const TAIL_BYTES = 64 * 1024;
const CHARS_PER_TOKEN = 4;

export function createUsageMeter(endpoint: Endpoint, streaming: boolean): UsageMeter | undefined {
  switch (endpoint) {
    case 'messages':
      return streaming ? new StreamMeter(anthropicStream) : new JsonMeter((body) => anthropicUsage(body.usage));
    case 'chat_completions':
      return streaming ? new StreamMeter(chatStream) : new JsonMeter((body) => chatUsage(body.usage));
    case 'responses':
      return streaming ? new StreamMeter(responsesStream) : new JsonMeter((body) => responsesUsage(body.usage), WEB_SEARCH_CALL);
    default:
      return undefined; // count_tokens and models cost nothing
  }
}

// A Responses web search is an output item `"type": "web_search_call"`. The quoted token can only
// stand unescaped in the JSON as a string whose whole value it is (inside other strings its quotes
// are escaped), so counting it as the bytes pass counts the searches, however large the body.
const WEB_SEARCH_CALL = Buffer.from('"web_search_call"');

class JsonMeter implements UsageMeter {
  private chunks: Buffer[] = [];
  private size = 0;
  private readonly extract: (body: Json) => Usage;
  private readonly searchToken: Buffer | undefined;
  private searches = 0;
  /** The end of the previous chunk, so a token split across two chunks is still seen. */
  private carry = Buffer.alloc(0);
  constructor(extract: (body: Json) => Usage, searchToken?: Buffer) {
    this.extract = extract;
    this.searchToken = searchToken;
  }
  push(chunk: Buffer): void {
    if (this.searchToken) this.countSearches(chunk, this.searchToken);
    this.size += chunk.length;
    this.chunks.push(chunk);
    if (this.size > WHOLE_JSON_BYTES) {
      const joined = Buffer.concat(this.chunks);
      this.chunks = [joined.subarray(Math.max(0, joined.length - TAIL_BYTES))];
    }
  }
  private countSearches(chunk: Buffer, token: Buffer): void {
    const window = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    for (let at = window.indexOf(token); at !== -1; at = window.indexOf(token, at + token.length)) this.searches++;
    // Keep fewer bytes than a whole token, so no occurrence is counted twice.
    this.carry = Buffer.from(window.subarray(Math.max(0, window.length - (token.length - 1))));
  }
  result(): MeteredUsage | undefined {
    if (this.chunks.length === 0) return undefined;
    const bytes = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    let usage: Usage | undefined;
    try {
      const trailing = rootUsageFromTail(bytes);
      if (trailing) {
        usage = this.extract(trailing);
      } else if (this.size <= WHOLE_JSON_BYTES) {
        const body = obj(JSON.parse(bytes.toString('utf8')));
        if ('usage' in body) usage = this.extract(body);
      } else {
        const raw = usageObjectIn(bytes.toString('utf8'));
        if (raw !== undefined) usage = this.extract({ usage: raw });
      }
    } catch {
      return undefined;
    }
    if (!usage) return undefined;
    usage.webSearchRequests = Math.max(usage.webSearchRequests, this.searches);
    return { usage, reported: true };
  }
}

const USAGE_KEY = Buffer.from('"usage":');

/**
 * `{ usage }` read from the body's tail alone, when its last `"usage":` key is a member of the root
 * object, as the APIs send it (after the content): the tail from that key, with a `{` before it, is
 * then itself one JSON object. A key any deeper leaves a closing bracket too many in the tail, so the
 * tail does not parse: undefined, and the caller parses the whole body. Inside a string a key's
 * quotes are escaped, so the search cannot land there. The cost no longer grows with the body: a
 * 372-byte message went from 2.4 to 1.4 µs, a 22 KB one from 14.4 to 1.1 µs (micro-benchmark).
 */
function rootUsageFromTail(bytes: Buffer): { usage: unknown } | undefined {
  const key = bytes.lastIndexOf(USAGE_KEY);
  if (key === -1) return undefined;
  try {
    const tail = obj(JSON.parse(`{${bytes.toString('utf8', key)}`));
    return 'usage' in tail ? { usage: tail.usage } : undefined;
  } catch {
    return undefined;
  }
}

/** The last `"usage": {...}` object in a piece of JSON text, parsed, or undefined. */
function usageObjectIn(text: string): unknown {
  const key = text.lastIndexOf('"usage"');
  if (key === -1) return undefined;
  const start = text.indexOf('{', key);
  if (start === -1 || text.slice(key + 7, start).trim() !== ':') return undefined;
  let depth = 0;
  for (let i = start; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === 34 /* " */) {
      for (i++; i < text.length && text.charCodeAt(i) !== 34; i++) if (text.charCodeAt(i) === 92 /* \ */) i++;
    } else if (code === 123 /* { */) {
      depth++;
    } else if (code === 125 /* } */ && --depth === 0) {
      return JSON.parse(text.slice(start, i + 1));
    }
  }
  return undefined;
}

/**
 * How one API's stream reports usage. Events come as their name and their data's bytes
 * (`data[start, end)`); only the events that carry usage are decoded and parsed.
 */
interface StreamSpec {
  /** Whether `usage` reads this event (cheap: its name, or a marker in its bytes). */
  carriesUsage(event: string, data: Buffer, start: number, end: number): boolean;
  /** Folds an event into the usage so far; `final` marks the provider's closing counts. */
  usage(event: SseEvent, usage: Usage | undefined): { usage: Usage; final: boolean } | undefined;
  /** Whether this event delivers generated content (cheap: no parsing). */
  isDelta(event: string, data: Buffer, start: number, end: number): boolean;
  /** The JSON keys whose string values are generated content, as `"key":"`. */
  deltaKeys: readonly Buffer[];
  /** Whether this event reports one server web search done (counted in case the final counts never come). */
  isWebSearch(event: string, data: Buffer, start: number, end: number): boolean;
}

/**
 * Follows a stream's usage events. Content deltas are not parsed (that would cost more than
 * relaying them): their text is measured where it stands in the event, and only counts if the
 * stream ends without the provider's final figures. A chunk of whole events in the plain form is
 * read by position (wire/sse.ts `PlainEvents`); any other goes through the splitter.
 */
class StreamMeter implements UsageMeter {
  private readonly splitter = new SseSplitter();
  private readonly plain = new PlainEvents();
  private readonly spec: StreamSpec;
  private usage: Usage | undefined;
  private final = false;
  private deltaChars = 0;
  private searches = 0;
  /** The last chunk ended an event (a blank line) and the splitter holds nothing: the next may be read by position. */
  private atBoundary = true;
  constructor(spec: StreamSpec) {
    this.spec = spec;
  }
  push(chunk: Buffer): void {
    const spans = this.atBoundary ? this.plain.read(chunk) : undefined;
    if (spans) {
      for (const span of spans) this.take(span.event, chunk, span.start, span.end, false);
    } else {
      for (const event of this.splitter.push(chunk)) {
        const data = Buffer.from(event.data);
        this.take(event.event, data, 0, data.length, event.truncated === true);
      }
    }
    this.atBoundary = chunk.length >= 2 && chunk[chunk.length - 1] === 0x0a && chunk[chunk.length - 2] === 0x0a && this.splitter.pendingChars === 0;
  }
  private take(event: string, data: Buffer, start: number, end: number, truncated: boolean): void {
    const { spec } = this;
    const step = spec.carriesUsage(event, data, start, end)
      ? spec.usage({ event, data: data.toString('utf8', start, end), raw: '', ...(truncated ? { truncated } : {}) }, this.usage)
      : undefined;
    if (step) {
      this.usage = step.usage;
      this.final ||= step.final;
    } else if (spec.isDelta(event, data, start, end)) {
      const last = lastValueChars(data, start, end, spec.deltaKeys);
      this.deltaChars += last >= 0 ? last : stringValueChars(data, start, end, spec.deltaKeys);
    } else if (spec.isWebSearch(event, data, start, end)) {
      this.searches++;
    }
  }
  result(): MeteredUsage | undefined {
    if (this.final) {
      const usage = { ...this.usage! };
      usage.webSearchRequests = Math.max(usage.webSearchRequests, this.searches);
      return { usage, reported: true };
    }
    if (!this.usage && this.deltaChars === 0 && this.searches === 0) return undefined;
    const usage = { ...(this.usage ?? ZERO_USAGE) };
    usage.outputTokens = Math.max(usage.outputTokens, Math.ceil(this.deltaChars / CHARS_PER_TOKEN));
    usage.webSearchRequests = Math.max(usage.webSearchRequests, this.searches);
    return { usage, reported: false };
  }
}

/**
 * Characters in the JSON string values of `keys` in `data[start, end)`, found by position, not by
 * parsing (counted as `textChars` counts them).
 */
function stringValueChars(data: Buffer, start: number, end: number, keys: readonly Buffer[]): number {
  let total = 0;
  for (let i = start; i < end; i++) {
    if (data[i] !== 0x22 /* " */) continue;
    const key = keyAt(data, i, end, keys);
    if (key === 0) continue;
    const close = stringEnd(data, i + key, end);
    total += textChars(data, i + key, Math.min(close, end));
    i = close;
  }
  return total;
}

/** Where the string whose text starts at `from` ends: its closing quote, or `end` (or one past it) when cut. */
function stringEnd(data: Buffer, from: number, end: number): number {
  let j = from;
  for (; j < end; j++) {
    const byte = data[j]!;
    if (byte === 0x22) break;
    if (byte === 0x5c /* \ */) j++;
  }
  return j;
}

/**
 * The characters of a string's text `data[from, to)`: UTF-8 continuation bytes do not count, an
 * escape counts as written (`\n` as two: close enough for an estimate).
 */
function textChars(data: Buffer, from: number, to: number): number {
  let total = 0;
  for (let j = from; j < to; j++) {
    const byte = data[j]!;
    if (byte === 0x5c) {
      total += 2;
      j++;
    } else if ((byte & 0xc0) !== 0x80) {
      total++;
    }
  }
  return total;
}

/**
 * The characters of the string that closes the object in `data[start, end)`, when its key is one of
 * `keys`; -1 otherwise. A delta puts its text last (`..."text":"tok "}}`): read backwards from the
 * end, only the text itself is walked, not the whole event.
 */
function lastValueChars(data: Buffer, start: number, end: number, keys: readonly Buffer[]): number {
  let close = end;
  while (close > start && data[close - 1] === 0x7d /* } */) close--;
  if (close === end || data[close - 1] !== 0x22) return -1;
  close--;
  // The opening quote: the first one going back that no odd run of backslashes escapes.
  let open = close - 1;
  for (; open > start; open--) {
    if (data[open] !== 0x22) continue;
    let slashes = 0;
    while (data[open - 1 - slashes] === 0x5c) slashes++;
    if (slashes % 2 === 0) break;
  }
  if (!keyEndsAt(data, open, start, keys)) return -1;
  return textChars(data, open + 1, close);
}

/** Whether one of `keys` (each `"name":"`) ends at `open`, the value's opening quote. */
function keyEndsAt(data: Buffer, open: number, start: number, keys: readonly Buffer[]): boolean {
  for (let k = 0; k < keys.length; k++) {
    const length = keys[k]!.length;
    if (open + 1 - length >= start && keyAt(data, open + 1 - length, open + 1, keys) === length) return true;
  }
  return false;
}

/** The length of the key of `keys` that starts at `at` (a quote), or 0. Indexed loops: this runs for every quote of every delta. */
function keyAt(data: Buffer, at: number, end: number, keys: readonly Buffer[]): number {
  for (let k = 0; k < keys.length; k++) {
    const key = keys[k]!;
    const length = key.length;
    if (at + length > end) continue;
    let i = 1;
    while (i < length && data[at + i] === key[i]) i++;
    if (i === length) return length;
  }
  return 0;
}

/** Whether `data[start, end)` contains `marker`. */
function contains(data: Buffer, marker: Buffer, start: number, end: number): boolean {
  const at = data.indexOf(marker, start);
  return at !== -1 && at + marker.length <= end;
}

function parse(data: string): Json {
  try {
    return obj(JSON.parse(data));
  } catch {
    return {};
  }
}

const keys = (...names: string[]) => names.map((name) => Buffer.from(`"${name}":"`));
const WEB_SEARCH_RESULT = Buffer.from('"web_search_tool_result"');
const USAGE_OBJECT = Buffer.from('"usage":{');
const USAGE_OBJECT_SPACED = Buffer.from('"usage": {');

const anthropicStream: StreamSpec = {
  // Anthropic names every event: message_start opens the counts, message_delta's are cumulative.
  carriesUsage: (event) => event === 'message_start' || event === 'message_delta',
  usage(event, usage) {
    if (event.event === 'message_start') return { usage: anthropicUsage(obj(parse(event.data).message).usage), final: false };
    if (event.event === 'message_delta') {
      return { usage: anthropicUsage(parse(event.data).usage, { ...(usage ?? ZERO_USAGE) }), final: true };
    }
    return undefined;
  },
  isDelta: (event) => event === 'content_block_delta',
  deltaKeys: keys('text', 'thinking', 'partial_json'),
  // The web_search_tool_result block: the search ran (its query's server_tool_use block may not have).
  isWebSearch: (event, data, start, end) => event === 'content_block_start' && contains(data, WEB_SEARCH_RESULT, start, end),
};

const chatStream: StreamSpec = {
  // Chat chunks are data-only; the last one (with include_usage) has a non-null usage.
  carriesUsage: (_event, data, start, end) => contains(data, USAGE_OBJECT, start, end) || contains(data, USAGE_OBJECT_SPACED, start, end),
  usage(event) {
    const chunk = parse(event.data);
    return chunk.usage ? { usage: chatUsage(chunk.usage), final: true } : undefined;
  },
  isDelta: (_event, data, start, end) => end > start && data[start] === 0x7b /* { */,
  deltaKeys: keys('content', 'reasoning_content', 'arguments'),
  isWebSearch: () => false,
};

const RESPONSES_FINAL = new Set(['response.completed', 'response.incomplete', 'response.failed']);

const responsesStream: StreamSpec = {
  carriesUsage: (event) => RESPONSES_FINAL.has(event),
  usage(event) {
    if (event.truncated) {
      // Too long to keep whole (the response echoes its instructions and output): usage stands at
      // the end of the response object, in the tail that was kept. Searches were counted as they ran.
      const tailUsage = usageObjectIn(event.data);
      return tailUsage === undefined ? undefined : { usage: responsesUsage(tailUsage), final: true };
    }
    const response = obj(parse(event.data).response);
    if (!response.usage) return undefined;
    const usage = responsesUsage(response.usage);
    if (Array.isArray(response.output)) usage.webSearchRequests = response.output.filter((item) => obj(item).type === 'web_search_call').length;
    return { usage, final: true };
  },
  isDelta: (event) => event.endsWith('.delta'),
  deltaKeys: keys('delta'),
  isWebSearch: (event) => event === 'response.web_search_call.completed',
};
