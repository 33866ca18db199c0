// The gateway's configuration: one TOML file, validated at start with errors that name the file and
// the field, and defaults that need no file at all. Credentials are never literals here: each names
// where to read one (an env var, a file, or a command), so the config can be shared and logged.
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import type { AuditOptions } from './audit.ts';
import { parseDuration } from './duration.ts';
import type { Owner } from './keys.ts';
import type { KeyLimits } from './metering/accounting.ts';
import type { Price, PriceTable } from './metering/pricing.ts';

/** Where one credential comes from. Exactly one field is set. */
export type CredentialSource = { env: string } | { file: string } | { command: string };

export interface ProviderSource {
  baseUrl?: string;
  /** Tried in order; the first that yields a value is used. */
  apiKey: CredentialSource[];
  oauthToken: CredentialSource[];
}

export interface GatewayConfig {
  /** The file this came from, if any. */
  file?: string;
  stateDir: string;
  providers: { anthropic: ProviderSource; openai: ProviderSource };
  defaultLimits: KeyLimits;
  /** Default key lifetime for `keys mint` and `run`. */
  defaultTtlMs?: number;
  groupBudgets: Record<string, number>;
  prices: PriceTable;
  unknownModelPrice?: Price | 'deny';
  socketOwner?: Owner;
  audit: AuditOptions;
  /** How long shutdown waits for streams in flight. */
  drainMs: number;
}

export class ConfigError extends Error {}

export const CLAUDE_CREDENTIALS_FILE = path.join(homedir(), '.claude', '.credentials.json');

export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_STATE_HOME || path.join(homedir(), '.local', 'state');
  return path.join(base, 'llm-gateway');
}

/** Sources used when the config names none: the standard env vars, then Claude Code's own login. */
function defaultProviders(): GatewayConfig['providers'] {
  return {
    anthropic: {
      apiKey: [{ env: 'ANTHROPIC_API_KEY' }],
      oauthToken: [{ env: 'CLAUDE_CODE_OAUTH_TOKEN' }, { file: CLAUDE_CREDENTIALS_FILE }],
    },
    openai: { apiKey: [{ env: 'OPENAI_API_KEY' }], oauthToken: [] },
  };
}

/**
 * Loads the config: `file` when given (it must exist), else defaults. `stateDirOverride`
 * (`--state-dir`, `GATEWAY_STATE_DIR`) wins over the file's `state_dir`.
 */
