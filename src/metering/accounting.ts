// What a key may do and what it has spent: limits checked before a call goes upstream, a budget
// reservation of the call's worst case held while it runs (a call that does not fit waits for the
// calls in flight, or has its output limit lowered to what is left), and the real cost settled, at
// the price of the model that served, when it ends.
import { setTimeout as sleep } from 'node:timers/promises';
import type { OutputLimitField } from '../wire/request-fields.ts';
import { ClientGone, GatewayError } from '../wire/errors.ts';
import { globToRegExp } from '../util/glob.ts';
import { checkNonNegative, dropUndefined } from '../util/validation.ts';
import { validateLimits, type KeyLimits } from '../keys/limits.ts';
import type { Endpoint } from '../wire/endpoints.ts';
import type { Ledger } from './ledger.ts';
import { RateWindow } from './rates.ts';
import { costOf, PRIORITY_TIER_MULTIPLIER, ratesFor, scaled, type FullPrice, type PriceMatch, type Pricing } from './pricing.ts';
import { toolUsesCostUsd, type ToolUses } from './server-tools.ts';
import { type SharedBudgets, type SharedReservation, StoreUnavailable } from './shared.ts';
import { ZERO_USAGE, type MeteredUsage, type Usage } from './usage.ts';

const METERED: ReadonlySet<Endpoint> = new Set(['messages', 'chat_completions', 'responses']);

