// Prices in USD per million tokens, and the cost of a call's usage. The shipped table covers the
// current Claude and OpenAI models; configuration can override or extend it.
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
}

export type PriceTable = Record<string, Price>;

// Public list prices (USD / 1M tokens) as of late 2026. Keys are model names or prefixes.
export const DEFAULT_PRICES: PriceTable = {
  // Anthropic: cache writes 1.25x (5 min) / 2x (1 h) input, cache reads 0.1x input.
  'claude-opus-4-5': { input: 5, output: 25 },
  'claude-opus-4-1': { input: 15, output: 75 },
  'claude-opus-4': { input: 15, output: 75 },
  'claude-sonnet-4-5': { input: 3, output: 15 },
  'claude-sonnet-4': { input: 3, output: 15 },
  'claude-3-7-sonnet': { input: 3, output: 15 },
  'claude-haiku-4-5': { input: 1, output: 5 },
  'claude-3-5-haiku': { input: 0.8, output: 4 },
  'claude-3-haiku': { input: 0.25, output: 1.25, cacheWrite: 0.3, cacheRead: 0.03 },
  // Family entries for releases newer than this table (Claude Code 2.1.332 defaults to
  // claude-opus-5-5): the latest known price of the tier. The audit record names the entry used.
  'claude-opus': { input: 5, output: 25 },
  'claude-sonnet': { input: 3, output: 15 },
  'claude-haiku': { input: 1, output: 5 },
  // OpenAI: cached input as listed, no charge for cache writes.
  'gpt-5.1': { input: 1.25, output: 10, cacheRead: 0.125, cacheWrite: 1.25 },
  'gpt-5': { input: 1.25, output: 10, cacheRead: 0.125, cacheWrite: 1.25 },
  'gpt-5-mini': { input: 0.25, output: 2, cacheRead: 0.025, cacheWrite: 0.25 },
  'gpt-5-nano': { input: 0.05, output: 0.4, cacheRead: 0.005, cacheWrite: 0.05 },
  'gpt-4.1': { input: 2, output: 8, cacheRead: 0.5, cacheWrite: 2 },
  'gpt-4.1-mini': { input: 0.4, output: 1.6, cacheRead: 0.1, cacheWrite: 0.4 },
  'gpt-4.1-nano': { input: 0.1, output: 0.4, cacheRead: 0.025, cacheWrite: 0.1 },
  'gpt-4o': { input: 2.5, output: 10, cacheRead: 1.25, cacheWrite: 2.5 },
  'gpt-4o-mini': { input: 0.15, output: 0.6, cacheRead: 0.075, cacheWrite: 0.15 },
  o3: { input: 2, output: 8, cacheRead: 0.5, cacheWrite: 2 },
  'o3-mini': { input: 1.1, output: 4.4, cacheRead: 0.55, cacheWrite: 1.1 },
  o1: { input: 15, output: 60, cacheRead: 7.5, cacheWrite: 15 },
  'o4-mini': { input: 1.1, output: 4.4, cacheRead: 0.275, cacheWrite: 1.1 },
};

export type PriceSource = 'table' | 'default';

export interface PriceMatch {
  price: Required<Price>;
  /** The table entry that matched, or undefined for the configured default price. */
  entry?: string;
  source: PriceSource;
}

function complete(price: Price): Required<Price> {
  return {
    input: price.input,
    output: price.output,
    cacheWrite: price.cacheWrite ?? price.input * 1.25,
    cacheWrite1h: price.cacheWrite1h ?? price.input * 2,
    cacheRead: price.cacheRead ?? price.input * 0.1,
  };
}

/**
 * Finds a model's price: the exact name, else the longest table key that is a prefix of it at a
 * `-` or `.` boundary, so dated snapshots (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`) and
 * suffixed variants (`gpt-5-codex`) match their family while `gpt-4o-mini` keeps its own entry.
 */
export class Pricing {
  private readonly table: Map<string, Required<Price>>;
  private readonly keysLongestFirst: string[];
  private readonly fallback: Required<Price> | undefined;
  private readonly cache = new Map<string, PriceMatch | undefined>();

  /** `fallback`: the price of models not in the table; undefined refuses them. */
  constructor(table: PriceTable = DEFAULT_PRICES, fallback?: Price) {
    this.table = new Map(Object.entries(table).map(([name, price]) => [name.toLowerCase(), complete(price)]));
    this.keysLongestFirst = [...this.table.keys()].sort((a, b) => b.length - a.length);
    this.fallback = fallback && complete(fallback);
  }

  /** The price for `model`, or undefined when it is unknown and unknown models are refused. */
  lookup(model: string): PriceMatch | undefined {
    const name = model.toLowerCase();
    if (this.cache.has(name)) return this.cache.get(name);
    let match: PriceMatch | undefined;
    const exact = this.table.get(name);
    if (exact) match = { price: exact, entry: name, source: 'table' };
    else {
      const entry = this.keysLongestFirst.find((key) => name.startsWith(key) && /[-.@]/.test(name[key.length] ?? ''));
      if (entry) match = { price: this.table.get(entry)!, entry, source: 'table' };
      else if (this.fallback) match = { price: this.fallback, source: 'default' };
    }
    // Bounded: model names come from clients.
    if (this.cache.size < 1000) this.cache.set(name, match);
    return match;
  }
}

/** USD cost of a usage at a price. */
export function costOf(usage: Usage, price: Required<Price>): number {
  return (
    (usage.inputTokens * price.input +
      usage.outputTokens * price.output +
      usage.cacheWriteTokens * price.cacheWrite +
      usage.cacheWrite1hTokens * price.cacheWrite1h +
      usage.cacheReadTokens * price.cacheRead) /
    1_000_000
  );
}
