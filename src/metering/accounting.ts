// What a key may do and what it has spent: limits checked before a call goes upstream, a budget
// reservation held while it runs, and the real cost settled when it ends.
import { GatewayError } from '../errors.ts';
import { globToRegExp } from '../glob.ts';
import { validateGitHubScope, type GitHubScope } from '../github/scope.ts';
import type { Endpoint } from '../routes.ts';
import type { Ledger } from './ledger.ts';
import { RateWindow } from './limits.ts';
import { costOf, type PriceMatch, type Pricing } from './pricing.ts';
import { ZERO_USAGE, type MeteredUsage, type Usage } from './usage.ts';

/** Per-key limits. Every field is optional; `mint` options override the gateway's defaults. */
export interface KeyLimits {
  /** USD this key may spend over its life. */
  budgetUsd?: number;
  /** Requests per minute. */
  rpm?: number;
  /** Tokens (input, output and cache) per minute. */
  tpm?: number;
  /** Requests in flight at once. */
  maxConcurrent?: number;
  /** Glob patterns (`*`, `?`) of the models this key may call. Default: any. */
  models?: string[];
  /** Largest request body, in bytes. */
  maxBodyBytes?: number;
  /** Git and GitHub API access through the socket (`{ read, push, api }`). Default: none. */
  github?: GitHubScope;
  /**
   * Refused requests (any status the gateway answers itself) per minute; past it, the key's
   * requests are answered 429 at once, before their body is read, and the connection closed.
   * Default 120 (src/refusals.ts).
   */
  maxRefusalsPerMinute?: number;
}

const METERED: ReadonlySet<Endpoint> = new Set(['messages', 'chat_completions', 'responses']);

// Requests that name no output limit are reserved as if they asked for this many tokens.
const DEFAULT_OUTPUT_ESTIMATE = 4096;
// Upper-bound input estimate: a token is rarely shorter than 3 bytes of JSON request.
const BYTES_PER_TOKEN_ESTIMATE = 3;

/** A budget that is shared: one key's own, or its group's. */
export class Account {
  spentUsd: number;
  reservedUsd = 0;
  /** Calls holding a reservation on this account. */
  inFlight = 0;
  limitUsd: number | undefined;

  constructor(limitUsd: number | undefined, spentUsd = 0) {
    this.limitUsd = limitUsd;
    this.spentUsd = spentUsd;
  }

  /**
   * Whether a call estimated at `estimateUsd` may start. Spend plus reservations plus the estimate
   * must fit, except that a lone call may always start while any budget is left: so the spend
   * passes the limit by at most the reservations of calls in flight, and a key whose remaining
   * budget is smaller than one worst-case call still finishes its work one call at a time.
   * 'busy': the rest of the budget is reserved by calls in flight; try again when they end.
   */
  admits(estimateUsd: number): 'yes' | 'busy' | 'exhausted' {
    if (this.limitUsd === undefined) return 'yes';
    if (this.spentUsd >= this.limitUsd) return 'exhausted';
    if (this.inFlight === 0 || this.spentUsd + this.reservedUsd + estimateUsd <= this.limitUsd) return 'yes';
    return 'busy';
  }
}

export interface KeyAccount {
  readonly keyId: string;
  readonly group: string;
  readonly limits: KeyLimits;
  readonly own: Account;
  readonly rates: RateWindow;
  readonly modelPatterns: RegExp[] | undefined;
  calls: number;
}

export interface AdmissionRequest {
  endpoint: Endpoint;
  /** The model the client asked for: what the key's model globs are checked against. */
  model: string | undefined;
  /** The model the upstream will bill (a route may rename it). */
  billedModel: string | undefined;
  maxOutputTokens: number | undefined;
  requestBytes: number;
}

/** The outcome of a settled call, for the audit record. */
export interface Settlement {
  usage?: Usage;
  usageReported?: boolean;
  costUsd: number;
  priceSource?: PriceMatch['source'];
  priceEntry?: string;
}

export interface AccountingOptions {
  pricing: Pricing;
  ledger: Ledger;
  defaults: KeyLimits;
  groupBudgets: Record<string, number>;
  /** Model globs per group: a key may use a model only if its group's list (when set) allows it too. */
  groupModels: Record<string, string[]>;
}

export class Accounting {
  private readonly options: AccountingOptions;
  private readonly keys = new Map<string, KeyAccount>();
  private readonly groups = new Map<string, Account>();
  private groupPatterns = new Map<string, RegExp[]>();

