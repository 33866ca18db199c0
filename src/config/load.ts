// The gateway's configuration: one TOML file, validated at start with errors that name the file and
// the field, and defaults that need no file at all. Credentials are never literals here: each names
// where to read one (an env var, a file, or a command), so the config can be shared and logged.
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import type { AuditOptions } from '../metering/audit.ts';
import { parseDuration } from '../util/duration.ts';
import { checked, dropUndefined, httpUrl, ValidationError } from '../util/validation.ts';
import { parseGitHubSection, type GitHubSource } from './github.ts';
import type { Owner } from '../keys/store.ts';
import { validateServerTools, type EgressEntry, type KeyLimits, type ServerToolClass } from '../keys/limits.ts';
import type { Price, PriceTable } from '../metering/pricing.ts';
import type { PerUsePrices } from '../metering/server-tools.ts';
import type { RetryPolicy } from '../upstream/retry.ts';
import type { RouteConfig } from '../upstream/router.ts';
import { PROVIDER_KINDS, type UpstreamKind } from '../upstream/providers.ts';
import { BEDROCK_PROFILE_PREFIXES } from '../wire/claude-models.ts';
import type { CredentialSource, ProviderSource } from './credentials.ts';
import { EgressPolicy } from '../egress/policy.ts';
import type { EgressOptions } from '../egress/proxy.ts';
import { validateEgressResolverOptions } from '../egress/resolve.ts';
import { checkService, isServiceName, type CredentialInjection } from '../services/service.ts';
import type { ServiceSource } from './services.ts';
import type { GroupRates } from '../metering/accounting.ts';
import type { StoreOptions } from '../gateway.ts';
import { type ListenAddress, parseListenAddress } from '../util/listen.ts';

export interface GatewayConfig {
  /** The file this came from, if any. */
  file?: string;
  stateDir: string;
  providers: Record<string, ProviderSource>;
  routes: RouteConfig[];
  retry: Partial<RetryPolicy>;
  /** Outbound proxy URL and a PEM file of extra CAs. */
  network: { proxyUrl?: string; caFile?: string };
  defaultLimits: KeyLimits;
  /** Default key lifetime for `keys mint` and `run`. */
  defaultTtlMs?: number;
  /** `limits.budget_wait`: how long a call waits for budget held by calls in flight. */
  budgetWaitMs?: number;
  groupBudgets: Record<string, number>;
  groupModels: Record<string, string[]>;
  /** `[group_server_tools]`: the server tool classes each group's keys may use. */
  groupServerTools: Record<string, ServerToolClass[]>;
  /** `[server_tool_prices]`: USD per use. */
  serverToolPrices: Partial<PerUsePrices>;
  prices: PriceTable;
  unknownModelPrice?: Price | 'deny';
  socketOwner?: Owner;
  audit: AuditOptions;
  /** How long shutdown waits for streams in flight. */
  drainMs: number;
  /** `[github]`: git smart HTTP and the REST API upstreams, and where the token comes from. */
  github?: GitHubSource;
  /** `[egress]`: presets, each group's allowlist, pinned hosts, DNS servers, timeouts (docs/egress.md). */
  egress: EgressOptions;
  /** `[services.NAME]`: HTTP services and MCP servers, and where each one's token comes from (docs/services.md). */
  services: Record<string, ServiceSource>;
  /** `[group_rates.NAME]`: requests and tokens per minute per group. */
  groupRates: Record<string, GroupRates>;
  /** `[store]` (or GATEWAY_STORE_URL): budgets and rates shared with other gateways (docs/scale-out.md). */
  store?: StoreOptions;
  /** `[telemetry]`: Prometheus metrics, OpenTelemetry traces, the live page (docs/telemetry.md). */
  telemetry: TelemetryConfig;
}

/** Where the daemon's telemetry goes; each part is off unless set. */
export interface TelemetryConfig {
  metricsListen?: ListenAddress;
  /** Per-key series in the metrics (bounded). */
  metricsKeyLabels?: boolean;
  /** OTLP/HTTP traces endpoint; `true` when only the OTEL_* env vars name it. */
  otlpEndpoint?: string;
  otlp?: boolean;
  /** The share of calls exported as spans (default 1). */
  otlpSampleRatio?: number;
  uiListen?: ListenAddress;
  /** The live page's token (required off loopback), read from a file or env var. */
  uiToken?: CredentialSource;
}

