// Opening the server side of a tunnel: a TCP connection to an address that was already checked (the
// lookup handed to net.connect returns only those addresses, so nothing resolves the name a second
// time between the check and the connect), or a CONNECT through the operator's upstream proxy.
import http from 'node:http';
import https from 'node:https';
import net, { type LookupFunction } from 'node:net';
import type { ResolvedAddress } from './resolve.ts';

export interface DialTarget {
  host: string;
  port: number;
  /** The checked addresses; empty when only the upstream proxy can resolve the name. */
  addresses: readonly ResolvedAddress[];
}

export interface ParentProxy {
  url: URL;
  /** PEM CAs trusted for an https:// proxy, besides the system's. */
  ca?: string[];
}

export class DialError extends Error {
  override readonly name = 'DialError';
  /** The upstream proxy's status, when it refused the CONNECT. */
  readonly proxyStatus?: number;
  constructor(message: string, proxyStatus?: number) {
    super(message);
    this.proxyStatus = proxyStatus;
  }
}

/** A connected socket to `target`, or a DialError within `timeoutMs`. */
export function dial(target: DialTarget, timeoutMs: number, parent?: ParentProxy): Promise<net.Socket> {
  return parent ? dialThroughProxy(target, timeoutMs, parent) : dialDirect(target, timeoutMs);
}

function dialDirect(target: DialTarget, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({
      host: target.host,
      port: target.port,
      lookup: pinnedLookup(target.addresses),
      autoSelectFamily: true,
      noDelay: true,
    });
    const timer = setTimeout(() => socket.destroy(new DialError(`connect timed out after ${timeoutMs} ms`)), timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error instanceof DialError ? error : new DialError(connectProblem(error)));
    });
  });
}

/** A lookup that answers with the checked addresses only, whatever it is asked. */
export function pinnedLookup(addresses: readonly ResolvedAddress[]): LookupFunction {
  return (_hostname, options, callback) => {
    const first = addresses[0];
    if (!first) {
      callback(Object.assign(new Error('no checked address'), { code: 'ENOTFOUND' }), '', 4);
      return;
    }
    if ((options as { all?: boolean }).all) (callback as unknown as (error: null, all: ResolvedAddress[]) => void)(null, [...addresses]);
    else callback(null, first.address, first.family);
  };
}

function dialThroughProxy(target: DialTarget, timeoutMs: number, parent: ParentProxy): Promise<net.Socket> {
  const authority = `${net.isIP(target.host) === 6 ? `[${target.host}]` : target.host}:${target.port}`;
  const { url } = parent;
  const headers: Record<string, string> = { host: authority, ...proxyAuthorization(url) };
  const secure = url.protocol === 'https:';
  return new Promise((resolve, reject) => {
    const request = (secure ? https : http).request({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port || (secure ? 443 : 80),
      method: 'CONNECT',
      path: authority,
      headers,
      agent: false,
      timeout: timeoutMs,
      ...(secure && parent.ca ? { ca: parent.ca } : {}),
    });
    request.once('connect', (response, socket, head) => {
      if (response.statusCode !== 200) {
        socket.destroy();
        reject(new DialError(`the upstream proxy refused the tunnel (${response.statusCode})`, response.statusCode));
        return;
      }
      if (head.length > 0) socket.unshift(head);
      socket.setTimeout(0);
      resolve(socket);
    });
    request.once('timeout', () => request.destroy(new DialError(`the upstream proxy did not answer within ${timeoutMs} ms`)));
    request.once('error', (error) => reject(error instanceof DialError ? error : new DialError(`the upstream proxy failed: ${connectProblem(error)}`)));
    request.end();
  });
}

/** The upstream proxy's credentials from its URL (`http://user:pass@proxy:3128`), as a header. */
export function proxyAuthorization(url: URL): Record<string, string> {
  if (!url.username) return {};
  const credentials = Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64');
  return { 'proxy-authorization': `Basic ${credentials}` };
}

function connectProblem(error: Error): string {
  const code = (error as NodeJS.ErrnoException).code;
  return code ? `connect failed (${code})` : 'connect failed';
}
