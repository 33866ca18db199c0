// Token usage as each API reports it, extracted from JSON responses and SSE streams while they pass.
import type { Endpoint } from '../wire/endpoints.ts';
import { SseSplitter, type SseEvent } from '../wire/sse.ts';

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

// A JSON body up to this size is parsed whole at its end; past it, only its tail is kept, where
// every API puts `usage` (after the content), so memory per call stays bounded.
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
    const text = Buffer.concat(this.chunks).toString('utf8');
    let usage: Usage | undefined;
    try {
      if (this.size <= WHOLE_JSON_BYTES) {
        const body = obj(JSON.parse(text));
        if ('usage' in body) usage = this.extract(body);
      } else {
        const raw = usageObjectIn(text);
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

/** How one API's stream reports usage. */
interface StreamSpec {
  /** Folds an event into the usage so far; `final` marks the provider's closing counts. */
  usage(event: SseEvent, usage: Usage | undefined): { usage: Usage; final: boolean } | undefined;
  /** Whether this event delivers generated content (cheap: no parsing). */
  isDelta(event: SseEvent): boolean;
  /** Characters of generated content this event delivered (parses it). */
  deltaChars(event: SseEvent): number;
  /** Whether this event reports one server web search done (counted in case the final counts never come). */
  isWebSearch(event: SseEvent): boolean;
}

/**
 * Follows a stream's usage events. Content deltas are not parsed (that would cost more than
 * relaying them): their text is measured where it stands in the event, and only counts if the
 * stream ends without the provider's final figures.
 */
class StreamMeter implements UsageMeter {
  private readonly splitter = new SseSplitter();
  private readonly spec: StreamSpec;
  private usage: Usage | undefined;
  private final = false;
  private deltaChars = 0;
  private searches = 0;
  constructor(spec: StreamSpec) {
    this.spec = spec;
  }
  push(chunk: Buffer): void {
    for (const event of this.splitter.push(chunk)) {
      const step = this.spec.usage(event, this.usage);
      if (step) {
        this.usage = step.usage;
        this.final ||= step.final;
      } else if (this.spec.isDelta(event)) {
        this.deltaChars += this.spec.deltaChars(event);
      } else if (this.spec.isWebSearch(event)) {
        this.searches++;
      }
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
 * Lengths of the JSON string values of `keys` in `data`, found by position, not by parsing (escapes
 * count as written: close enough for an estimate).
 */
function stringValueLengths(data: string, keys: readonly string[]): number {
  let total = 0;
  for (const key of keys) {
    let at = data.indexOf(key);
    while (at !== -1) {
      let end = at + key.length;
      while (end < data.length && data.charCodeAt(end) !== 34 /* " */) end += data.charCodeAt(end) === 92 /* \ */ ? 2 : 1;
      total += end - (at + key.length);
      at = data.indexOf(key, end);
    }
  }
  return total;
}

function parse(data: string): Json {
  try {
    return obj(JSON.parse(data));
  } catch {
    return {};
  }
}

const ANTHROPIC_DELTA_KEYS = ['"text":"', '"thinking":"', '"partial_json":"'];
const CHAT_DELTA_KEYS = ['"content":"', '"reasoning_content":"', '"arguments":"'];
const RESPONSES_DELTA_KEYS = ['"delta":"'];

const anthropicStream: StreamSpec = {
  // Anthropic names every event: message_start opens the counts, message_delta's are cumulative.
  usage(event, usage) {
    if (event.event === 'message_start') return { usage: anthropicUsage(obj(parse(event.data).message).usage), final: false };
    if (event.event === 'message_delta') {
      return { usage: anthropicUsage(parse(event.data).usage, { ...(usage ?? ZERO_USAGE) }), final: true };
    }
    return undefined;
  },
  isDelta: (event) => event.event === 'content_block_delta',
  deltaChars: (event) => stringValueLengths(event.data, ANTHROPIC_DELTA_KEYS),
  // The web_search_tool_result block: the search ran (its query's server_tool_use block may not have).
  isWebSearch: (event) => event.event === 'content_block_start' && event.data.includes('"web_search_tool_result"'),
};

const chatStream: StreamSpec = {
  // Chat chunks are data-only; the last one (with include_usage) has a non-null usage.
  usage(event) {
    if (!event.data.includes('"usage":{') && !event.data.includes('"usage": {')) return undefined;
    const chunk = parse(event.data);
    return chunk.usage ? { usage: chatUsage(chunk.usage), final: true } : undefined;
  },
  isDelta: (event) => event.data.startsWith('{'),
  deltaChars: (event) => stringValueLengths(event.data, CHAT_DELTA_KEYS),
  isWebSearch: () => false,
};

const RESPONSES_FINAL = new Set(['response.completed', 'response.incomplete', 'response.failed']);

const responsesStream: StreamSpec = {
  usage(event) {
    if (!RESPONSES_FINAL.has(event.event)) return undefined;
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
  isDelta: (event) => event.event.endsWith('.delta'),
  deltaChars: (event) => stringValueLengths(event.data, RESPONSES_DELTA_KEYS),
  isWebSearch: (event) => event.event === 'response.web_search_call.completed',
};