export async function loadConfig(file: string | undefined, stateDirOverride?: string): Promise<GatewayConfig> {
  let raw: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      throw new ConfigError(`${file}: cannot read the config file (${(error as NodeJS.ErrnoException).code ?? error})`);
    }
    try {
      raw = parseToml(text) as Record<string, unknown>;
    } catch (error) {
      throw new ConfigError(`${file}: not valid TOML: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  const config = new Reader(file ?? '(defaults)').config(raw);
  if (stateDirOverride) config.stateDir = path.resolve(stateDirOverride);
  if (file) config.file = path.resolve(file);
  return config;
}

type Table = Record<string, unknown>;

/** Walks the parsed TOML, turning each field into its typed value or a ConfigError naming it. */
class Reader {
  private readonly file: string;
  constructor(file: string) {
    this.file = file;
  }

  private fail(field: string, message: string): never {
    throw new ConfigError(`${this.file}: ${field}: ${message}`);
  }

  private table(value: unknown, field: string, known: string[]): Table {
    if (value === undefined) return {};
    if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Date) {
      this.fail(field, 'must be a table');
    }
    for (const key of Object.keys(value as Table)) {
      if (known.length > 0 && !known.includes(key)) {
        this.fail(field ? `${field}.${key}` : key, `unknown field (expected one of: ${known.join(', ')})`);
      }
    }
    return value as Table;
  }

  private string(value: unknown, field: string): string | undefined {
    if (value === undefined) return undefined;
    if (typeof value !== 'string' || value.trim() === '') this.fail(field, 'must be a non-empty string');
    return value;
  }

  private number(value: unknown, field: string, integer = false): number | undefined {
    if (value === undefined) return undefined;
    if (typeof value === 'bigint') value = Number(value);
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (integer && !Number.isInteger(value))) {
      this.fail(field, `must be a non-negative ${integer ? 'integer' : 'number'}`);
    }
    return value as number;
  }

  private duration(value: unknown, field: string): number | undefined {
    if (value === undefined) return undefined;
    const ms = typeof value === 'string' || typeof value === 'number' ? parseDuration(value) : undefined;
    if (ms === undefined) this.fail(field, 'must be a duration such as "90s", "30m", "2h" or "1d"');
    return ms;
  }

  config(raw: Table): GatewayConfig {
    const root = this.table(raw, '', ['state_dir', 'providers', 'limits', 'budgets', 'prices', 'unknown_model', 'sockets', 'audit', 'server']);
    const stateDir = this.string(root.state_dir, 'state_dir');
    const providers = this.table(root.providers, 'providers', ['anthropic', 'openai']);
    const defaults = defaultProviders();
    return {
      stateDir: stateDir ? path.resolve(expandHome(stateDir)) : defaultStateDir(),
      providers: {
        anthropic: providers.anthropic === undefined ? defaults.anthropic : this.provider(providers.anthropic, 'providers.anthropic', true),
        openai: providers.openai === undefined ? defaults.openai : this.provider(providers.openai, 'providers.openai', false),
      },
      ...this.limits(root.limits),
      groupBudgets: this.budgets(root.budgets),
      prices: this.prices(root.prices),
      unknownModelPrice: this.unknownModel(root.unknown_model),
      socketOwner: this.sockets(root.sockets),
      audit: this.audit(root.audit),
      drainMs: this.duration(this.table(root.server, 'server', ['drain_timeout']).drain_timeout, 'server.drain_timeout') ?? 10_000,
    };
  }

  private provider(value: unknown, field: string, anthropic: boolean): ProviderSource {
    const sources = ['api_key_env', 'api_key_file', 'api_key_command'];
    const oauth = ['oauth_token_env', 'oauth_token_file', 'oauth_token_command'];
    const table = this.table(value, field, ['base_url', ...sources, ...(anthropic ? oauth : [])]);
    const baseUrl = this.string(table.base_url, `${field}.base_url`);
    if (baseUrl !== undefined) {
      let url: URL | undefined;
      try {
        url = new URL(baseUrl);
      } catch {
        // reported below
      }
      if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) this.fail(`${field}.base_url`, `must be an http(s) URL, got "${baseUrl}"`);
      if (url.username || url.password || url.search) this.fail(`${field}.base_url`, 'must not carry credentials or a query');
    }
    const read = (prefix: string): CredentialSource[] => {
      const out: CredentialSource[] = [];
      const env = this.string(table[`${prefix}_env`], `${field}.${prefix}_env`);
      const file = this.string(table[`${prefix}_file`], `${field}.${prefix}_file`);
      const command = this.string(table[`${prefix}_command`], `${field}.${prefix}_command`);
      if (env) out.push({ env });
      if (file) out.push({ file: path.resolve(expandHome(file)) });
      if (command) out.push({ command });
      return out;
    };
    const apiKey = read('api_key');
    const oauthToken = anthropic ? read('oauth_token') : [];
    if (apiKey.length + oauthToken.length === 0) {
      this.fail(field, `names no credential: set ${anthropic ? 'api_key_env, api_key_file, api_key_command or an oauth_token_* field' : 'api_key_env, api_key_file or api_key_command'}`);
    }
    return { baseUrl, apiKey, oauthToken };
  }

  private limits(value: unknown): { defaultLimits: KeyLimits; defaultTtlMs?: number } {
    const table = this.table(value, 'limits', ['budget_usd', 'rpm', 'tpm', 'max_concurrent', 'models', 'max_body_bytes', 'ttl']);
    let models: string[] | undefined;
    if (table.models !== undefined) {
      if (!Array.isArray(table.models) || !table.models.every((m) => typeof m === 'string' && m.length > 0)) {
        this.fail('limits.models', 'must be an array of model globs, e.g. ["claude-*", "gpt-5*"]');
      }
      models = table.models as string[];
    }
    const limits: KeyLimits = {
      budgetUsd: this.number(table.budget_usd, 'limits.budget_usd'),
      rpm: this.number(table.rpm, 'limits.rpm', true),
      tpm: this.number(table.tpm, 'limits.tpm', true),
      maxConcurrent: this.number(table.max_concurrent, 'limits.max_concurrent', true),
      maxBodyBytes: this.number(table.max_body_bytes, 'limits.max_body_bytes', true),
      models,
    };
    return {
      defaultLimits: Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined)),
      defaultTtlMs: this.duration(table.ttl, 'limits.ttl'),
    };
  }

  private budgets(value: unknown): Record<string, number> {
    const table = this.table(value, 'budgets', []);
    return Object.fromEntries(Object.entries(table).map(([group, usd]) => [group, this.number(usd, `budgets.${group}`)!]));
  }

  private price(value: unknown, field: string): Price {
    const table = this.table(value, field, ['input', 'output', 'cache_write', 'cache_write_1h', 'cache_read']);
    const input = this.number(table.input, `${field}.input`);
    const output = this.number(table.output, `${field}.output`);
    if (input === undefined || output === undefined) this.fail(field, 'needs both input and output (USD per million tokens)');
    const price: Price = { input, output };
    const cacheWrite = this.number(table.cache_write, `${field}.cache_write`);
    const cacheWrite1h = this.number(table.cache_write_1h, `${field}.cache_write_1h`);
    const cacheRead = this.number(table.cache_read, `${field}.cache_read`);
    if (cacheWrite !== undefined) price.cacheWrite = cacheWrite;
    if (cacheWrite1h !== undefined) price.cacheWrite1h = cacheWrite1h;
    if (cacheRead !== undefined) price.cacheRead = cacheRead;
    return price;
  }

  private prices(value: unknown): PriceTable {
    const table = this.table(value, 'prices', []);
    return Object.fromEntries(Object.entries(table).map(([model, price]) => [model, this.price(price, `prices."${model}"`)]));
  }

  private unknownModel(value: unknown): Price | 'deny' | undefined {
    if (value === undefined) return undefined;
    if (value === 'deny') return 'deny';
    if (typeof value === 'string') this.fail('unknown_model', 'must be "deny" or a price table { input = ..., output = ... }');
    return this.price(value, 'unknown_model');
  }

  private sockets(value: unknown): Owner | undefined {
    const table = this.table(value, 'sockets', ['owner_uid', 'owner_gid']);
    const uid = this.number(table.owner_uid, 'sockets.owner_uid', true);
    const gid = this.number(table.owner_gid, 'sockets.owner_gid', true);
    if (uid === undefined && gid === undefined) return undefined;
    return { uid: uid ?? gid!, gid: gid ?? uid! };
  }

  private audit(value: unknown): AuditOptions {
    const table = this.table(value, 'audit', ['file', 'stdout', 'recent_per_key']);
    if (table.stdout !== undefined && typeof table.stdout !== 'boolean') this.fail('audit.stdout', 'must be true or false');
    if (table.file !== undefined && table.file !== false && typeof table.file !== 'string') this.fail('audit.file', 'must be a path or false');
    return {
      file: typeof table.file === 'string' ? path.resolve(expandHome(table.file)) : (table.file as false | undefined),
      stdout: table.stdout as boolean | undefined,
      recentPerKey: this.number(table.recent_per_key, 'audit.recent_per_key', true),
    };
  }
}

function expandHome(file: string): string {
  return file === '~' || file.startsWith('~/') ? path.join(homedir(), file.slice(1)) : file;
}
