// Git smart HTTP and the GitHub REST API through a key's socket. Upstreams come from configuration
// only; the client's path names a repository, never a host. Each request is checked against the
// key's GitHub scope before anything goes upstream, the client's credentials are stripped and the
// host's token injected, and bodies stream both ways (a push's packfile is never buffered).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Transform, pipeline, type TransformCallback } from 'node:stream';
import type { CallRecord } from '../metering/call-record.ts';
import { GatewayError } from '../wire/errors.ts';
import { headersForUpstream } from '../wire/headers.ts';
import { Exchange, type ExchangeFields } from '../http/exchange.ts';
import type { PathHandler, RequestLine } from '../http/handler.ts';
import type { KeyRecord } from '../keys/store.ts';
import { createDispatcher, parseBaseUrl, upstreamTimeouts, type NetworkOptions, type Upstream, type UpstreamTimeouts } from '../upstream/providers.ts';
import { relay } from '../upstream/relay.ts';
import { authorize, classifyApi, classifyGit, GitHubRefusal, type GitHubAccess } from './scope.ts';
import type { GitHubScope } from '../keys/limits.ts';
import { checkHostName, httpUrl } from '../util/validation.ts';

/** `createGateway({ github })`: where GitHub is, and the host's token. */
export interface GitHubOptions {
  /** Git smart HTTP upstream. Default https://github.com (GitHub Enterprise: https://HOST). */
  webUrl?: string;
  /** REST API upstream, may carry a path prefix. Default https://api.github.com (Enterprise: https://HOST/api/v3). */
  apiUrl?: string;
  /** The name clients use in their URLs (`https://HOST/OWNER/REPO`), the `<host>` of `/git/<host>/`.
   * Default: the host of `webUrl`. */
  host?: string;
  /** The real token (a PAT, an app installation token, `gh auth token`). Never given to a container. */
  token?: string;
  timeouts?: UpstreamTimeouts;
}

/** Path prefixes on the socket: `/git/<host>/OWNER/REPO.git/...` and `/github-api/...`. */
export const GIT_PREFIX = '/git/';
export const API_PREFIX = '/github-api';

export interface GitHubRelay {
  readonly host: string;
  readonly web: Upstream;
  readonly api: Upstream;
  readonly token: string | undefined;
  close(): Promise<void>;
}

function upstreamFor(name: string, raw: string, timeouts: UpstreamTimeouts | undefined, network: NetworkOptions | undefined): Upstream {
  const merged = upstreamTimeouts(timeouts);
  return {
    name: name === 'webUrl' ? 'github' : 'github-api',
    // Only the relay's plumbing is used: errors are answered in git's or GitHub's own shape.
    kind: 'openai',
    dialect: 'openai',
    ...parseBaseUrl(raw, `github.${name}`),
    credentials: [],
    dropBetas: new Set(),
    timeouts: merged,
    dispatcher: createDispatcher(merged.connectMs, network),
  };
}

export function createGitHubRelay(options: GitHubOptions, network?: NetworkOptions): GitHubRelay {
  const webUrl = options.webUrl ?? 'https://github.com';
  const host = checkHostName(options.host ?? httpUrl(webUrl, 'github.webUrl').host, 'github.host');
  const apiUrl = options.apiUrl ?? 'https://api.github.com';
  httpUrl(apiUrl, 'github.apiUrl'); // before any pool is opened
  const web = upstreamFor('webUrl', webUrl, options.timeouts, network);
  const api = upstreamFor('apiUrl', apiUrl, options.timeouts, network);
  return {
    host,
    web,
    api,
    token: options.token || undefined,
    async close() {
      await Promise.all([web.dispatcher.close(), api.dispatcher.close()].map((p) => p.catch(() => undefined)));
    },
  };
}

function isGitHubPath(path: string): boolean {
  return path.startsWith(GIT_PREFIX) || path === API_PREFIX || path.startsWith(`${API_PREFIX}/`);
}

/** The socket's git and GitHub API paths, for the request handler; `relay()` is the one configured now. */
export function gitHubPathHandler(relay: () => GitHubRelay | undefined): PathHandler {
  return {
    matches: isGitHubPath,
    handle: (call, req, res, started) =>
      handleGitHub({ relay: relay(), line: call.line, key: call.key, scope: call.limits.github, onCall: call.onCall }, req, res, started),
  };
}

interface GitHubCall {
  relay: GitHubRelay | undefined;
  line: RequestLine;
  key: KeyRecord;
  scope: GitHubScope | undefined;
  onCall(record: CallRecord): void;
}