// Upper-bound input estimate: a token is rarely shorter than 3 bytes of JSON request.
const BYTES_PER_TOKEN_ESTIMATE = 3;
// A call lowered to fewer output tokens than this (per completion) is refused instead: its answer
// would be cut short anyway.
const MIN_CLAMPED_OUTPUT_TOKENS = 1024;
// The field a lowered limit is written to when the request named none.
const OUTPUT_LIMIT_FIELD: Partial<Record<Endpoint, OutputLimitField>> = {
  messages: 'max_tokens',
  chat_completions: 'max_completion_tokens',
  responses: 'max_output_tokens',
};

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

  /** USD not yet spent nor reserved (Infinity without a limit). */
  available(): number {
    return this.limitUsd === undefined ? Infinity : this.limitUsd - this.spentUsd - this.reservedUsd;
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

/**
 * The client's hang-up as a signal, asked for only by a call that has to wait for budget: most are
 * admitted at once and need none (an AbortController and its signal, an EventTarget, per call).
 */
export type HangUp = () => AbortSignal;

export interface AdmissionRequest {
  endpoint: Endpoint;
  /** The model the client asked for: what the key's model globs are checked against. */
  model: string | undefined;
  /** The model each candidate upstream will bill, in route order (a route may rename it). */
  billedModels: (string | undefined)[];
  maxOutputTokens: number | undefined;
  outputLimitField?: OutputLimitField;
  /** Completions asked for (`n`). */
  choices: number;
  thinkingBudgetTokens?: number;
  serviceTier?: string;
  /** Bytes that can become input tokens (whitespace padding excluded). */
  inputBytes: number;
  /** The most per-use priced server tool uses (web searches) the request can make. */
  serverToolUses?: ToolUses;
}

/** The outcome of a settled call, for the audit record. */
export interface Settlement {
  usage?: Usage;
  usageReported?: boolean;
  costUsd: number;
  priceSource?: PriceMatch['source'];
  priceEntry?: string;
}

/** A lowered output limit: the gateway writes `value` to `field` in the body it sends upstream. */
export interface Clamp {
  field: OutputLimitField;
  value: number;
}

export interface AccountingOptions {
  pricing: Pricing;
  ledger: Ledger;
  defaults: KeyLimits;
  groupBudgets: Record<string, number>;
  /** Model globs per group: a key may use a model only if its group's list (when set) allows it too. */
  groupModels: Record<string, string[]>;
  /** How long a call waits for calls in flight to release enough budget. Default 30 s. */
  budgetWaitMs?: number;
  /**
   * Group budgets and rates shared with other gateways (docs/scale-out.md). Without it, a group's
   * budget and rates are this gateway's alone.
   */
  shared?: SharedBudgets;
  /** Requests and tokens per minute per group, over all its keys (and hosts, with `shared`). */
  groupRates?: Record<string, GroupRates>;
  /** When the shared store cannot answer a rate check, let the call through (budgets always fail closed). */
  failOpenRates?: boolean;
}

export interface GroupRates {
  rpm?: number;
  tpm?: number;
}

/** How often a call waiting for budget held on other hosts asks again. */
const SHARED_RETRY_MS = 250;

/** What a call would cost at worst, and how to lower that. */
interface CostPlan {
  /** Price per candidate model (service tier applied). */
  prices: Map<string, PriceMatch>;
  /** Output tokens per completion the reservation covers. */
  outputPerChoice: number;
  estimateUsd: number;
}

/** A call waiting for budget, in arrival order. */
interface Waiter {
  key: KeyAccount;
  request: AdmissionRequest;
  plan: CostPlan;
  resolve(admission: Admission): void;
  reject(error: Error): void;
  timer?: NodeJS.Timeout;
  /** What it waits for, for the refusal when the wait ends. */
  waitingOn?: string;
  onAbort?: () => void;
  signal?: AbortSignal;
}

type Decision = { admit: number; clamp?: Clamp } | { wait: [Account, string][] } | { refuse: GatewayError };

export class Accounting {
  private readonly options: AccountingOptions;
  private readonly keys = new Map<string, KeyAccount>();
  private readonly groups = new Map<string, Account>();
  private groupPatterns = new Map<string, RegExp[]>();
  private readonly queue: Waiter[] = [];
  /** Each group's request and token window, for its rates when they are not shared. */
  private readonly groupWindows = new Map<string, RateWindow>();

  constructor(options: AccountingOptions) {
    this.options = options;
  }

  /** Shares group budgets and rates through `shared` (set once, when the gateway opens its store). */
  share(shared: SharedBudgets | undefined): void {
    this.options.shared = shared;
  }

  /** Replaces every group's rates. */
  setGroupRates(rates: Record<string, GroupRates>): void {
    this.options.groupRates = rates;
  }

  /** The groups with a budget: shared through the store when there is one. */
  budgetGroups(): string[] {
    return this.groupNames().filter((name) => this.group(name).limitUsd !== undefined);
  }

  setBudgetWait(ms: number | undefined): void {
    this.options.budgetWaitMs = ms;
  }

  open(keyId: string, group: string, overrides: KeyLimits): KeyAccount {
    const limits = validateLimits({ ...this.options.defaults, ...dropUndefined(overrides) });
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

  /** Whether the key's and its group's model globs let it use `model` (an Anthropic or OpenAI name). */
  allowsModel(key: KeyAccount, model: string): boolean {
    if (key.modelPatterns && !key.modelPatterns.some((re) => re.test(model))) return false;
    const groupPatterns = this.patternsOfGroup(key.group);
    return !groupPatterns || groupPatterns.some((re) => re.test(model));
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
      account = new Account(Object.hasOwn(this.options.groupBudgets, name) ? this.options.groupBudgets[name] : undefined, this.options.ledger.spent(name));
      this.groups.set(name, account);
    }
    return account;
  }

  groupNames(): string[] {
    return [...new Set([...this.groups.keys(), ...Object.keys(this.options.groupBudgets)])];
  }

  setGroupBudget(name: string, usd: number | undefined): void {
    if (usd !== undefined) checkNonNegative(usd, `budget of group ${name} (USD)`);
    this.group(name).limitUsd = usd;
    this.pump();
  }

  /** Replaces every group's budget (checked by the caller): a group `budgets` does not name has none from now on. */
  setGroupBudgets(budgets: Record<string, number>): void {
    this.options.groupBudgets = budgets;
    for (const [name, account] of this.groups) account.limitUsd = Object.hasOwn(budgets, name) ? budgets[name] : undefined;
    this.pump();
  }

  /**
   * Admits a request at its head, before the body is read: checks concurrency, request and token
   * rates, and counts the request in the same step, so heads sent ahead of their bodies cannot all
   * pass. A refused request is not counted.
   */
  admitRate(key: KeyAccount, inFlight: number): void {
    const { maxConcurrent } = key.limits;
    if (maxConcurrent !== undefined && inFlight >= maxConcurrent) {
      throw rateLimited(`this key allows ${maxConcurrent} concurrent requests`, 1000);
    }
    const { waitMs, limit } = key.rates.check(key.limits);
    if (limit === 'rpm') throw rateLimited(`this key allows ${key.limits.rpm} requests per minute`, waitMs);
    if (limit === 'tpm') throw rateLimited(`this key allows ${key.limits.tpm} tokens per minute`, waitMs);
    const groupRates = this.options.shared ? undefined : this.options.groupRates?.[key.group];
    if (groupRates) {
      const window = this.groupWindow(key.group);
      const checked = window.check(groupRates);
      if (checked.limit) throw groupRateLimited(key.group, groupRates, checked.limit, checked.waitMs, '');
      window.startRequest();
    }
    key.rates.startRequest();
  }

  private groupWindow(group: string): RateWindow {
    let window = this.groupWindows.get(group);
    if (!window) {
      window = new RateWindow();
      this.groupWindows.set(group, window);
    }
    return window;
  }

  /**
   * Admits a call once its budget allows, or rejects with the refusal (ClientGone when the client
   * hangs up while it waits). The admission must be settled exactly once.
   */
  async admit(key: KeyAccount, request: AdmissionRequest, hangUp?: HangUp): Promise<Admission> {
    const admission = await this.admitLocally(key, request, hangUp);
    const { shared } = this.options;
    if (!shared || !METERED.has(request.endpoint)) return admission;
    try {
      await this.admitSharedRate(shared, key);
      const limit = this.group(key.group).limitUsd;
      if (limit !== undefined) admission.shared(await this.reserveShared(shared, key, admission.estimateUsd, limit, hangUp));
    } catch (error) {
      admission.settle(undefined, undefined);
      throw error;
    }
    return admission;
  }

  /** The group's shared request and token rates, checked on the store (failing open if asked to). */
  private async admitSharedRate(shared: SharedBudgets, key: KeyAccount): Promise<void> {
    const rates = this.options.groupRates?.[key.group];
    if (!rates) return;
    let outcome: Awaited<ReturnType<SharedBudgets['admitRate']>>;
    try {
      outcome = await shared.admitRate(key.group, rates);
    } catch (error) {
      if (error instanceof StoreUnavailable && this.options.failOpenRates) return;
      throw storeError(error);
    }
    if (!outcome.ok) throw groupRateLimited(key.group, rates, outcome.limit, outcome.retryAfterMs, ' across its hosts');
  }

  /**
   * The call's worst case reserved from its group's budget on the shared store, in one atomic step
   * there. Budget held by calls in flight (on any host) is waited for, as locally, up to budgetWaitMs.
   */
  private async reserveShared(shared: SharedBudgets, key: KeyAccount, usd: number, limit: number, hangUp?: HangUp): Promise<SharedReservation> {
    const deadline = Date.now() + (this.options.budgetWaitMs ?? 30_000);
    let signal: AbortSignal | undefined;
    for (;;) {
      let outcome: Awaited<ReturnType<SharedBudgets['reserve']>>;
      try {
        outcome = await shared.reserve(key.group, usd, limit);
      } catch (error) {
        throw storeError(error);
      }
      if (outcome.ok) return outcome.reservation;
      if (outcome.reason === 'exhausted') {
        throw new GatewayError(
          'budget_exhausted',
          `budget exhausted for group ${key.group} across its hosts: spent $${outcome.spentUsd.toFixed(4)} of $${limit.toFixed(4)}`,
        );
      }
      if (Date.now() + SHARED_RETRY_MS > deadline) {
        if (outcome.reason === 'warming')
          throw new GatewayError('store_unavailable', 'the shared budget store is restoring its data from the hosts; retry shortly', { 'retry-after': '1' });
        throw rateLimited(`the rest of the group ${key.group} budget is held by calls in flight on its hosts`, 1000);
      }
      signal ??= hangUp?.();
      await sleep(SHARED_RETRY_MS);
      if (signal?.aborted) throw new ClientGone('client closed the connection while waiting for budget');
    }
  }

  private async admitLocally(key: KeyAccount, request: AdmissionRequest, hangUp?: HangUp): Promise<Admission> {
    const metered = METERED.has(request.endpoint);
    if (request.model !== undefined && key.modelPatterns && !key.modelPatterns.some((re) => re.test(request.model!))) {
      throw new GatewayError('model_not_allowed', `this key may not use model ${request.model}; allowed: ${key.limits.models!.join(', ')}`);
    }
    const groupPatterns = this.patternsOfGroup(key.group);
    if (request.model !== undefined && groupPatterns && !groupPatterns.some((re) => re.test(request.model!))) {
      throw new GatewayError(
        'model_not_allowed',
        `group ${key.group} may not use model ${request.model}; allowed: ${this.options.groupModels[key.group]!.join(', ')}`,
      );
    }
    if (metered && request.model === undefined && (key.modelPatterns || groupPatterns)) {
      throw new GatewayError('invalid_request', '`model` is required');
    }
    const plan = metered ? this.costPlan(request) : { prices: new Map(), outputPerChoice: 0, estimateUsd: 0 };
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { key, request, plan, resolve, reject };
      this.queue.push(waiter);
      this.pump();
      if (!this.queue.includes(waiter)) return;
      const signal = hangUp?.();
      if (signal) {
        if (signal.aborted) return this.leave(waiter, new ClientGone('client closed the connection while waiting for budget'));
        waiter.signal = signal;
        waiter.onAbort = () => this.leave(waiter, new ClientGone('client closed the connection while waiting for budget'));
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      waiter.timer = setTimeout(() => {
        this.leave(waiter, rateLimited(`the rest of the ${waiter.waitingOn} budget is held by calls in flight`, 1000));
      }, this.options.budgetWaitMs ?? 30_000);
    });
  }

  /** The prices of every candidate and the call's worst-case cost: the dearest candidate's. */
  private costPlan(request: AdmissionRequest): CostPlan {
    // OpenAI bills the priority tier higher; Anthropic's service_tier does not change the price.
    const tier = request.serviceTier === 'priority' && request.endpoint !== 'messages' ? PRIORITY_TIER_MULTIPLIER : 1;
    const prices = new Map<string, PriceMatch>();
    for (const model of request.billedModels) {
      if (model === undefined || prices.has(model)) continue;
      const match = this.options.pricing.lookup(model);
      if (!match) throw new GatewayError('model_not_allowed', `model ${model} has no price configured and unknown models are refused`);
      prices.set(model, { ...match, price: scaled(match.price, tier) });
    }
    const outputPerChoice = Math.max(
      0,
      ...[...prices.values()].map(({ price }) => Math.min(request.maxOutputTokens ?? price.maxOutputTokens, price.maxOutputTokens)),
    );
    return { prices, outputPerChoice, estimateUsd: worstCase(prices, request, outputPerChoice) };
  }

  /** Lets waiting calls in, in arrival order: a call waits behind an earlier one blocked on an account it shares. */
  private pump(): void {
    const blocked = new Set<Account>();
    for (const waiter of [...this.queue]) {
      const accounts = [waiter.key.own, this.group(waiter.key.group)];
      // Free endpoints (count_tokens, models) never wait behind budget.
      if (METERED.has(waiter.request.endpoint) && accounts.some((account) => blocked.has(account))) {
        waiter.waitingOn ??= blocked.has(accounts[0]!) ? 'key' : `group ${waiter.key.group}`;
        continue;
      }
      const decision = this.decide(waiter, accounts);
      if ('wait' in decision) {
        for (const [account] of decision.wait) blocked.add(account);
        waiter.waitingOn = decision.wait[0]![1];
        continue;
      }
      if ('refuse' in decision) {
        this.leave(waiter, decision.refuse);
        continue;
      }
      this.remove(waiter);
      for (const account of accounts) {
        account.reservedUsd += decision.admit;
        account.inFlight++;
      }
      waiter.key.calls++;
      waiter.resolve(new Admission(this, waiter.key, accounts, decision.admit, waiter.plan.prices, waiter.request, decision.clamp));
    }
  }

  /**
   * Whether a call may start: its worst case fits what is neither spent nor reserved in the key's
   * and the group's budgets; else it waits while calls in flight hold the rest; else, nothing else
   * being in flight, its output limit is lowered to what is left, or it is refused when that is
   * less than one useful answer.
   */
  private decide(waiter: Waiter, accounts: Account[]): Decision {
    const { key, plan, request } = waiter;
    const named: [Account, string][] = [
      [accounts[0]!, 'key'],
      [accounts[1]!, `group ${key.group}`],
    ];
    if (!METERED.has(request.endpoint)) return { admit: 0 };
    for (const [account, which] of named) {
      if (account.limitUsd !== undefined && account.spentUsd >= account.limitUsd) return { refuse: budgetExhausted(which, account) };
    }
    const short = named.filter(([account]) => plan.estimateUsd > account.available());
    if (short.length === 0) return { admit: plan.estimateUsd };
    const busy = short.filter(([account]) => account.inFlight > 0);
    if (busy.length > 0) {
      if ((this.options.budgetWaitMs ?? 30_000) <= 0) return { refuse: rateLimited(`the rest of the ${busy[0]![1]} budget is held by calls in flight`, 1000) };
      return { wait: busy };
    }
    const [poorest, which] = short.reduce((a, b) => (b[0].available() < a[0].available() ? b : a));
    const left = poorest.available();
    const perChoice = Math.min(plan.outputPerChoice, affordable(plan.prices, request, left));
    // A request that asked for fewer tokens than the floor is not lowered at all.
    const floor = Math.max(Math.min(MIN_CLAMPED_OUTPUT_TOKENS, plan.outputPerChoice), (request.thinkingBudgetTokens ?? 0) + 1);
    if (!(perChoice >= floor)) {
      const limit = poorest.limitUsd!.toFixed(4);
      return {
        refuse: new GatewayError(
          'budget_exhausted',
          `budget exhausted for ${which}: $${Math.max(0, left).toFixed(4)} left of $${limit}, less than one call of ${floor} output tokens at this model's price`,
        ),
      };
    }
    const field = request.outputLimitField ?? OUTPUT_LIMIT_FIELD[request.endpoint]!;
    return { admit: worstCase(plan.prices, request, perChoice), clamp: { field, value: perChoice } };
  }

  private remove(waiter: Waiter): void {
    const at = this.queue.indexOf(waiter);
    if (at !== -1) this.queue.splice(at, 1);
    clearTimeout(waiter.timer);
    if (waiter.onAbort) waiter.signal!.removeEventListener('abort', waiter.onAbort);
  }

  /** Takes a call out of the queue with a refusal; the calls behind it may now go. */
  private leave(waiter: Waiter, error: Error): void {
    this.remove(waiter);
    waiter.reject(error);
    this.pump();
  }

  recordSpend(key: KeyAccount, usd: number): void {
    this.options.ledger.record(key.group, key.keyId, usd);
  }

  /** A settled call's tokens, in its group's window (on the store when rates are shared). */
  addGroupTokens(group: string, tokens: number): void {
    if (!this.options.groupRates?.[group]) return;
    if (this.options.shared) this.options.shared.addTokens(group, tokens);
    else this.groupWindow(group).addTokens(tokens);
  }

  /** Called by an admission when it settles: budget came free. */
  released(): void {
    if (this.queue.length > 0) this.pump();
  }
}