/** A config file that cannot be used: its message names the file and, when there is one, the field. */
export class ConfigError extends ValidationError {
  override readonly name = 'ConfigError';
  readonly file: string;
  constructor(file: string, field: string | undefined, problem: string) {
    super(field ?? '', problem);
    this.file = file;
    this.message = field ? `${file}: ${field}: ${problem}` : `${file}: ${problem}`;
  }
}

const CLAUDE_CREDENTIALS_FILE = path.join(homedir(), '.claude', '.credentials.json');

function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_STATE_HOME || path.join(homedir(), '.local', 'state');
  return path.join(base, 'llm-gateway');
}

/** Sources used when the config names none: the standard env vars, then Claude Code's own login. */
function defaultProviders(): GatewayConfig['providers'] {
  return {
    anthropic: {
      apiKey: [{ env: 'ANTHROPIC_API_KEY' }],
      apiKeys: [],
      oauthToken: [{ env: 'CLAUDE_CODE_OAUTH_TOKEN' }, { file: CLAUDE_CREDENTIALS_FILE }],
    },
    openai: { apiKey: [{ env: 'OPENAI_API_KEY' }], apiKeys: [], oauthToken: [] },
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
      throw new ConfigError(file, undefined, `cannot read the config file (${(error as NodeJS.ErrnoException).code ?? error})`);
    }
    try {
      raw = parseToml(text) as Record<string, unknown>;
    } catch (error) {
      throw new ConfigError(file, undefined, `not valid TOML: ${(error as Error).message.split('\n')[0]}`);
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

  /** A check shared with the library (util/validation.ts, keys/limits.ts), its error re-worded as this file's. */
  private check<T>(run: () => T): T {
    return checked(run, (field, message) => this.fail(field, message));
  }

  private fail(field: string, message: string): never {
    throw new ConfigError(this.file, field, message);
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
    const root = this.table(raw, '', [
      'state_dir',
      'providers',
      'routes',
      'retry',
      'network',
      'limits',
      'budgets',
      'group_models',
      'group_server_tools',
      'server_tool_prices',
      'prices',
      'unknown_model',
      'sockets',
      'audit',
      'server',
      'github',
      'egress',
      'services',
      'group_rates',
      'store',
      'telemetry',
    ]);
    const stateDir = this.string(root.state_dir, 'state_dir');
    const egress = this.egress(root.egress);
    const limits = this.limits(root.limits);
    if (limits.defaultLimits.egress) {
      const entries = limits.defaultLimits.egress;
      this.check(() => new EgressPolicy(egress).check(entries, 'limits.egress'));
    }
    // Named providers; `anthropic` and `openai` keep their env defaults unless the file names them.
    const providers: Record<string, ProviderSource> = defaultProviders();
    for (const [name, value] of Object.entries(this.table(root.providers, 'providers', []))) {
      if (!/^[A-Za-z0-9_-]+$/.test(name)) this.fail(`providers.${name}`, 'a provider name may hold letters, digits, - and _');
      providers[name] = this.provider(value, `providers.${name}`, name);
    }
    return {
      stateDir: stateDir ? path.resolve(expandHome(stateDir)) : defaultStateDir(),
      providers,
      routes: this.routes(root.routes, providers),
      retry: this.retry(root.retry),
      network: this.network(root.network),
      ...limits,
      egress,
      groupBudgets: this.budgets(root.budgets),
      groupModels: Object.fromEntries(
        Object.entries(this.table(root.group_models, 'group_models', [])).map(([group, globs]) => [group, this.strings(globs, `group_models.${group}`)!]),
      ),
      groupServerTools: Object.fromEntries(
        Object.entries(this.table(root.group_server_tools, 'group_server_tools', [])).map(([group, classes]) => [
          group,
          this.serverTools(classes, `group_server_tools.${group}`)!,
        ]),
      ),
      serverToolPrices: this.serverToolPrices(root.server_tool_prices),
      prices: this.prices(root.prices),
      unknownModelPrice: this.unknownModel(root.unknown_model),
      socketOwner: this.sockets(root.sockets),
      audit: this.audit(root.audit),
      github: parseGitHubSection(root.github, (field, message) => this.fail(field, message)),
      services: Object.fromEntries(Object.entries(this.table(root.services, 'services', [])).map(([name, value]) => [name, this.service(name, value)])),
      drainMs: this.duration(this.table(root.server, 'server', ['drain_timeout']).drain_timeout, 'server.drain_timeout') ?? 10_000,
      groupRates: Object.fromEntries(
        Object.entries(this.table(root.group_rates, 'group_rates', [])).map(([group, value]) => {
          const table = this.table(value, `group_rates.${group}`, ['rpm', 'tpm']);
          return [
            group,
            dropUndefined({ rpm: this.number(table.rpm, `group_rates.${group}.rpm`, true), tpm: this.number(table.tpm, `group_rates.${group}.tpm`, true) }),
          ];
        }),
      ),
      store: this.store(root.store),
      telemetry: this.telemetry(root.telemetry),
    };
  }

  /** `[telemetry]`: each part's listener or endpoint; a mistake names the field. */
  private telemetry(value: unknown): TelemetryConfig {
    const table = this.table(value, 'telemetry', [
      'metrics_listen',
      'metrics_key_labels',
      'otlp_endpoint',
      'otlp',
      'otlp_sample_ratio',
      'ui_listen',
      'ui_token_env',
      'ui_token_file',
    ]);
    const sampleRatio = this.number(table.otlp_sample_ratio, 'telemetry.otlp_sample_ratio');
    if (sampleRatio !== undefined && sampleRatio > 1) this.fail('telemetry.otlp_sample_ratio', 'must be from 0 to 1');
    const listen = (name: string) => {
      const text = this.string(table[name], `telemetry.${name}`);
      if (text === undefined) return undefined;
      return this.check(() => parseListenAddress(text, `telemetry.${name}`));
    };
    const flag = (name: string) => {
      const raw = table[name];
      if (raw !== undefined && typeof raw !== 'boolean') this.fail(`telemetry.${name}`, 'must be true or false');
      return raw as boolean | undefined;
    };
    const otlpEndpoint = this.string(table.otlp_endpoint, 'telemetry.otlp_endpoint');
    if (otlpEndpoint !== undefined) this.check(() => httpUrl(otlpEndpoint, 'telemetry.otlp_endpoint'));
    const tokenEnv = this.string(table.ui_token_env, 'telemetry.ui_token_env');
    const tokenFile = this.string(table.ui_token_file, 'telemetry.ui_token_file');
    return dropUndefined({
      metricsListen: listen('metrics_listen'),
      metricsKeyLabels: flag('metrics_key_labels'),
      otlpEndpoint,
      otlp: flag('otlp'),
      otlpSampleRatio: sampleRatio,
      uiListen: listen('ui_listen'),
      uiToken: tokenEnv ? { env: tokenEnv } : tokenFile ? { file: path.resolve(expandHome(tokenFile)) } : undefined,
    }) as TelemetryConfig;
  }

  /** `[store]`, or GATEWAY_STORE_URL alone: the shared store's address and behaviour. */
  private store(value: unknown): StoreOptions | undefined {
    const table = this.table(value, 'store', ['url', 'host_id', 'fail_open_rates', 'lease', 'publish_interval']);
    const url = this.string(table.url, 'store.url') ?? (process.env.GATEWAY_STORE_URL || undefined);
    if (url === undefined) {
      if (Object.keys(table).length > 0)
        this.fail('store.url', 'is required (redis://HOST:PORT, rediss://..., or a Unix socket path), or set GATEWAY_STORE_URL');
      return undefined;
    }
    if (!/^(rediss?:\/\/|unix:\/\/|\/)/.test(url)) this.fail('store.url', 'must be redis://..., rediss://..., unix:///path or an absolute socket path');
    const failOpen = table.fail_open_rates;
    if (failOpen !== undefined && typeof failOpen !== 'boolean') this.fail('store.fail_open_rates', 'must be true or false');
    return dropUndefined({
      url,
      hostId: this.string(table.host_id, 'store.host_id'),
      failOpenRates: failOpen as boolean | undefined,
      leaseMs: this.duration(table.lease, 'store.lease'),
      publishIntervalMs: this.duration(table.publish_interval, 'store.publish_interval'),
    }) as StoreOptions;
  }

  private provider(value: unknown, field: string, name: string): ProviderSource {
    const sources = ['api_key_env', 'api_key_file', 'api_key_command', 'api_keys'];
    const oauth = ['oauth_token_env', 'oauth_token_file', 'oauth_token_command'];
    const cloudFields = ['region', 'inference_profile', 'aws_profile', 'project_id', 'credentials_file'];
    const table = this.table(value, field, ['kind', 'base_url', ...sources, ...oauth, 'drop_betas', 'api_version', ...cloudFields, 'timeouts']);
    const kindText = this.string(table.kind, `${field}.kind`);
    if (kindText !== undefined && !PROVIDER_KINDS.includes(kindText as UpstreamKind)) {
      this.fail(`${field}.kind`, `must be one of ${PROVIDER_KINDS.join(', ')}, got "${kindText}"`);
    }
    const kind = (kindText ?? (name === 'anthropic' || name === 'openai' ? name : undefined)) as UpstreamKind | undefined;
    if (!kind) this.fail(`${field}.kind`, 'is required for a provider not named anthropic or openai');
    const baseUrl = this.string(table.base_url, `${field}.base_url`);
    if (baseUrl !== undefined) {
      this.check(() => httpUrl(baseUrl, `${field}.base_url`));
    } else if (kind === 'azure-openai') {
      this.fail(`${field}.base_url`, 'is required for azure-openai (https://RESOURCE.openai.azure.com/openai)');
    } else if (kind === 'foundry') {
      this.fail(`${field}.base_url`, 'is required for foundry (https://RESOURCE.services.ai.azure.com/anthropic)');
    }
    const cloud = this.cloudPlace(table, field, kind!);
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
    const oauthToken = read('oauth_token');
    if (oauthToken.length > 0 && kind !== 'anthropic') this.fail(`${field}.oauth_token_*`, 'OAuth tokens are for Anthropic providers only');
    const apiKeys: CredentialSource[] = [];
    if (table.api_keys !== undefined) {
      if (!Array.isArray(table.api_keys)) this.fail(`${field}.api_keys`, 'must be an array of { env = ... } / { file = ... } / { command = ... }');
      (table.api_keys as unknown[]).forEach((entry, i) => {
        const item = this.table(entry, `${field}.api_keys[${i}]`, ['env', 'file', 'command']);
        const set = Object.entries(item).filter(([, v]) => v !== undefined);
        if (set.length !== 1) this.fail(`${field}.api_keys[${i}]`, 'needs exactly one of env, file, command');
        const [sourceKind, raw] = set[0]!;
        const text = this.string(raw, `${field}.api_keys[${i}].${sourceKind}`)!;
        apiKeys.push(sourceKind === 'file' ? { file: path.resolve(expandHome(text)) } : sourceKind === 'env' ? { env: text } : { command: text });
      });
    }
    // Bedrock without an API key signs with the host's AWS identity; Vertex always uses Google's.
    if (apiKey.length + apiKeys.length + oauthToken.length === 0 && kind !== 'bedrock' && kind !== 'vertex') {
      this.fail(field, 'names no credential: set api_key_env, api_key_file, api_key_command, api_keys or (Anthropic) an oauth_token_* field');
    }
    const timeouts = this.table(table.timeouts, `${field}.timeouts`, ['connect', 'first_byte', 'idle', 'total']);
    return {
      kind,
      baseUrl,
      apiKey,
      apiKeys,
      oauthToken,
      dropBetas: this.strings(table.drop_betas, `${field}.drop_betas`),
      apiVersion: this.string(table.api_version, `${field}.api_version`),
      cloud,
      timeouts: dropUndefined({
        connectMs: this.duration(timeouts.connect, `${field}.timeouts.connect`),
        firstByteMs: this.duration(timeouts.first_byte, `${field}.timeouts.first_byte`),
        idleMs: this.duration(timeouts.idle, `${field}.timeouts.idle`),
        totalMs: this.duration(timeouts.total, `${field}.timeouts.total`),
      }),
    };
  }

  /** A Bedrock or Vertex provider's region, project and identity; a mistake names the field. */
  private cloudPlace(table: Record<string, unknown>, field: string, kind: UpstreamKind): ProviderSource['cloud'] {
    const text = (name: string) => this.string(table[name], `${field}.${name}`);
    const only = (name: string, kinds: UpstreamKind[]) => {
      if (table[name] !== undefined && !kinds.includes(kind)) this.fail(`${field}.${name}`, `is for ${kinds.join(' and ')} providers only`);
    };
    only('region', ['bedrock', 'vertex']);
    only('inference_profile', ['bedrock']);
    only('aws_profile', ['bedrock']);
    only('project_id', ['vertex']);
    only('credentials_file', ['vertex']);
    if (kind !== 'bedrock' && kind !== 'vertex') return undefined;
    const region = text('region');
    if (!region) this.fail(`${field}.region`, `is required for ${kind} (${kind === 'bedrock' ? 'us-east-1' : 'us-east5, global'}, ...)`);
    if (!/^[a-z0-9-]{1,32}$/.test(region!)) this.fail(`${field}.region`, `must be a region name (us-east-1, europe-west1, global), got "${region}"`);
    const profile = text('inference_profile');
    if (profile !== undefined && !BEDROCK_PROFILE_PREFIXES.has(profile)) {
      this.fail(`${field}.inference_profile`, `must be one of ${[...BEDROCK_PROFILE_PREFIXES].join(', ')}, got "${profile}"`);
    }
    const projectId = text('project_id');
    if (kind === 'vertex' && !projectId) this.fail(`${field}.project_id`, 'is required for vertex');
    const file = text('credentials_file');
    return dropUndefined({
      region,
      inferenceProfile: profile,
      awsProfile: text('aws_profile'),
      projectId,
      googleCredentialsFile: file === undefined ? undefined : path.resolve(expandHome(file)),
    });
  }

  /** One `[services.NAME]`: checked whole here (as the gateway will), so a mistake names this file and the field. */
  private service(name: string, value: unknown): ServiceSource {
    const field = `services.${name}`;
    // Checked first and named as the file spells it: `[services."Bad Name"]`.
    if (!isServiceName(name)) this.fail(`services.${JSON.stringify(name)}`, 'a service name is lower-case letters, digits, "-" and "_" (at most 63)');
    const ways = ['header', 'basic_user', 'query_param'];
    const table = this.table(value, field, [
      'base_url',
      'kind',
      'token_env',
      'token_file',
      'token_command',
      ...ways,
      'prefix',
      'methods',
      'paths',
      'groups',
      'stream',
      'pass_client_auth',
      'rpm',
      'max_concurrent',
      'max_body_bytes',
      'timeouts',
    ]);
    const baseUrl = this.string(table.base_url, `${field}.base_url`);
    if (baseUrl === undefined) this.fail(`${field}.base_url`, 'is required (the service\'s URL, e.g. "https://mcp.example.com/mcp")');
    const token: CredentialSource[] = [];
    const env = this.string(table.token_env, `${field}.token_env`);
    const file = this.string(table.token_file, `${field}.token_file`);
    const command = this.string(table.token_command, `${field}.token_command`);
    if (env) token.push({ env });
    if (file) token.push({ file: path.resolve(expandHome(file)) });
    if (command) token.push({ command });
    if (token.length === 0) this.fail(field, 'names no token: set token_env, token_file or token_command');
    if (ways.filter((way) => table[way] !== undefined).length > 1) this.fail(field, 'sets more than one of header, basic_user and query_param');
    const header = this.string(table.header, `${field}.header`);
    const prefix = table.prefix === undefined ? undefined : typeof table.prefix === 'string' ? table.prefix : this.fail(`${field}.prefix`, 'must be a string');
    const basic = this.string(table.basic_user, `${field}.basic_user`);
    const query = this.string(table.query_param, `${field}.query_param`);
    if (prefix !== undefined && (basic !== undefined || query !== undefined)) this.fail(`${field}.prefix`, 'goes with header only');
    const inject: CredentialInjection | undefined =
      basic !== undefined
        ? { basic }
        : query !== undefined
          ? { query }
          : header !== undefined || prefix !== undefined
            ? { header: header ?? 'authorization', prefix: prefix ?? (header === undefined || header.toLowerCase() === 'authorization' ? 'Bearer ' : '') }
            : undefined;
    for (const flag of ['stream', 'pass_client_auth']) {
      if (table[flag] !== undefined && typeof table[flag] !== 'boolean') this.fail(`${field}.${flag}`, 'must be true or false');
    }
    const timeouts = this.table(table.timeouts, `${field}.timeouts`, ['connect', 'first_byte', 'idle', 'total']);
    const kind = this.string(table.kind, `${field}.kind`);
    const source: ServiceSource = {
      baseUrl,
      kind: kind as ServiceSource['kind'],
      token,
      inject,
      methods: this.strings(table.methods, `${field}.methods`),
      paths: this.strings(table.paths, `${field}.paths`),
      groups: this.strings(table.groups, `${field}.groups`),
      stream: table.stream as boolean | undefined,
      passClientAuth: table.pass_client_auth as boolean | undefined,
      rpm: this.number(table.rpm, `${field}.rpm`, true),
      maxConcurrent: this.number(table.max_concurrent, `${field}.max_concurrent`, true),
      maxBodyBytes: this.number(table.max_body_bytes, `${field}.max_body_bytes`, true),
      timeouts: dropUndefined({
        connectMs: this.duration(timeouts.connect, `${field}.timeouts.connect`),
        firstByteMs: this.duration(timeouts.first_byte, `${field}.timeouts.first_byte`),
        idleMs: this.duration(timeouts.idle, `${field}.timeouts.idle`),
        totalMs: this.duration(timeouts.total, `${field}.timeouts.total`),
      }),
    };
    // The library's own checks, its field names re-worded as this file spells them.
    const { token: _token, ...options } = source;
    checked(
      () => checkService(name, options),
      (failed, problem) => this.fail(`${field}.${CONFIG_SERVICE_FIELDS[failed.slice(field.length + 1)] ?? failed.slice(field.length + 1)}`, problem),
    );
    return source;
  }

  private strings(value: unknown, field: string): string[] | undefined {
    if (value === undefined) return undefined;
    if (!Array.isArray(value) || !value.every((item) => typeof item === 'string' && item.length > 0)) {
      this.fail(field, 'must be an array of non-empty strings');
    }
    return value as string[];
  }

  private routes(value: unknown, providers: Record<string, ProviderSource>): RouteConfig[] {
    if (value === undefined) return [];
    if (!Array.isArray(value)) this.fail('routes', 'must be an array of tables: [[routes]]');
    return (value as unknown[]).map((entry, i) => {
      const field = `routes[${i}]`;
      const table = this.table(entry, field, ['models', 'provider', 'rename', 'fallbacks']);
      const models = this.strings(table.models, `${field}.models`);
      if (!models || models.length === 0) this.fail(`${field}.models`, 'is required: the model names or globs this route serves');
      const provider = this.string(table.provider, `${field}.provider`);
      if (!provider) this.fail(`${field}.provider`, 'is required');
      const known = (name: string, where: string) => {
        if (!providers[name]) this.fail(where, `no provider named "${name}" (known: ${Object.keys(providers).join(', ')})`);
      };
      known(provider, `${field}.provider`);
      const fallbacks = this.strings(table.fallbacks, `${field}.fallbacks`);
      fallbacks?.forEach((fallback, j) => {
        known(fallback.split(':', 1)[0]!, `${field}.fallbacks[${j}]`);
      });
      return dropUndefined({ models, provider, rename: this.string(table.rename, `${field}.rename`), fallbacks }) as RouteConfig;
    });
  }

  private retry(value: unknown): Partial<RetryPolicy> {
    const table = this.table(value, 'retry', ['attempts', 'base_backoff', 'max_retry_after', 'failures_before_cooldown', 'cooldown']);
    const attempts = this.number(table.attempts, 'retry.attempts', true);
    if (attempts === 0) this.fail('retry.attempts', 'must be at least 1 (the first attempt)');
    return dropUndefined({
      attempts,
      baseBackoffMs: this.duration(table.base_backoff, 'retry.base_backoff'),
      maxRetryAfterMs: this.duration(table.max_retry_after, 'retry.max_retry_after'),
      failuresBeforeCooldown: this.number(table.failures_before_cooldown, 'retry.failures_before_cooldown', true),
      cooldownMs: this.duration(table.cooldown, 'retry.cooldown'),
    });
  }

  private network(value: unknown): GatewayConfig['network'] {
    const table = this.table(value, 'network', ['https_proxy', 'ca_file']);
    const proxyUrl = this.string(table.https_proxy, 'network.https_proxy');
    if (proxyUrl !== undefined && !/^https?:\/\//.test(proxyUrl)) this.fail('network.https_proxy', `must be an http(s) URL, got "${proxyUrl}"`);
    const caFile = this.string(table.ca_file, 'network.ca_file');
    return dropUndefined({ proxyUrl, caFile: caFile && path.resolve(expandHome(caFile)) });
  }

  private limits(value: unknown): { defaultLimits: KeyLimits; defaultTtlMs?: number; budgetWaitMs?: number } {
    const table = this.table(value, 'limits', [
      'budget_usd',
      'rpm',
      'tpm',
      'max_concurrent',
      'models',
      'max_body_bytes',
      'max_refusals_per_minute',
      'server_tools',
      'ttl',
      'budget_wait',
      'egress',
      'egress_max_tunnels',
      'egress_budget_bytes',
    ]);
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
      maxRefusalsPerMinute: this.number(table.max_refusals_per_minute, 'limits.max_refusals_per_minute', true),
      models,
      serverTools: this.serverTools(table.server_tools, 'limits.server_tools'),
      egress: table.egress === undefined ? undefined : this.entries(table.egress, 'limits.egress'),
      egressMaxTunnels: this.number(table.egress_max_tunnels, 'limits.egress_max_tunnels', true),
      egressBudgetBytes: this.number(table.egress_budget_bytes, 'limits.egress_budget_bytes', true),
    };
    return {
      defaultLimits: dropUndefined(limits),
      defaultTtlMs: this.duration(table.ttl, 'limits.ttl'),
      budgetWaitMs: this.duration(table.budget_wait, 'limits.budget_wait'),
    };
  }

  private serverTools(value: unknown, field: string): ServerToolClass[] | undefined {
    if (value === undefined) return undefined;
    return this.check(() => {
      validateServerTools(value, field);
      return value;
    });
  }

  /** `[egress]`, its rules compiled once here so a mistake names this file and the field. */
  private egress(value: unknown): EgressOptions {
    const table = this.table(value, 'egress', ['presets', 'groups', 'hosts', 'dns_servers', 'connect_timeout', 'idle_timeout']);
    const named = (field: string) =>
      Object.fromEntries(
        Object.entries(this.table(table[field], `egress.${field}`, [])).map(([name, entries]) => [name, this.entries(entries, `egress.${field}.${name}`)]),
      );
    const hosts = Object.fromEntries(
      Object.entries(this.table(table.hosts, 'egress.hosts', [])).map(([host, addresses]) => [
        host,
        typeof addresses === 'string' ? [addresses] : this.strings(addresses, `egress.hosts."${host}"`)!,
      ]),
    );
    const options: EgressOptions = dropUndefined({
      presets: named('presets'),
      groups: named('groups'),
      hosts,
      dnsServers: this.strings(table.dns_servers, 'egress.dns_servers'),
      connectTimeoutMs: this.duration(table.connect_timeout, 'egress.connect_timeout'),
      idleTimeoutMs: this.duration(table.idle_timeout, 'egress.idle_timeout'),
    });
    // The library names fields as GatewayOptions spells them: re-worded as this file does.
    checked(
      () => {
        validateEgressResolverOptions(options);
        return new EgressPolicy(options);
      },
      (field, problem) => this.fail(field.replace('dnsServers', 'dns_servers'), problem),
    );
    return options;
  }

  /** An egress list as written: strings and rule tables (checked against the presets by EgressPolicy). */
  private entries(value: unknown, field: string): EgressEntry[] {
    if (!Array.isArray(value)) this.fail(field, 'must be an array of hosts ("host[:port]"), preset names or rule tables { host = ..., ports = [...] }');
    return (value as unknown[]).map((entry) =>
      typeof entry === 'object' && entry !== null && !Array.isArray(entry)
        ? Object.fromEntries(
            Object.entries(entry).map(([name, item]) => [name, Array.isArray(item) ? item.map((v) => (typeof v === 'bigint' ? Number(v) : v)) : item]),
          )
        : entry,
    ) as EgressEntry[];
  }

  private serverToolPrices(value: unknown): Partial<PerUsePrices> {
    const table = this.table(value, 'server_tool_prices', ['web_search', 'web_fetch']);
    return dropUndefined({
      webSearch: this.number(table.web_search, 'server_tool_prices.web_search'),
      webFetch: this.number(table.web_fetch, 'server_tool_prices.web_fetch'),
    });
  }

  private budgets(value: unknown): Record<string, number> {
    const table = this.table(value, 'budgets', []);
    return Object.fromEntries(Object.entries(table).map(([group, usd]) => [group, this.number(usd, `budgets.${group}`)!]));
  }

  private price(value: unknown, field: string): Price {
    const table = this.table(value, field, ['input', 'output', 'cache_write', 'cache_write_1h', 'cache_read', 'max_output_tokens', 'context_tokens']);
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
    const maxOutputTokens = this.number(table.max_output_tokens, `${field}.max_output_tokens`, true);
    const contextTokens = this.number(table.context_tokens, `${field}.context_tokens`, true);
    if (maxOutputTokens !== undefined) price.maxOutputTokens = maxOutputTokens;
    if (contextTokens !== undefined) price.contextTokens = contextTokens;
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
    const table = this.table(value, 'audit', ['file', 'stdout', 'recent_per_key', 'refusal_lines_per_minute']);
    if (table.stdout !== undefined && typeof table.stdout !== 'boolean') this.fail('audit.stdout', 'must be true or false');
    if (table.file !== undefined && table.file !== false && typeof table.file !== 'string') this.fail('audit.file', 'must be a path or false');
    return {
      file: typeof table.file === 'string' ? path.resolve(expandHome(table.file)) : (table.file as false | undefined),
      stdout: table.stdout as boolean | undefined,
      recentPerKey: this.number(table.recent_per_key, 'audit.recent_per_key', true),
      refusalLinesPerMinute: this.number(table.refusal_lines_per_minute, 'audit.refusal_lines_per_minute', true),
    };
  }
}

/** The library's service fields as `[services.NAME]` spells them. */
const CONFIG_SERVICE_FIELDS: Record<string, string> = {
  baseUrl: 'base_url',
  'inject.header': 'header',
  'inject.prefix': 'prefix',
  'inject.basic': 'basic_user',
  'inject.query': 'query_param',
  maxConcurrent: 'max_concurrent',
  maxBodyBytes: 'max_body_bytes',
};

/**
 * `~/...` is the home directory; `${CREDENTIALS_DIRECTORY}/...` the directory where systemd puts a
 * unit's `LoadCredential=` files (deploy/systemd/llm-gateway.service), so a credential file can name it.
 */
function expandHome(file: string): string {
  if (file.startsWith(CREDENTIALS_PREFIX)) {
    const dir = process.env.CREDENTIALS_DIRECTORY;
    if (!dir) throw new ValidationError(file, 'CREDENTIALS_DIRECTORY is not set (systemd sets it in a unit with LoadCredential=)');
    return path.join(dir, file.slice(CREDENTIALS_PREFIX.length));
  }
  return file === '~' || file.startsWith('~/') ? path.join(homedir(), file.slice(1)) : file;
}

// biome-ignore lint/suspicious/noTemplateCurlyInString: systemd's spelling in a config file, not a template
const CREDENTIALS_PREFIX = '${CREDENTIALS_DIRECTORY}/';
