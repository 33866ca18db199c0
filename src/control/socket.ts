// The operator's control socket: a small JSON API over a Unix socket in the state dir (mode 0600,
// so only the operator's user can reach it). Containers never see it: only key directories are
// mounted into them.
import { chmod, unlink } from 'node:fs/promises';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Gateway, MintRequest } from '../gateway.ts';
import { ValidationError } from '../util/validation.ts';
import { CLAUDE_VIAS, type ClaudeVia } from '../keys/client-env.ts';
import { containerEnv } from './container-env.ts';

const CONTROL_SOCKET = 'control.sock';

export function controlSocketPath(stateDir: string): string {
  return path.join(stateDir, CONTROL_SOCKET);
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

const MINT_FIELDS = new Set([
  'group',
  'label',
  'ttlMs',
  'owner',
  'budgetUsd',
  'rpm',
  'tpm',
  'maxConcurrent',
  'models',
  'maxBodyBytes',
  'maxRefusalsPerMinute',
  'github',
  'serverTools',
  'egress',
  'egressMaxTunnels',
  'egressBudgetBytes',
  'services',
  'shimPort',
  'tcp',
]);

interface ControlExtras {
  defaultTtlMs?: number;
  githubHost?: string;
  info(): object;
  /** Where a 500 (a bug, not the caller's mistake) is logged with its stack. */
  logger: Logger;
}

/** Serves the control API for `gateway` on `<stateDir>/control.sock`. */
export async function startControlServer(gateway: Gateway, extras: ControlExtras): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    route(gateway, extras, req, res).catch((error: unknown) => {
      // The caller's mistakes are 4xx with their message; anything else is a bug in the gateway.
      if (error instanceof HttpError) return send(res, error.status, { error: error.message });
      if (error instanceof ValidationError) return send(res, 400, { error: error.message });
      extras.logger.error({ err: error, method: req.method, url: req.url }, 'control API request failed');
      send(res, 500, { error: `internal error: ${(error as Error)?.message ?? String(error)}` });
    });
  });
  const socketPath = controlSocketPath(gateway.stateDir);
  await unlink(socketPath).catch(() => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  await chmod(socketPath, 0o600);
  return server;
}

async function route(gateway: Gateway, extras: ControlExtras, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://control');
  const parts = url.pathname.split('/').filter(Boolean);
  const method = req.method ?? 'GET';
  if (parts[0] !== 'v1') throw new HttpError(404, `no such endpoint ${url.pathname}`);
  const [, resource, id, sub] = parts;

  if (resource === 'status' && method === 'GET') {
    const { keys: _keys, ...rest } = gateway.inspect();
    return send(res, 200, { ...rest, ...extras.info() });
  }
  if (resource === 'keys' && id === undefined) {
    if (method === 'GET')
      return send(
        res,
        200,
        gateway.inspect().keys.map(({ recentCalls: _recent, ...key }) => key),
      );
    if (method === 'POST') {
      const body = (await readJson(req)) as Record<string, unknown>;
      const { claudeVia = 'anthropic', ...fields } = body;
      for (const field of Object.keys(fields)) if (!MINT_FIELDS.has(field)) throw new HttpError(400, `unknown mint field \`${field}\``);
      // Not the key's: which of Claude Code's formats the env sets up.
      if (!CLAUDE_VIAS.includes(claudeVia as ClaudeVia)) throw new HttpError(400, `claudeVia must be one of ${CLAUDE_VIAS.join(', ')}`);
      const request = { ttlMs: extras.defaultTtlMs, ...fields } as MintRequest;
      const key = await gateway.mint(request);
      const env = containerEnv(key, {
        port: request.shimPort,
        claudeVia: claudeVia as ClaudeVia,
        github: Boolean(request.github),
        githubHost: extras.githubHost,
      });
      return send(res, 201, { ...key, env });
    }
  }
  if (resource === 'keys' && id !== undefined && sub === undefined) {
    if (method === 'GET') {
      const key = gateway.inspect().keys.find((k) => k.id === id);
      if (!key) throw new HttpError(404, `no live key ${id}`);
      return send(res, 200, key);
    }
    if (method === 'DELETE') {
      if (!(await gateway.revoke(id))) throw new HttpError(404, `no live key ${id}`);
      return send(res, 200, { revoked: id });
    }
  }
  if (resource === 'groups' && id !== undefined && sub === 'budget' && method === 'PUT') {
    const body = (await readJson(req)) as { usd?: number | null };
    // `usd: null` removes the budget; a body without `usd` is a mistake, not a removal.
    if (body === null || typeof body !== 'object' || !('usd' in body)) throw new HttpError(400, 'body must be {"usd": number} or {"usd": null}');
    gateway.setGroupBudget(decodeURIComponent(id), body.usd ?? undefined);
    return send(
      res,
      200,
      gateway.inspect().groups.find((g) => g.group === decodeURIComponent(id)),
    );
  }
  throw new HttpError(404, `no such endpoint ${method} ${url.pathname}`);
}

function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      text += chunk;
      if (text.length > 1_000_000) req.destroy();
    });
    req.on('end', () => {
      try {
        const value: unknown = text ? JSON.parse(text) : {};
        if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error();
        resolve(value);
      } catch {
        reject(new HttpError(400, 'request body must be a JSON object'));
      }
    });
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** Calls the daemon's control API. Throws with the daemon's error message on a non-2xx answer. */
export function callControl<T>(stateDir: string, method: string, urlPath: string, body?: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        socketPath: controlSocketPath(stateDir),
        method,
        path: urlPath,
        headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => {
          let value: unknown;
          try {
            value = JSON.parse(text);
          } catch {
            return reject(new Error(`the daemon answered HTTP ${res.statusCode} with no JSON`));
          }
          if ((res.statusCode ?? 500) >= 300)
            return reject(new ControlError(res.statusCode ?? 500, (value as { error?: string }).error ?? `HTTP ${res.statusCode}`));
          resolve(value as T);
        });
      },
    );
    req.on('error', (error: NodeJS.ErrnoException) => {
      reject(
        error.code === 'ENOENT' || error.code === 'ECONNREFUSED'
          ? new DaemonUnreachable(`no gateway daemon is running with state dir ${stateDir} (start one with \`gateway serve\`)`)
          : error,
      );
    });
    req.end(payload);
  });
}

class DaemonUnreachable extends Error {}

/** The daemon's non-2xx answer: `status` 400 is the caller's mistake, 404 an unknown key, 500 a bug. */
export class ControlError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}