/** The input the request can bill for `price`: its token bytes, capped at the context window. */
function inputTokensFor(price: FullPrice, request: AdmissionRequest): number {
  return Math.min(Math.ceil(request.inputBytes / BYTES_PER_TOKEN_ESTIMATE), price.contextTokens);
}

/** The dearest candidate's cost with `outputPerChoice` tokens for each completion. */
function worstCase(prices: Map<string, PriceMatch>, request: AdmissionRequest, outputPerChoice: number): number {
  let worst = 0;
  for (const { price } of prices.values()) {
    const inputTokens = inputTokensFor(price, request);
    const rates = ratesFor(price, inputTokens);
    // Input priced at the dearest input rate: it may all turn out to be cache writes.
    const inputRate = Math.max(rates.input, rates.cacheWrite, rates.cacheWrite1h);
    const output = request.choices * Math.min(outputPerChoice, price.maxOutputTokens);
    worst = Math.max(worst, (inputTokens * inputRate + output * rates.output) / 1_000_000 + toolUsesCostUsd(request.serverToolUses, price));
  }
  return worst;
}

/** Output tokens per completion that `usd` pays for at every candidate's price (finite, maybe negative). */
function affordable(prices: Map<string, PriceMatch>, request: AdmissionRequest, usd: number): number {
  let tokens = Number.MAX_SAFE_INTEGER;
  for (const { price } of prices.values()) {
    const inputTokens = inputTokensFor(price, request);
    const rates = ratesFor(price, inputTokens);
    const inputUsd = (inputTokens * Math.max(rates.input, rates.cacheWrite, rates.cacheWrite1h)) / 1_000_000 + toolUsesCostUsd(request.serverToolUses, price);
    if (rates.output > 0) tokens = Math.min(tokens, Math.floor(((usd - inputUsd) * 1_000_000) / rates.output / request.choices));
  }
  return tokens;
}

