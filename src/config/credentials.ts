// Real credentials, read from where the config says (env var, file, command), and kept fresh: a
// file is re-read when it changes, and an OAuth token again as it nears expiry, so a long-running
// gateway follows the host's own token refreshes (Claude Code rewrites ~/.claude/.credentials.json).
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import type { ProviderConfig, ProvidersConfig, UpstreamKind, UpstreamTimeouts } from '../upstream/providers.ts';

/** Where one credential comes from. Exactly one field is set. */
export type CredentialSource = { env: string } | { file: string } | { command: string };

export interface ProviderSource {
  kind?: UpstreamKind;
  baseUrl?: string;
  /** Tried in order; the first that yields a value is used. */
  apiKey: CredentialSource[];
  /** More keys, each its own source, all used (spread and failover). */
  apiKeys: CredentialSource[];
  oauthToken: CredentialSource[];
  dropBetas?: string[];
  apiVersion?: string;
  /** Bedrock and Vertex: where Claude lives and whose cloud identity calls it (read by the cloud SDKs). */
  cloud?: Pick<ProviderConfig, 'region' | 'inferenceProfile' | 'awsProfile' | 'projectId' | 'googleCredentialsFile'>;
  timeouts?: UpstreamTimeouts;
}

/** Each provider's sources, by provider name. */
export type ProviderSources = Record<string, ProviderSource>;

const run = promisify(execFile);

// Re-read an OAuth token this long before it expires, then every minute until it changes.
const REFRESH_AHEAD_MS = 5 * 60_000;
const RETRY_MS = 60_000;

interface Resolved {
  value: string;
  /** Where it came from, for logs: never the value. */
  from: string;
  expiresAt?: number;
}

function describeSource(source: CredentialSource): string {
  if ('env' in source) return `env ${source.env}`;
  if ('file' in source) return `file ${source.file}`;
  return `command \`${source.command}\``;
}

async function read(source: CredentialSource): Promise<Resolved | undefined> {
  const from = describeSource(source);
  if ('env' in source) {
    const value = process.env[source.env]?.trim();
    return value ? { value, from } : undefined;
  }
  if ('file' in source) {
    let text: string;
    try {
      text = await readFile(source.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new Error(`cannot read credential ${from}: ${(error as NodeJS.ErrnoException).code}`);
    }
    return parseCredentialFile(text, from);
  }
  try {
    const { stdout } = await run('/bin/sh', ['-c', source.command], { timeout: 10_000, maxBuffer: 64 * 1024 });
    const value = stdout.trim();
    return value ? { value, from } : undefined;
  } catch (error) {
    // The command's output could hold the secret: report only how it failed.
    const { code, signal } = error as { code?: unknown; signal?: unknown };
    throw new Error(`credential ${from} failed (exit ${code ?? signal ?? 'unknown'})`);
  }
}

/** A plain token file, or Claude Code's credentials JSON (`claudeAiOauth.accessToken`, `expiresAt`). */
function parseCredentialFile(text: string, from: string): Resolved | undefined {
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) {
    try {
      const json = JSON.parse(trimmed) as { claudeAiOauth?: { accessToken?: unknown; expiresAt?: unknown } };
      const oauth = json.claudeAiOauth;
      if (typeof oauth?.accessToken === 'string' && oauth.accessToken) {
        return { value: oauth.accessToken, from, expiresAt: typeof oauth.expiresAt === 'number' ? oauth.expiresAt : undefined };
      }
      return undefined;
    } catch {
      throw new Error(`credential ${from} is not valid JSON`);
    }
  }
  const value = trimmed.split('\n', 1)[0]!.trim();
  return value ? { value, from } : undefined;
}

async function first(sources: CredentialSource[]): Promise<Resolved | undefined> {
  for (const source of sources) {
    const resolved = await read(source);
    if (resolved) return resolved;
  }
  return undefined;
}

export interface CredentialState {
  providers: ProvidersConfig;
  /** Per provider, human-readable: which source each credential came from, or that none was found. */
  summary: Record<string, string>;
  /** Earliest expiry among the credentials, if any expire. */
  expiresAt?: number;
}

