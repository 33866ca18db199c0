// A local stand-in for GitHub: bare repositories served by the real `git http-backend` (a CGI run
// from node:http) behind Basic auth with the real token, plus a small REST API under /api/v3 that
// wants `Authorization: Bearer <token>`. It records every request it sees, so tests can tell what
// reached the upstream and what the gateway refused before.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { createGateway, type CallRecord, type Gateway } from '../../src/index.ts';

export const REAL_GITHUB_TOKEN = 'ghp_realGitHubToken5c1e9a7b3d';

export interface SeenRequest {
  method: string;
  url: string;
  /** The credential was the real token, in the form this route wants. */
  authorized: boolean;
  /** Every header as received (tests check that client credentials were stripped). */
  headers: http.IncomingHttpHeaders;
  bodyBytes: number;
  status?: number;
}

export interface GitUpstream {
  url: string;
  root: string;
  seen: SeenRequest[];
  /** Creates a bare repository `owner/name.git` with one commit on main holding `README`. */
  createRepo(repo: string): void;
  /** `git` on the host against a bare repository (e.g. `log --format=%s main`). */
  git(repo: string, args: string[]): string;
  /** Called with each chunk of a request body as it arrives (streaming tests). */
  onBodyChunk?: (request: SeenRequest, chunk: Buffer) => void;
  close(): Promise<void>;
}

const GIT_ENV = { PATH: '/usr/bin:/bin', HOME: '/nonexistent', GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_GLOBAL: '/dev/null' };