export class Admission {
  private settled = false;
  readonly estimateUsd: number;
  /** The lowered output limit, when the budget could not pay for the one asked. */
  readonly clamp: Clamp | undefined;
  private readonly accounting: Accounting;
  private readonly key: KeyAccount;
  private readonly accounts: Account[];
  private readonly prices: Map<string, PriceMatch>;
  private readonly request: AdmissionRequest;
  private sharedReservation: SharedReservation | undefined;

  constructor(
    accounting: Accounting,
    key: KeyAccount,
    accounts: Account[],
    estimateUsd: number,
    prices: Map<string, PriceMatch>,
    request: AdmissionRequest,
    clamp: Clamp | undefined,
  ) {
    this.accounting = accounting;
    this.key = key;
    this.accounts = accounts;
    this.estimateUsd = estimateUsd;
    this.prices = prices;
    this.request = request;
    this.clamp = clamp;
  }

  /** The call also holds `reservation` of its group's budget on the shared store. */
  shared(reservation: SharedReservation): void {
    this.sharedReservation = reservation;
  }

  /**
   * Releases the reservation and books what the call really cost, at the price of `servedModel`
   * (the model the serving attempt sent upstream; the first candidate's when no attempt was made).
   */
  settle(metered: MeteredUsage | undefined, servedModel: string | undefined): Settlement {
    if (this.settled) throw new Error('admission settled twice');
    this.settled = true;
    const first = this.request.billedModels[0];
    const match = (servedModel !== undefined ? this.prices.get(servedModel) : undefined) ?? (first !== undefined ? this.prices.get(first) : undefined);
    let usage = metered?.usage;
    if (usage && !metered!.reported && usage.inputTokens + usage.cacheReadTokens + usage.cacheWriteTokens === 0) {
      // A stream cut before the provider sent its counts: its input was still processed.
      usage = { ...usage, inputTokens: Math.ceil(this.request.inputBytes / 4) };
    }
    let costUsd = 0;
    if (usage && match) {
      const input = usage.inputTokens + usage.cacheReadTokens + usage.cacheWriteTokens + usage.cacheWrite1hTokens;
      costUsd = costOf(usage, ratesFor(match.price, input));
    }
    for (const account of this.accounts) {
      account.reservedUsd = Math.max(0, account.reservedUsd - this.estimateUsd);
      account.inFlight--;
      account.spentUsd += costUsd;
    }
    // The host's own ledger first: it is the durable record the shared store is restored from.
    this.accounting.recordSpend(this.key, costUsd);
    this.sharedReservation?.settle(costUsd);
    if (usage) {
      const tokens = usage.inputTokens + usage.outputTokens + usage.cacheReadTokens + usage.cacheWriteTokens + usage.cacheWrite1hTokens;
      this.key.rates.addTokens(tokens);
      this.accounting.addGroupTokens(this.key.group, tokens);
    }
    this.accounting.released();
    return {
      usage: usage ?? (match ? { ...ZERO_USAGE } : undefined),
      usageReported: metered?.reported,
      costUsd,
      priceSource: match?.source,
      priceEntry: match?.entry,
    };
  }
}

function storeError(error: unknown): Error {
  if (!(error instanceof StoreUnavailable)) return error as Error;
  return new GatewayError(
    'store_unavailable',
    `the shared budget store cannot be reached (${error.message}); calls of groups with a shared budget wait for it`,
    {
      'retry-after': '2',
    },
  );
}

/** A group over its `limit` (on this host, or `where` says across its hosts). */
function groupRateLimited(group: string, rates: GroupRates, limit: 'rpm' | 'tpm', waitMs: number, where: string): GatewayError {
  return rateLimited(`group ${group} allows ${rates[limit]} ${limit === 'rpm' ? 'requests' : 'tokens'} per minute${where}`, waitMs);
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