export async function resolveCredentials(sources: ProviderSources): Promise<CredentialState> {
  const providers: ProvidersConfig = {};
  const summary: Record<string, string> = {};
  let expiresAt: number | undefined;
  for (const [name, source] of Object.entries(sources)) {
    const apiKey = await first(source.apiKey);
    const more = (await Promise.all(source.apiKeys.map((each) => read(each)))).filter((resolved): resolved is Resolved => resolved !== undefined);
    const oauthToken = apiKey || more.length > 0 ? undefined : await first(source.oauthToken);
    if (oauthToken?.expiresAt !== undefined) expiresAt = Math.min(expiresAt ?? Infinity, oauthToken.expiresAt);
    providers[name] = {
      kind: source.kind,
      baseUrl: source.baseUrl,
      apiKey: apiKey?.value,
      apiKeys: more.map((resolved) => resolved.value),
      oauthToken: oauthToken?.value,
      dropBetas: source.dropBetas,
      apiVersion: source.apiVersion,
      ...source.cloud,
      timeouts: source.timeouts,
    };
    const keys = [apiKey, ...more].filter((resolved): resolved is Resolved => resolved !== undefined);
    summary[name] =
      keys.length > 0
        ? `${keys.length === 1 ? 'api key' : `${keys.length} api keys`} from ${keys.map((k) => k.from).join(', ')}`
        : oauthToken
          ? `OAuth token from ${oauthToken.from}`
          : (cloudIdentity(source) ?? 'no credential found');
  }
  return { providers, summary, expiresAt };
}

/** Who signs a Bedrock or Vertex provider's calls without an API key: read by the cloud SDKs at call time. */
function cloudIdentity(source: ProviderSource): string | undefined {
  if (source.kind === 'bedrock') return `AWS credentials (${source.cloud?.awsProfile ? `profile ${source.cloud.awsProfile}` : 'default chain'})`;
  if (source.kind === 'vertex') {
    const file = source.cloud?.googleCredentialsFile;
    return `Google credentials (${file ? `file ${file}` : 'application default credentials'})`;
  }
  return undefined;
}

/**
 * Keeps credentials current: watches every credential file's directory (tools replace such files
 * by rename) and re-reads ahead of an OAuth token's expiry. Calls `onChange` with new providers.
 */
export class CredentialWatcher {
  private readonly watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private current: string;
  private sources: ProviderSources;
  private readonly onChange: (state: CredentialState) => void;
  private readonly logger: Logger;

  constructor(sources: ProviderSources, initial: CredentialState, onChange: (state: CredentialState) => void, logger: Logger) {
    this.sources = sources;
    this.current = fingerprint(initial);
    this.onChange = onChange;
    this.logger = logger;
    this.watchFiles();
    this.schedule(initial.expiresAt);
  }

  /** After a config reload: new sources, same watcher. */
  replace(sources: ProviderSources, state: CredentialState): void {
    this.close();
    this.sources = sources;
    this.current = fingerprint(state);
    this.watchFiles();
    this.schedule(state.expiresAt);
  }

  private watchFiles(): void {
    const files = Object.values(this.sources)
      .flatMap((source) => [...source.apiKey, ...source.apiKeys, ...source.oauthToken])
      .filter((source): source is { file: string } => 'file' in source)
      .map((source) => source.file);
    for (const dir of new Set(files.map((file) => path.dirname(file)))) {
      try {
        const watcher = watch(dir, (_event, name) => {
          if (name && files.some((file) => path.basename(file) === name.toString())) this.soon();
        });
        watcher.on('error', () => undefined);
        watcher.unref();
        this.watchers.push(watcher);
      } catch {
        // A directory that does not exist yet: the expiry timer still re-reads.
      }
    }
  }

  private schedule(expiresAt: number | undefined): void {
    clearTimeout(this.timer);
    if (expiresAt === undefined) return;
    const wait = Math.max(expiresAt - REFRESH_AHEAD_MS - Date.now(), RETRY_MS);
    this.timer = setTimeout(() => void this.reload(), Math.min(wait, 2_147_483_647));
    this.timer.unref();
  }

  private soon(): void {
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.reload(), 100);
    this.debounce.unref();
  }

  async reload(): Promise<void> {
    try {
      const state = await resolveCredentials(this.sources);
      const next = fingerprint(state);
      if (next !== this.current) {
        this.current = next;
        this.logger.info({ credentials: state.summary }, 'credentials changed');
        this.onChange(state);
      }
      this.schedule(state.expiresAt);
    } catch (error) {
      this.logger.warn({ err: error }, 'credential re-read failed; keeping the current ones');
      this.schedule(Date.now() + REFRESH_AHEAD_MS + RETRY_MS);
    }
  }

  close(): void {
    for (const watcher of this.watchers.splice(0)) watcher.close();
    clearTimeout(this.timer);
    clearTimeout(this.debounce);
  }
}

/** Compares credential sets without keeping a second copy of the secrets in plain text. */
function fingerprint(state: CredentialState): string {
  const material = JSON.stringify(state.providers);
  return createHash('sha256').update(material).digest('hex');
}
