// The forward proxy on a key's socket, beside its API: a request in origin form (`POST /v1/messages`)
// is an API call; `CONNECT host:port` and absolute-form `GET http://host/...` are egress, governed by
// the key's policy (egress/policy.ts). An absolute-form request to the container's own loopback is
// the shim itself (a client that sent its API call through the proxy): it is served as an API call.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { NetworkOptions } from '../upstream/providers.ts';
import { ValidationError } from '../util/validation.ts';
import type { EgressContext, EgressSettings } from './admission.ts';
import { forwardTarget, createForwardHandler } from './forward.ts';
import { EgressPolicy, type EgressPolicyOptions } from './policy.ts';
import { EgressResolver, type EgressResolverOptions, validateEgressResolverOptions } from './resolve.ts';
import { createTunnelHandler } from './tunnel.ts';

export interface EgressOptions extends EgressPolicyOptions, EgressResolverOptions {
  /** Connecting to a destination (or the upstream proxy). Default 10 s. */
  connectTimeoutMs?: number;
  /** A tunnel or request with no byte either way for this long is closed. Default 5 min. */
  idleTimeoutMs?: number;
}

const LOOPBACK_NAMES: ReadonlySet<string> = new Set(['127.0.0.1', 'localhost', '::1']);

/** The settings a gateway's egress runs on, checked: throws a ValidationError naming the field. */
export function egressSettings(options: EgressOptions = {}, network: NetworkOptions = {}): EgressSettings {
  validateEgressResolverOptions(options);
  for (const name of ['connectTimeoutMs', 'idleTimeoutMs'] as const) {
    const value = options[name];
    if (value !== undefined && !(Number.isFinite(value) && value > 0)) throw new ValidationError(`egress.${name}`, 'must be a positive number of milliseconds');
  }
  return {
    policy: new EgressPolicy(options),
    resolver: new EgressResolver(options),
    parent: network.proxyUrl ? { url: new URL(network.proxyUrl), ca: network.extraCaPem ? [network.extraCaPem] : undefined } : undefined,
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
    idleTimeoutMs: options.idleTimeoutMs ?? 300_000,
    helloTimeoutMs: 10_000,
  };
}

export interface EgressProxy {
  /** The server's request handler: API calls go to `api`, absolute-form requests are egress. */
  request(req: IncomingMessage, res: ServerResponse): void;
  /** The server's `connect` handler. */
  connect(req: IncomingMessage, socket: Socket, head: Buffer): void;
}

export function createEgressProxy(context: EgressContext & { api(req: IncomingMessage, res: ServerResponse): void }): EgressProxy {
  const forward = createForwardHandler(context);
  const connect = createTunnelHandler(context);
  return {
    request(req, res) {
      const url = req.url ?? '/';
      // Origin form starts with '/', the API's; '*' (OPTIONS *) is answered by the API's 404.
      if (url.startsWith('/') || url === '*') return context.api(req, res);
      const loopback = forwardTarget(url, req.method ?? 'GET');
      if (loopback && LOOPBACK_NAMES.has(loopback.target.host)) {
        req.url = `${loopback.url.pathname}${loopback.url.search}`;
        return context.api(req, res);
      }
      forward(req, res);
    },
    connect,
  };
}