  constructor(options: AccountingOptions) {
    this.options = options;
  }

  open(keyId: string, group: string, overrides: KeyLimits): KeyAccount {
    const limits = validateLimits({ ...this.options.defaults, ...stripUndefined(overrides) });
    const account: KeyAccount = {
      keyId,
      group,
      limits,
      own: new Account(limits.budgetUsd),
      rates: new RateWindow(),
      modelPatterns: limits.models?.map(globToRegExp),
      calls: 0,
    };
    this.keys.set(keyId, account);
    this.group(group); // known from the first key on, for inspect
    return account;
  }

  /** Replaces every group's allowed models. */
  setGroupModels(groupModels: Record<string, string[]>): void {
    this.options.groupModels = groupModels;
    this.groupPatterns = new Map();
  }

  private patternsOfGroup(group: string): RegExp[] | undefined {
    const globs = this.options.groupModels[group];
    if (!globs) return undefined;
    let patterns = this.groupPatterns.get(group);
    if (!patterns) {
      patterns = globs.map(globToRegExp);
      this.groupPatterns.set(group, patterns);
    }
    return patterns;
  }

  setPricing(pricing: Pricing): void {
    this.options.pricing = pricing;
  }

  /** Defaults for keys opened from now on; live keys keep theirs. */
  setDefaults(defaults: KeyLimits): void {
    this.options.defaults = validateLimits({ ...defaults });
  }

  close(keyId: string): void {
    this.keys.delete(keyId);
  }

  get(keyId: string): KeyAccount | undefined {
    return this.keys.get(keyId);
  }

  group(name: string): Account {
    let account = this.groups.get(name);
    if (!account) {
      account = new Account(this.options.groupBudgets[name], this.options.ledger.spent(name));
      this.groups.set(name, account);
    }
    return account;
  }

  groupNames(): string[] {
    return [...new Set([...this.groups.keys(), ...Object.keys(this.options.groupBudgets)])];
  }

  setGroupBudget(name: string, usd: number | undefined): void {
    if (usd !== undefined && !(Number.isFinite(usd) && usd >= 0)) throw new TypeError('group budget must be a non-negative number of USD');
    this.group(name).limitUsd = usd;
  }

  /** Checks what can be checked before the body is read: concurrency and request rate. */
  checkRate(key: KeyAccount, inFlight: number): void {
    const { maxConcurrent } = key.limits;
    if (maxConcurrent !== undefined && inFlight >= maxConcurrent) {
      throw rateLimited(`this key allows ${maxConcurrent} concurrent requests`, 1000);
    }
    const { waitMs, limit } = key.rates.check(key.limits);
    if (limit === 'rpm') throw rateLimited(`this key allows ${key.limits.rpm} requests per minute`, waitMs);
    if (limit === 'tpm') throw rateLimited(`this key allows ${key.limits.tpm} tokens per minute`, waitMs);
  }

  /** Admits a call or throws the refusal; the returned admission must be settled exactly once. */
  admit(key: KeyAccount, request: AdmissionRequest): Admission {
    const metered = METERED.has(request.endpoint);
    if (request.model !== undefined && key.modelPatterns && !key.modelPatterns.some((re) => re.test(request.model!))) {
      throw new GatewayError('model_not_allowed', `this key may not use model ${request.model}; allowed: ${key.limits.models!.join(', ')}`);
    }
    const groupPatterns = this.patternsOfGroup(key.group);
    if (request.model !== undefined && groupPatterns && !groupPatterns.some((re) => re.test(request.model!))) {
      throw new GatewayError('model_not_allowed', `group ${key.group} may not use model ${request.model}; allowed: ${this.options.groupModels[key.group]!.join(', ')}`);
    }
    if (metered && request.model === undefined && (key.modelPatterns || groupPatterns)) {
      throw new GatewayError('invalid_request', '`model` is required');
    }
    let price: PriceMatch | undefined;
    let estimateUsd = 0;
    if (metered && request.billedModel !== undefined) {
      price = this.options.pricing.lookup(request.billedModel);
      if (!price) throw new GatewayError('model_not_allowed', `model ${request.billedModel} has no price configured and unknown models are refused`);
      const inputTokens = Math.ceil(request.requestBytes / BYTES_PER_TOKEN_ESTIMATE);
      const outputTokens = request.maxOutputTokens ?? DEFAULT_OUTPUT_ESTIMATE;
      // Input priced at the dearest input rate: it may all turn out to be cache writes.
      const inputRate = Math.max(price.price.input, price.price.cacheWrite, price.price.cacheWrite1h);
      estimateUsd = (inputTokens * inputRate + outputTokens * price.price.output) / 1_000_000;
    }
    const accounts = [key.own, this.group(key.group)];
    if (metered) {
      for (const [account, which] of [[key.own, 'key'], [accounts[1]!, `group ${key.group}`]] as const) {
        const verdict = account.admits(estimateUsd);
        if (verdict === 'exhausted') throw budgetExhausted(which, account);
        if (verdict === 'busy') throw rateLimited(`the rest of the ${which} budget is held by calls in flight`, 1000);
      }
    }
    for (const account of accounts) {
      account.reservedUsd += estimateUsd;
      account.inFlight++;
    }
    key.rates.startRequest();
    key.calls++;
    return new Admission(this.options.ledger, key, accounts, estimateUsd, price, request.requestBytes);
  }
}

