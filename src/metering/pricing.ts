// Prices in USD per million tokens, each model's output and context limits (what bounds a
// reservation), and the cost of a call's usage. The shipped table covers the current Claude and
// OpenAI models; configuration can override or extend it.
import { canonicalClaudeModel } from '../wire/claude-models.ts';
import { DEFAULT_PER_USE_PRICES, type PerUsePrices } from './server-tools.ts';
import type { Usage } from './usage.ts';

export interface Price {
  input: number;
  output: number;
  /** 5-minute prompt-cache writes. Default 1.25 x input (Anthropic's rate). */
  cacheWrite?: number;
  /** 1-hour prompt-cache writes. Default 2 x input. */
  cacheWrite1h?: number;
  /** Prompt-cache reads / cached input. Default 0.1 x input. */
  cacheRead?: number;
  /** Most output tokens one completion can produce: what a request that names no limit may cost. */
  maxOutputTokens?: number;
  /** The context window: input tokens beyond it cannot be billed, so a reservation stops there. */
  contextTokens?: number;
  /** Dearer rates for the whole call once its input (cache included) passes `aboveInputTokens`. */
  longContext?: { aboveInputTokens: number; input: number; output: number };
  /** USD per server web search. Default: the gateway's per-use price ($10 per 1,000). */
  webSearch?: number;
  /** USD per server web fetch. Default: the gateway's per-use price ($0: fetched content is billed as tokens). */
  webFetch?: number;
}

export type PriceTable = Record<string, Price>;

/** Limits of an entry that names none (config prices, unknown models): generous, so reservations stay upper bounds. */
const DEFAULT_MAX_OUTPUT_TOKENS = 128_000;
const DEFAULT_CONTEXT_TOKENS = 1_000_000;

// Context windows and output limits as published with the prices.
const CLAUDE_4 = { contextTokens: 200_000, maxOutputTokens: 64_000 };
// Sonnet 4 and 4.5 read up to 1M tokens (beta); past 200k input the whole call is billed higher.
const SONNET_1M = { contextTokens: 1_000_000, maxOutputTokens: 64_000, longContext: { aboveInputTokens: 200_000, input: 6, output: 22.5 } };
const GPT_5 = { contextTokens: 400_000, maxOutputTokens: 128_000 };
const O_SERIES = { contextTokens: 200_000, maxOutputTokens: 100_000 };
const GPT_4_1 = { contextTokens: 1_047_576, maxOutputTokens: 32_768 };
const GPT_4O = { contextTokens: 128_000, maxOutputTokens: 16_384 };

