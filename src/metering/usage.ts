// Token usage as each API reports it, extracted from JSON responses and SSE streams while they pass.
import type { Endpoint } from '../routes.ts';
import { SseSplitter, type SseEvent } from './sse.ts';

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
}

export const ZERO_USAGE: Usage = Object.freeze({
  inputTokens: 0,
  outputTokens: 0,
  cacheWriteTokens: 0,
  cacheWrite1hTokens: 0,
  cacheReadTokens: 0,
  reasoningTokens: 0,
});

type Json = Record<string, unknown>;

const num = (value: unknown): number => (typeof value === 'number' && Number.isFinite(value) && value > 0 ? value : 0);
const obj = (value: unknown): Json => (value !== null && typeof value === 'object' ? (value as Json) : {});

/** Anthropic `usage`, from a message, `message_start` or `message_delta` (later fields win). */
export function anthropicUsage(raw: unknown, into: Usage = { ...ZERO_USAGE }): Usage {
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
  return into;
}

/** OpenAI chat-completions `usage`: prompt_tokens include the cached ones. */
export function chatUsage(raw: unknown): Usage {
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

/** OpenAI Responses `usage`: input_tokens include the cached ones. */
export function responsesUsage(raw: unknown): Usage {
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
      return streaming ? new StreamMeter(responsesStream) : new JsonMeter((body) => responsesUsage(body.usage));
    default:
      return undefined; // count_tokens and models cost nothing
  }
}

class JsonMeter implements UsageMeter {
  private chunks: Buffer[] = [];
  private size = 0;
  private readonly extract: (body: Json) => Usage;
  constructor(extract: (body: Json) => Usage) {
    this.extract = extract;
  }
  push(chunk: Buffer): void {
    this.size += chunk.length;
    this.chunks.push(chunk);
    if (this.size > WHOLE_JSON_BYTES) {
      const joined = Buffer.concat(this.chunks);
      this.chunks = [joined.subarray(Math.max(0, joined.length - TAIL_BYTES))];
    }
  }
  result(): MeteredUsage | undefined {
    if (this.chunks.length === 0) return undefined;
    const text = Buffer.concat(this.chunks).toString('utf8');
    try {
      if (this.size <= WHOLE_JSON_BYTES) {
        const body = obj(JSON.parse(text));
        return 'usage' in body ? { usage: this.extract(body), reported: true } : undefined;
      }
      const usage = usageObjectIn(text);
      return usage === undefined ? undefined : { usage: this.extract({ usage }), reported: true };
    } catch {
      return undefined;
    }
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
      }
    }
  }
  result(): MeteredUsage | undefined {
    if (this.final) return { usage: this.usage!, reported: true };
    if (!this.usage && this.deltaChars === 0) return undefined;
    const usage = { ...(this.usage ?? ZERO_USAGE) };
    usage.outputTokens = Math.max(usage.outputTokens, Math.ceil(this.deltaChars / CHARS_PER_TOKEN));
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
};

const RESPONSES_FINAL = new Set(['response.completed', 'response.incomplete', 'response.failed']);

const responsesStream: StreamSpec = {
  usage(event) {
    if (!RESPONSES_FINAL.has(event.event)) return undefined;
    const response = obj(parse(event.data).response);
    return response.usage ? { usage: responsesUsage(response.usage), final: true } : undefined;
  },
  isDelta: (event) => event.event.endsWith('.delta'),
  deltaChars: (event) => stringValueLengths(event.data, RESPONSES_DELTA_KEYS),
};