export class Admission {
  private settled = false;
  readonly estimateUsd: number;
  readonly price: PriceMatch | undefined;
  private readonly ledger: Ledger;
  private readonly key: KeyAccount;
  private readonly accounts: Account[];
  private readonly requestBytes: number;

  constructor(ledger: Ledger, key: KeyAccount, accounts: Account[], estimateUsd: number, price: PriceMatch | undefined, requestBytes: number) {
    this.ledger = ledger;
    this.key = key;
    this.accounts = accounts;
    this.estimateUsd = estimateUsd;
    this.price = price;
    this.requestBytes = requestBytes;
  }

  /** Releases the reservation and books what the call really cost. */
  settle(metered: MeteredUsage | undefined): Settlement {
    if (this.settled) throw new Error('admission settled twice');
    this.settled = true;
    let usage = metered?.usage;
    if (usage && !metered!.reported && usage.inputTokens + usage.cacheReadTokens + usage.cacheWriteTokens === 0) {
      // A stream cut before the provider sent its counts: its input was still processed.
      usage = { ...usage, inputTokens: Math.ceil(this.requestBytes / 4) };
    }
    const costUsd = usage && this.price ? costOf(usage, this.price.price) : 0;
    for (const account of this.accounts) {
      account.reservedUsd = Math.max(0, account.reservedUsd - this.estimateUsd);
      account.inFlight--;
      account.spentUsd += costUsd;
    }
    this.ledger.record(this.key.group, this.key.keyId, costUsd);
    if (usage) {
      this.key.rates.addTokens(usage.inputTokens + usage.outputTokens + usage.cacheReadTokens + usage.cacheWriteTokens + usage.cacheWrite1hTokens);
    }
    return {
      usage: usage ?? (this.price ? { ...ZERO_USAGE } : undefined),
      usageReported: metered?.reported,
      costUsd,
      priceSource: this.price?.source,
      priceEntry: this.price?.entry,
    };
  }
}

function rateLimited(message: string, waitMs: number): GatewayError {
  return new GatewayError('rate_limited', `${message}; retry in ${Math.ceil(waitMs / 1000)} s`, {
    'retry-after': String(Math.max(1, Math.ceil(waitMs / 1000))),
  });
}

function budgetExhausted(which: string, account: Account): GatewayError {
  const spent = account.spentUsd.toFixed(4);
  const limit = account.limitUsd!.toFixed(4);
  return new GatewayError('budget_exhausted', `budget exhausted for ${which}: spent $${spent} of $${limit} (including calls in flight)`);
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function validateLimits(limits: KeyLimits): KeyLimits {
  for (const name of ['budgetUsd', 'rpm', 'tpm', 'maxConcurrent', 'maxBodyBytes', 'maxRefusalsPerMinute'] as const) {
    const value = limits[name];
    if (value !== undefined && !(typeof value === 'number' && Number.isFinite(value) && value >= 0)) {
      throw new TypeError(`limit \`${name}\` must be a non-negative number`);
    }
  }
  if (limits.models !== undefined && !(Array.isArray(limits.models) && limits.models.every((m) => typeof m === 'string'))) {
    throw new TypeError('limit `models` must be an array of glob patterns');
  }
  if (limits.github !== undefined) validateGitHubScope(limits.github);
  return limits;
}