function run(args: string[], cwd?: string): string {
  const r = spawnSync('git', args, {
    cwd,
    env: { ...GIT_ENV, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@e', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@e' },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`git ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

export async function startGitUpstream(token = REAL_GITHUB_TOKEN): Promise<GitUpstream> {
  const root = mkdtempSync(join(tmpdir(), 'git-upstream-'));
  const seen: SeenRequest[] = [];
  const basic = `Basic ${Buffer.from(`x-access-token:${token}`).toString('base64')}`;

  const upstream: GitUpstream = {
    url: '',
    root,
    seen,
    createRepo(repo) {
      const bare = join(root, `${repo}.git`);
      run(['init', '--quiet', '--bare', '--initial-branch=main', bare]);
      run(['config', 'http.receivepack', 'true'], bare);
      const work = mkdtempSync(join(tmpdir(), 'git-seed-'));
      try {
        run(['init', '--quiet', '--initial-branch=main', work]);
        spawnSync('sh', ['-c', `echo "${repo}" > README`], { cwd: work });
        run(['add', 'README'], work);
        run(['commit', '--quiet', '-m', `seed ${repo}`], work);
        run(['push', '--quiet', bare, 'main'], work);
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    },
    git: (repo, args) => run(['--git-dir', join(root, `${repo}.git`), ...args]),
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      rmSync(root, { recursive: true, force: true });
    },
  };

  function record(req: IncomingMessage, authorized: boolean): SeenRequest {
    const entry: SeenRequest = { method: req.method ?? 'GET', url: req.url ?? '/', authorized, headers: req.headers, bodyBytes: 0 };
    seen.push(entry);
    req.on('data', (chunk: Buffer) => {
      entry.bodyBytes += chunk.length;
      upstream.onBodyChunk?.(entry, chunk);
    });
    return entry;
  }

  function api(req: IncomingMessage, res: ServerResponse): void {
    const entry = record(req, req.headers.authorization === `Bearer ${token}`);
    req.on('end', () => {
      entry.status = entry.authorized ? 200 : 401;
      const body = JSON.stringify(
        entry.authorized ? { ok: true, method: entry.method, path: entry.url, bodyBytes: entry.bodyBytes } : { message: 'Bad credentials' },
      );
      res.writeHead(entry.status, {
        'content-type': 'application/json',
        'x-github-request-id': 'GH-REQ-1',
        ...(entry.authorized ? {} : { 'www-authenticate': 'Bearer realm="GitHub"' }),
      });
      res.end(body);
    });
    req.resume();
  }

  function git(req: IncomingMessage, res: ServerResponse): void {
    const entry = record(req, req.headers.authorization === basic);
    if (!entry.authorized) {
      entry.status = 401;
      req.resume();
      res.writeHead(401, { 'www-authenticate': 'Basic realm="GitHub"', 'content-type': 'text/plain' });
      res.end('bad credentials\n');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://upstream');
    const env: Record<string, string> = {
      ...GIT_ENV,
      GIT_PROJECT_ROOT: root,
      GIT_HTTP_EXPORT_ALL: '1',
      REQUEST_METHOD: req.method ?? 'GET',
      PATH_INFO: decodeURIComponent(url.pathname),
      QUERY_STRING: url.search.slice(1),
      CONTENT_TYPE: req.headers['content-type'] ?? '',
      REMOTE_USER: 'x-access-token',
      REMOTE_ADDR: '127.0.0.1',
    };
    if (req.headers['content-length'] !== undefined) env.CONTENT_LENGTH = req.headers['content-length'];
    if (req.headers['content-encoding'] !== undefined) env.HTTP_CONTENT_ENCODING = req.headers['content-encoding'];
    if (req.headers['git-protocol'] !== undefined) env.GIT_PROTOCOL = String(req.headers['git-protocol']);
    const cgi = spawn('git', ['http-backend'], { env, stdio: ['pipe', 'pipe', 'ignore'] });
    req.pipe(cgi.stdin);
    cgi.stdin.on('error', () => undefined);
    // http-backend may stop reading early (a pack it refuses); the rest is still read and counted,
    // as a real server drains a request body.
    cgi.stdin.on('close', () => req.resume());
    let head = Buffer.alloc(0);
    let headersDone = false;
    cgi.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) {
        if (!res.write(chunk)) {
          cgi.stdout.pause();
          res.once('drain', () => cgi.stdout.resume());
        }
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      const endLf = head.indexOf('\n\n');
      const at = end !== -1 ? end : endLf;
      if (at === -1) return;
      const sep = end !== -1 ? 4 : 2;
      headersDone = true;
      let status = 200;
      const headers: Record<string, string> = {};
      for (const line of head.subarray(0, at).toString('latin1').split(/\r?\n/)) {
        const colon = line.indexOf(':');
        if (colon === -1) continue;
        const name = line.slice(0, colon).trim().toLowerCase();
        const value = line.slice(colon + 1).trim();
        if (name === 'status') status = Number.parseInt(value, 10);
        else headers[name] = value;
      }
      entry.status = status;
      res.writeHead(status, headers);
      const rest = head.subarray(at + sep);
      if (rest.length > 0) res.write(rest);
    });
    cgi.stdout.on('end', () => res.end());
    cgi.on('error', () => res.destroy());
  }

  const server = http.createServer((req, res) => {
    if ((req.url ?? '').startsWith('/api/v3/') || req.url === '/api/v3') api(req, res);
    else git(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  upstream.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return upstream;
}

export interface GitHubFixture {
  upstream: GitUpstream;
  gateway: Gateway;
  calls: CallRecord[];
  stateDir: string;
  close(): Promise<void>;
}

/** A git upstream with three repositories, and a gateway relaying GitHub to it with the real token. */
export async function startGitHubFixture(): Promise<GitHubFixture> {
  const upstream = await startGitUpstream();
  for (const repo of ['acme/widgets', 'acme/docs', 'other/secret']) upstream.createRepo(repo);
  const stateDir = await mkdtemp(join(tmpdir(), 'gh-'));
  const calls: CallRecord[] = [];
  const gateway = await createGateway({
    stateDir,
    logger: pino({ level: 'silent' }),
    providers: {},
    github: { webUrl: upstream.url, apiUrl: `${upstream.url}/api/v3`, host: 'github.com', token: REAL_GITHUB_TOKEN },
    onCall: (record) => calls.push(record),
  });
  return {
    upstream,
    gateway,
    calls,
    stateDir,
    async close() {
      await gateway.close({ drainMs: 1000 });
      await upstream.close();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}