// Public list prices (USD / 1M tokens), checked entry by entry against the providers' pricing pages.
// Keys are model names; see Pricing for how dated snapshots and newer releases find theirs.
export const DEFAULT_PRICES: PriceTable = {
  // Anthropic: cache writes 1.25x (5 min) / 2x (1 h) input, cache reads 0.1x input.
  'claude-opus-4-5': { input: 5, output: 25, ...CLAUDE_4 },
  'claude-opus-4-1': { input: 15, output: 75, contextTokens: 200_000, maxOutputTokens: 32_000 },
  'claude-opus-4': { input: 15, output: 75, contextTokens: 200_000, maxOutputTokens: 32_000 },
  'claude-sonnet-4-5': { input: 3, output: 15, ...SONNET_1M },
  'claude-sonnet-4': { input: 3, output: 15, ...SONNET_1M },
  // 128k output with the output-128k beta.
  'claude-3-7-sonnet': { input: 3, output: 15, contextTokens: 200_000, maxOutputTokens: 128_000 },
  'claude-haiku-4-5': { input: 1, output: 5, ...CLAUDE_4 },
  'claude-3-5-haiku': { input: 0.8, output: 4, contextTokens: 200_000, maxOutputTokens: 8_192 },
  'claude-3-haiku': { input: 0.25, output: 1.25, cacheWrite: 0.3, cacheRead: 0.03, contextTokens: 200_000, maxOutputTokens: 4_096 },
  // Family entries for releases newer than this table (Claude Code 2.1.332 defaults to
  // claude-opus-5-5): the latest known price of the tier. The audit record names the entry used.
  'claude-opus': { input: 5, output: 25, ...CLAUDE_4 },
  'claude-sonnet': { input: 3, output: 15, ...SONNET_1M },
  'claude-haiku': { input: 1, output: 5, ...CLAUDE_4 },
  // OpenAI: cached input as listed, no charge for cache writes. Pro tiers have no cached rate.
  'gpt-5.2': { input: 1.75, output: 14, cacheRead: 0.175, cacheWrite: 1.75, ...GPT_5 },
  'gpt-5.2-pro': { input: 21, output: 168, cacheRead: 21, cacheWrite: 21, contextTokens: 400_000, maxOutputTokens: 272_000 },
  'gpt-5.1': { input: 1.25, output: 10, cacheRead: 0.125, cacheWrite: 1.25, ...GPT_5 },
  'gpt-5.1-codex': { input: 1.25, output: 10, cacheRead: 0.125, cacheWrite: 1.25, ...GPT_5 },
  'gpt-5.1-codex-max': { input: 1.25, output: 10, cacheRead: 0.125, cacheWrite: 1.25, ...GPT_5 },
  'gpt-5.1-codex-mini': { input: 0.25, output: 2, cacheRead: 0.025, cacheWrite: 0.25, ...GPT_5 },
  'gpt-5.1-chat-latest': { input: 1.25, output: 10, cacheRead: 0.125, cacheWrite: 1.25, contextTokens: 128_000, maxOutputTokens: 16_384 },
  'gpt-5': { input: 1.25, output: 10, cacheRead: 0.125, cacheWrite: 1.25, ...GPT_5 },
  'gpt-5-codex': { input: 1.25, output: 10, cacheRead: 0.125, cacheWrite: 1.25, ...GPT_5 },
  'gpt-5-chat-latest': { input: 1.25, output: 10, cacheRead: 0.125, cacheWrite: 1.25, contextTokens: 128_000, maxOutputTokens: 16_384 },
  'gpt-5-pro': { input: 15, output: 120, cacheRead: 15, cacheWrite: 15, contextTokens: 400_000, maxOutputTokens: 272_000 },
  'gpt-5-mini': { input: 0.25, output: 2, cacheRead: 0.025, cacheWrite: 0.25, ...GPT_5 },
  'gpt-5-nano': { input: 0.05, output: 0.4, cacheRead: 0.005, cacheWrite: 0.05, ...GPT_5 },
  'codex-mini': { input: 1.5, output: 6, cacheRead: 0.375, cacheWrite: 1.5, contextTokens: 200_000, maxOutputTokens: 100_000 },
  'gpt-4.1': { input: 2, output: 8, cacheRead: 0.5, cacheWrite: 2, ...GPT_4_1 },
  'gpt-4.1-mini': { input: 0.4, output: 1.6, cacheRead: 0.1, cacheWrite: 0.4, ...GPT_4_1 },
  'gpt-4.1-nano': { input: 0.1, output: 0.4, cacheRead: 0.025, cacheWrite: 0.1, ...GPT_4_1 },
  'gpt-4o': { input: 2.5, output: 10, cacheRead: 1.25, cacheWrite: 2.5, ...GPT_4O },
  // The first GPT-4o snapshot kept its launch price.
  'gpt-4o-2024-05-13': { input: 5, output: 15, cacheRead: 5, cacheWrite: 5, contextTokens: 128_000, maxOutputTokens: 4_096 },
  'gpt-4o-mini': { input: 0.15, output: 0.6, cacheRead: 0.075, cacheWrite: 0.15, ...GPT_4O },
  o3: { input: 2, output: 8, cacheRead: 0.5, cacheWrite: 2, ...O_SERIES },
  'o3-pro': { input: 20, output: 80, cacheRead: 20, cacheWrite: 20, ...O_SERIES },
  'o3-mini': { input: 1.1, output: 4.4, cacheRead: 0.55, cacheWrite: 1.1, ...O_SERIES },
  'o3-deep-research': { input: 10, output: 40, cacheRead: 2.5, cacheWrite: 10, ...O_SERIES },
  o1: { input: 15, output: 60, cacheRead: 7.5, cacheWrite: 15, ...O_SERIES },
  'o1-pro': { input: 150, output: 600, cacheRead: 150, cacheWrite: 150, ...O_SERIES },
  'o1-mini': { input: 1.1, output: 4.4, cacheRead: 0.55, cacheWrite: 1.1, contextTokens: 128_000, maxOutputTokens: 65_536 },
  'o4-mini': { input: 1.1, output: 4.4, cacheRead: 0.275, cacheWrite: 1.1, ...O_SERIES },
  'o4-mini-deep-research': { input: 2, output: 8, cacheRead: 0.5, cacheWrite: 2, ...O_SERIES },
};