/** Serves one request whose path `isGitHubPath`. */
function handleGitHub(call: GitHubCall, req: IncomingMessage, res: ServerResponse, started: number): void {
  const { path, query, method } = call.line;
  const isGit = path.startsWith(GIT_PREFIX);
  const record = new GitHubRecord(call, req, res, path, isGit, started);
  let access: GitHubAccess;
  try {
    const { relay: github } = call;
    if (!github) throw new GatewayError('provider_not_configured', 'this gateway has no GitHub upstream configured');
    if (isGit) {
      const rest = path.slice(GIT_PREFIX.length);
      const slash = rest.indexOf('/');
      const host = slash === -1 ? rest : rest.slice(0, slash);
      if (host.toLowerCase() !== github.host.toLowerCase()) throw new GitHubRefusal(404, `this gateway relays git for ${github.host} only`);
      access = classifyGit(method, slash === -1 ? '' : rest.slice(slash), query);
    } else {
      access = classifyApi(method, path.slice(API_PREFIX.length), query);
    }
    record.repo = access.repo;
    record.service = access.kind === 'git' ? access.service : undefined;
    authorize(call.scope, access);
    if (!github.token) throw new GatewayError('provider_not_configured', 'this gateway has no GitHub token configured');
    forward(github, access, req, res, record);
  } catch (error) {
    if (error instanceof GitHubRefusal) {
      record.repo ??= error.repo;
      record.service ??= error.service;
      const failure = new GatewayError(error.status === 403 ? 'github_not_allowed' : 'not_found', error.message);
      answer(res, isGit, error.status, failure);
      record.finish('rejected', error.status, failure);
      return;
    }
    if (!(error instanceof GatewayError)) throw error;
    const status = error.statusFor('openai');
    answer(res, isGit, status, error);
    record.finish('rejected', status, error);
  }
}

function forward(github: GitHubRelay, access: GitHubAccess, req: IncomingMessage, res: ServerResponse, record: GitHubRecord): void {
  const headers = headersForUpstream(req.headers);
  // Nothing is metered here: the client's own encoding preference goes through.
  if (req.headers['accept-encoding'] !== undefined) headers['accept-encoding'] = req.headers['accept-encoding'];
  else delete headers['accept-encoding'];
  const token = github.token!;
  headers.authorization = access.kind === 'git' ? `Basic ${Buffer.from(`x-access-token:${token}`).toString('base64')}` : `Bearer ${token}`;
  let body: Transform | null = null;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    const length = req.headers['content-length'];
    if (length !== undefined && req.headers['transfer-encoding'] === undefined) headers['content-length'] = length;
    // Counts the bytes as they pass; pipe() keeps the back-pressure from the upstream to the client.
    body = new ByteCounter((n) => (record.requestBytes += n));
    pipeline(req, body, () => undefined);
  }
  relay({
    upstream: access.kind === 'git' ? github.web : github.api,
    method: req.method ?? 'GET',
    pathAndQuery: access.upstreamPath,
    headers,
    body,
    res,
    observer: record,
    sendError: (r, error) => answer(r, access.kind === 'git', error.statusFor('openai'), error),
    // A 401 from upstream (a bad host token) must not make git or gh ask the container for a password.
    rewriteResponseHeaders: (forClient) => delete forClient['www-authenticate'],
  });
}

class ByteCounter extends Transform {
  private readonly count: (n: number) => void;
  constructor(count: (n: number) => void) {
    super();
    this.count = count;
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.count(chunk.length);
    callback(null, chunk);
  }
}

/**
 * The gateway's own answers: plain text for git (which shows it as `remote: ...` lines), GitHub's
 * `{ message }` JSON for the API.
 */
function answer(res: ServerResponse, isGit: boolean, status: number, error: GatewayError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = isGit ? `gateway: ${error.message}\n` : JSON.stringify({ message: `gateway: ${error.message}`, status: String(status) });
  res.writeHead(status, {
    'content-type': isGit ? 'text/plain; charset=utf-8' : 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'x-gateway-error': error.kind,
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

/** One audit record per git or API call: repository, service, status, bytes, latency; cost 0. */
class GitHubRecord extends Exchange {
  repo: string | undefined;
  service: string | undefined;
  private readonly call: GitHubCall;
  private readonly isGit: boolean;

  constructor(call: GitHubCall, req: IncomingMessage, res: ServerResponse, path: string, isGit: boolean, started: number) {
    super(call.key, req, res, path, started, ['x-github-request-id']);
    this.call = call;
    this.isGit = isGit;
  }

  protected report(fields: ExchangeFields): void {
    this.call.onCall({
      ...fields,
      dialect: 'github',
      endpoint: this.isGit ? 'git' : 'github_api',
      repo: this.repo,
      service: this.service,
      upstream: this.isGit ? 'github' : 'github-api',
      attempts: fields.outcome === 'rejected' ? 0 : 1,
      stream: this.isGit,
      costUsd: 0,
    });
  }
}
