// A plain HTTP request through the proxy (`GET http://host/path`, absolute form): the one kind of
// egress whose method and path the gateway sees, so rules may narrow them. The URL is parsed once
// (dot segments resolved) and the same path is checked and sent; the Host header is the checked
// authority, whatever the client wrote. One upstream connection per request, to a checked address.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { KeyLimits } from '../keys/limits.ts';
import type { KeyRecord } from '../keys/store.ts';
import { headersThroughProxy } from '../wire/headers.ts';
import { admitEgress, type Admitted, type EgressContext, EgressRefusal, reasonPhrase, refusalHeaders, ruleText } from './admission.ts';
import { pinnedLookup, proxyAuthorization } from './dial.ts';
import type { ResolvedAddress } from './resolve.ts';
import type { EgressRecord } from './record.ts';
import type { EgressTarget } from './rules.ts';

export function createForwardHandler(context: EgressContext) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const key = context.keyOf(req.socket);
    const limits = key && !key.revoked ? context.limitsOf(key.id) : undefined;
    if (!key || !limits) {
      answerRefusal(res, new EgressRefusal(403, 'key_revoked', 'this key has been revoked or has expired'));
      return;
    }
    new Forward(context, key, req, res).run(limits).catch((error: unknown) => {
      context.onInternalError(error);
      res.destroy();
    });
  };
}

function answerRefusal(res: ServerResponse, refusal: EgressRefusal): void {
  const body = `${refusal.message}\n`;
  res.shouldKeepAlive = false;
  res.writeHead(refusal.status, reasonPhrase(refusal), { ...refusalHeaders(refusal), 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** The request's target, from its absolute-form URL; undefined when it is not an http:// URL. */
export function forwardTarget(rawUrl: string, method: string): { target: EgressTarget; url: URL } | undefined {
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' || !url.hostname) return undefined;
  const host = url.hostname
    .replace(/^\[|\]$/g, '')
    .toLowerCase()
    .replace(/\.$/, '');
  return { target: { host, port: Number(url.port || 80), method: method.toUpperCase(), path: url.pathname }, url };
}

class Forward {
  private readonly context: EgressContext;
  private readonly key: KeyRecord;
  private readonly req: IncomingMessage;
  private readonly res: ServerResponse;
  private readonly started = Date.now();
  private target: EgressTarget | undefined;
  private admitted: Admitted | undefined;
  private address: string | undefined;
  private bytesUp = 0;
  private bytesDown = 0;
  private reported = false;

  constructor(context: EgressContext, key: KeyRecord, req: IncomingMessage, res: ServerResponse) {
    this.context = context;
    this.key = key;
    this.req = req;
    this.res = res;
  }

  async run(limits: KeyLimits): Promise<void> {
    const parsed = forwardTarget(this.req.url ?? '', this.req.method ?? 'GET');
    try {
      if (!parsed) {
        throw new EgressRefusal(400, 'bad_target', 'egress refused: a proxy request needs an http:// URL (HTTPS goes through CONNECT: set HTTPS_PROXY)');
      }
      this.target = parsed.target;
      this.admitted = await admitEgress(this.context, this.key, limits, parsed.target);
    } catch (error) {
      if (!(error instanceof EgressRefusal)) throw error;
      return this.refuse(error);
    }
    if (this.res.destroyed) return this.report('allowed', 0);
    this.send(parsed.url, this.admitted, limits.egressBudgetBytes);
  }

  private send(url: URL, admitted: Admitted, budgetBytes: number | undefined): void {
    const { req, res } = this;
    const settings = this.context.settings();
    const closeAccount = admitted.account.opened('http', () => res.destroy());
    const { options, proxyHeaders } = this.destination(url, admitted.addresses);
    const upstream = http.request({
      ...options,
      method: req.method,
      // Host is the checked authority, whatever the client wrote.
      headers: { ...headersThroughProxy(req.headers), host: url.host, ...proxyHeaders },
      setHost: false,
      agent: false,
      timeout: settings.idleTimeoutMs,
    });
    upstream.once('socket', (socket) => socket.once('connect', () => (this.address = socket.remoteAddress)));
    const connectTimer = setTimeout(() => upstream.destroy(new Error('connect timed out')), settings.connectTimeoutMs);
    upstream.once('socket', (socket) => socket.once('connect', () => clearTimeout(connectTimer)));
    req.on('data', (chunk: Buffer) => {
      this.bytesUp += chunk.length;
      if (!admitted.account.add(chunk.length, 0, budgetBytes)) upstream.destroy();
    });
    req.pipe(upstream);
    upstream.once('timeout', () => upstream.destroy(new Error('idle')));
    upstream.once('response', (response) => {
      clearTimeout(connectTimer);
      res.writeHead(response.statusCode ?? 502, headersThroughProxy(response.headers));
      response.on('data', (chunk: Buffer) => {
        this.bytesDown += chunk.length;
        if (!admitted.account.add(0, chunk.length, budgetBytes)) response.destroy();
      });
      response.pipe(res);
      response.once('error', () => res.destroy());
    });
    upstream.once('error', () => {
      clearTimeout(connectTimer);
      if (!res.headersSent) {
        const target = this.target!;
        answerRefusal(res, new EgressRefusal(502, 'connect_failed', `egress to ${target.host}:${target.port} failed: no answer from the server`));
      } else res.destroy();
    });
    res.once('close', () => {
      clearTimeout(connectTimer);
      upstream.destroy();
      closeAccount();
      this.report(admitted.account.spent(budgetBytes) ? 'denied' : 'allowed', res.statusCode);
    });
  }

  /** The checked address directly, or the operator's upstream proxy with the absolute URL. */
  private destination(url: URL, addresses: readonly ResolvedAddress[]): { options: http.RequestOptions; proxyHeaders: Record<string, string> } {
    const parent = this.context.settings().parent;
    if (parent) {
      const { hostname, port } = parent.url;
      return { options: { host: hostname.replace(/^\[|\]$/g, ''), port: port || 80, path: url.href }, proxyHeaders: proxyAuthorization(parent.url) };
    }
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const options = { host, port: url.port || 80, path: `${url.pathname}${url.search}`, lookup: pinnedLookup(addresses), autoSelectFamily: true };
    return { options, proxyHeaders: {} };
  }

  private refuse(refusal: EgressRefusal): void {
    answerRefusal(this.res, refusal);
    this.report('denied', refusal.status, refusal.reason);
  }

  private report(decision: EgressRecord['decision'], status: number, reason?: EgressRecord['reason']): void {
    if (this.reported) return;
    this.reported = true;
    const target = this.target ?? { host: '', port: 0, method: this.req.method, path: undefined };
    this.context.onRecord({
      time: this.started,
      keyId: this.key.id,
      group: this.key.group,
      label: this.key.label,
      kind: 'http',
      host: target.host,
      port: target.port,
      method: target.method,
      path: target.path,
      address: this.address,
      decision,
      rule: this.admitted ? ruleText(this.admitted.rules) : undefined,
      reason: reason ?? (decision === 'denied' ? 'byte_budget' : undefined),
      status,
      bytesUp: this.bytesUp,
      bytesDown: this.bytesDown,
      durationMs: Date.now() - this.started,
    });
  }
}