/**
 * OpenAI bills `service_tier: "priority"` above standard: 2x for GPT-5 and 5.1, 1.7-1.8x for the
 * others. Charged (and reserved) at 2x: the highest published ratio, so it never undercharges.
 */
export const PRIORITY_TIER_MULTIPLIER = 2;

export type PriceSource = 'table' | 'default';

/** A price with every rate and limit filled in. */
export interface FullPrice extends Required<Omit<Price, 'longContext'>> {
  longContext?: Price['longContext'];
}

export interface PriceMatch {
  price: FullPrice;
  /** The table entry that matched, or undefined for the configured default price. */
  entry?: string;
  source: PriceSource;
}

function complete(price: Price, perUse: PerUsePrices): FullPrice {
  return {
    webSearch: price.webSearch ?? perUse.webSearch,
    webFetch: price.webFetch ?? perUse.webFetch,
    input: price.input,
    output: price.output,
    cacheWrite: price.cacheWrite ?? price.input * 1.25,
    cacheWrite1h: price.cacheWrite1h ?? price.input * 2,
    cacheRead: price.cacheRead ?? price.input * 0.1,
    maxOutputTokens: price.maxOutputTokens ?? DEFAULT_MAX_OUTPUT_TOKENS,
    contextTokens: price.contextTokens ?? DEFAULT_CONTEXT_TOKENS,
    longContext: price.longContext,
  };
}

/** `price` with every rate multiplied by `factor` (a service tier). */
export function scaled(price: FullPrice, factor: number): FullPrice {
  if (factor === 1) return price;
  const longContext = price.longContext && { ...price.longContext, input: price.longContext.input * factor, output: price.longContext.output * factor };
  return {
    ...price,
    input: price.input * factor,
    output: price.output * factor,
    cacheWrite: price.cacheWrite * factor,
    cacheWrite1h: price.cacheWrite1h * factor,
    cacheRead: price.cacheRead * factor,
    longContext,
  };
}

/** The rates that apply to a call with `inputTokens` of input (cache included): long-context ones past the threshold. */
export function ratesFor(price: FullPrice, inputTokens: number): FullPrice {
  const long = price.longContext;
  if (!long || inputTokens <= long.aboveInputTokens) return price;
  // Cache rates keep their ratio to the input rate.
  const ratio = long.input / price.input;
  return {
    ...price,
    input: long.input,
    output: long.output,
    cacheWrite: price.cacheWrite * ratio,
    cacheWrite1h: price.cacheWrite1h * ratio,
    cacheRead: price.cacheRead * ratio,
  };
}

// What may follow a table key: a dated snapshot (`-20250929`, `-2024-08-06`, `@20250929`), or
// `-latest`. A family key (one that ends in a letter: `claude-opus`) also takes release numbers
// before it (`claude-opus-5-5`). Anything else (`-pro`, `-ultra`, `.3`) is another model.
const SNAPSHOT = /^(?:[-@](?:\d{8}|\d{4}-\d{2}-\d{2}|latest))?$/;
const RELEASE = /^(?:-\d+)+/;

/**
 * Finds a model's price: the exact name, else the longest table key the name extends by a dated
 * snapshot (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`), or, for a family key, by a release
 * number (`claude-opus-5-5`). An unknown tier (`gpt-5-pro` without its own entry, `o3-ultra`) never
 * takes its base model's lower price: it gets the unknown-model price, or is refused.
 */
export class Pricing {
  private readonly table: Map<string, FullPrice>;
  private readonly keysLongestFirst: string[];
  private readonly fallback: FullPrice | undefined;
  /** Only table hits: model names come from clients, and misses must not fill memory. */
  private readonly cache = new Map<string, PriceMatch>();

  /**
   * `fallback`: the price of models not in the table; undefined refuses them. `perUse`: server
   * tool prices for entries that set none of their own.
   */
  constructor(table: PriceTable = DEFAULT_PRICES, fallback?: Price, perUse: PerUsePrices = DEFAULT_PER_USE_PRICES) {
    this.table = new Map(Object.entries(table).map(([name, price]) => [name.toLowerCase(), complete(price, perUse)]));
    this.keysLongestFirst = [...this.table.keys()].sort((a, b) => b.length - a.length);
    this.fallback = fallback && complete(fallback, perUse);
  }

  /** The price for `model`, or undefined when it is unknown and unknown models are refused. */
  lookup(model: string): PriceMatch | undefined {
    const name = model.toLowerCase();
    const cached = this.cache.get(name);
    if (cached) return cached;
    // A Bedrock or Vertex id (`us.anthropic.claude-...-v1:0`, `claude-...@20250929`) takes its Anthropic name's entry.
    const exact = this.entryFor(name);
    const canonical = canonicalClaudeModel(name);
    const entry = exact ?? this.entryFor(canonical);
    if (!entry) return this.fallback && { price: this.fallback, source: 'default' };
    const regional = exact === undefined && hasRegionalPremium(name, canonical);
    const match: PriceMatch = regional
      ? { price: scaled(this.table.get(entry)!, BEDROCK_REGIONAL_PREMIUM), entry: `${entry} (regional)`, source: 'table' }
      : { price: this.table.get(entry)!, entry, source: 'table' };
    // Bounded all the same: a table hit can still carry any snapshot suffix.
    if (this.cache.size < 1000) this.cache.set(name, match);
    return match;
  }

  private entryFor(name: string): string | undefined {
    return this.keysLongestFirst.find((key) => name.startsWith(key) && extends_(key, name.slice(key.length)));
  }
}

/**
 * Bedrock lists Claude from Sonnet 4.5, Haiku 4.5 and Opus 4.5 on 10% above the global price when
 * called in a region or a geographic inference profile (`us.`, `eu.`, ...), not `global.`. Vertex's
 * regional premium is not in its ids: a price configured for them carries it (docs/bedrock-vertex.md).
 */
const BEDROCK_REGIONAL_PREMIUM = 1.1;
// The release of a Claude name: `claude-sonnet-4-5-20250929` is 4.5, `claude-sonnet-4-20250514` 4.
const CLAUDE_RELEASE = /^claude-(?:opus|sonnet|haiku)-(\d{1,2})(?:-(\d{1,2}))?(?:[-@]|$)/;

function hasRegionalPremium(id: string, canonical: string): boolean {
  if (canonical === id || !id.includes('anthropic.claude-')) return false;
  const profile = id.slice(id.lastIndexOf('/') + 1);
  if (profile.startsWith('global.')) return false;
  const release = CLAUDE_RELEASE.exec(canonical);
  if (!release) return false;
  const [major, minor] = [Number(release[1]), Number(release[2] ?? 0)];
  return major > 4 || (major === 4 && minor >= 5);
}

function extends_(key: string, rest: string): boolean {
  if (SNAPSHOT.test(rest)) return true;
  if (!/[a-z]$/.test(key)) return false;
  const release = RELEASE.exec(rest);
  return release !== null && SNAPSHOT.test(rest.slice(release[0].length));
}

/** USD cost of a usage at a price: its tokens, and its per-use server tool charges. */
export function costOf(usage: Usage, price: FullPrice): number {
  return (
    (usage.inputTokens * price.input +
      usage.outputTokens * price.output +
      usage.cacheWriteTokens * price.cacheWrite +
      usage.cacheWrite1hTokens * price.cacheWrite1h +
      usage.cacheReadTokens * price.cacheRead) /
      1_000_000 +
    usage.webSearchRequests * price.webSearch +
    usage.webFetchRequests * price.webFetch
  );
}
