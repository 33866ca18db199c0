// A named HTTP service behind every granted key's socket (a REST API, an MCP server, a registry
// with a token): where it is, the host's credential and how it is sent, and what may go through.
// Built from `createGateway({ services })`; a container reaches it at `/svc/NAME/...` on its shim.
import { createDispatcher, parseBaseUrl, upstreamTimeouts, type NetworkOptions, type Upstream, type UpstreamTimeouts } from '../upstream/providers.ts';
import type { HeaderMap } from '../wire/headers.ts';
import { checkNonNegative, ValidationError } from '../util/validation.ts';
import { checkMethods, compilePathRule, DEFAULT_METHODS, type PathRule } from './rules.ts';

/** How the credential goes upstream: a header (with a prefix such as `Bearer `), Basic auth, or a query parameter. */
export type CredentialInjection = { header: string; prefix?: string } | { basic: string } | { query: string };

/** `createGateway({ services: { NAME: ... } })`. */
export interface ServiceOptions {
  /** Where the service is (`https://mcp.example.com/mcp`); its path is the prefix of every request's. */
  baseUrl: string;
  /** `mcp`: an MCP server over streamable HTTP, listed in the `mcp.json` of keys granted it. Default `http`. */
  kind?: 'http' | 'mcp';
  /** The real credential (read on the host: env, file, command). Absent: a request is answered 503. */
  credential?: string;
  /** Default `{ header: 'authorization', prefix: 'Bearer ' }`. A query parameter only where the API needs one. */
  inject?: CredentialInjection;
  /** Methods allowed. Default GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS. */
  methods?: string[];
  /** Path globs below the base (`/api/**`, `/v1/search`): `*` within a segment, `**` across. Default: any. */
  paths?: string[];
  /** Groups whose keys have the service without naming it (`mint({ services })` grants it to one key). */
  groups?: string[];
  /** Whether responses may be event streams (MCP's are). Default true; false refuses them (502). */
  stream?: boolean;
  /** Pass the client's own Authorization and Cookie headers, and Set-Cookie back. Default false: both dropped. */
  passClientAuth?: boolean;
  /** Requests per minute one key may send to the service. Default: no limit of its own. */
  rpm?: number;
  /** Requests one key may have open to the service at once (an MCP server stream counts). Default 16. */
  maxConcurrent?: number;
  /** Largest request body, streamed through. Default 32 MiB. */
  maxBodyBytes?: number;
  timeouts?: UpstreamTimeouts;
}

/** The host's credential for one service: how it is added, and the forms of it a response must never carry. */
interface ServiceCredential {
  /** Sets the header (or returns the query with the parameter) carrying the credential. */
  apply(headers: HeaderMap, query: string): string;
  needles: readonly string[];
  /** The needles' bytes, made once for every response's masking. */
  needleBytes: readonly Buffer[];
}

/** A service ready to forward to. */
export interface Service {
  name: string;
  kind: 'http' | 'mcp';
  upstream: Upstream;
  /** Adds the credential to a request; absent without a credential. */
  credential: ServiceCredential | undefined;
  methods: readonly string[];
  paths: readonly PathRule[] | undefined;
  groups: ReadonlySet<string>;
  stream: boolean;
  passClientAuth: boolean;
  rpm: number | undefined;
  maxConcurrent: number;
  maxBodyBytes: number;
}

/** Lower-case letters, digits, `-` and `_`: a path segment, an env var suffix and a JSON key as it is. */
const SERVICE_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$/;
/** Headers the gateway owns on every hop: a credential may not be put in them. */
const RESERVED_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'cookie']);

export function isServiceName(name: string): boolean {
  return SERVICE_NAME.test(name);
}

/** Every service of `options`, checked and built; pools are opened only once all are valid. */
export function createServices(options: Record<string, ServiceOptions> | undefined, network?: NetworkOptions): Map<string, Service> {
  const entries = Object.entries(options ?? {});
  for (const [name, service] of entries) checkService(name, service);
  return new Map(entries.map(([name, service]) => [name, buildService(name, service, network)]));
}

export async function closeServices(services: Map<string, Service>): Promise<void> {
  await Promise.all([...services.values()].map((service) => service.upstream.dispatcher.close().catch(() => undefined)));
}

/** Throws a ValidationError naming the first field of the service that is wrong (`services.NAME.field`). */
export function checkService(name: string, service: ServiceOptions): void {
  const field = `services.${name}`;
  if (!isServiceName(name)) throw new ValidationError(field, 'a service name is lower-case letters, digits, "-" and "_" (at most 63)');
  if (service === null || typeof service !== 'object') throw new ValidationError(field, 'must be an object { baseUrl, ... }');
  parseBaseUrl(service.baseUrl, `${field}.baseUrl`);
  if (service.kind !== undefined && service.kind !== 'http' && service.kind !== 'mcp') throw new ValidationError(`${field}.kind`, 'must be "http" or "mcp"');
  if (service.credential !== undefined && (typeof service.credential !== 'string' || /[\r\n]/.test(service.credential)))
    throw new ValidationError(`${field}.credential`, 'must be a string on one line');
  checkInjection(service.inject, `${field}.inject`);
  if (service.methods !== undefined) checkMethods(service.methods, `${field}.methods`);
  if (service.paths !== undefined) {
    if (!Array.isArray(service.paths)) throw new ValidationError(`${field}.paths`, 'must be an array of path globs');
    for (const glob of service.paths) compilePathRule(glob, `${field}.paths`);
  }
  if (service.groups !== undefined && !(Array.isArray(service.groups) && service.groups.every((g) => typeof g === 'string' && g.length > 0)))
    throw new ValidationError(`${field}.groups`, 'must be an array of group names');
  for (const limit of ['rpm', 'maxConcurrent', 'maxBodyBytes'] as const) {
    if (service[limit] !== undefined) checkNonNegative(service[limit], `${field}.${limit}`);
  }
}

function checkInjection(inject: CredentialInjection | undefined, field: string): void {
  if (inject === undefined) return;
  if (inject === null || typeof inject !== 'object') throw new ValidationError(field, 'must be { header, prefix? }, { basic } or { query }');
  const ways = ['header', 'basic', 'query'].filter((way) => Object.hasOwn(inject, way));
  if (ways.length !== 1) throw new ValidationError(field, 'names exactly one of header, basic or query');
  if ('header' in inject) {
    if (typeof inject.header !== 'string' || !HEADER_NAME.test(inject.header) || RESERVED_HEADERS.has(inject.header.toLowerCase()))
      throw new ValidationError(`${field}.header`, `must be a header name the gateway does not own, got ${JSON.stringify(inject.header)}`);
    if (inject.prefix !== undefined && (typeof inject.prefix !== 'string' || /[\r\n]/.test(inject.prefix)))
      throw new ValidationError(`${field}.prefix`, 'must be a string on one line');
  } else if ('basic' in inject) {
    if (typeof inject.basic !== 'string' || inject.basic.includes(':') || /[\r\n]/.test(inject.basic))
      throw new ValidationError(`${field}.basic`, 'must be the user name (without ":")');
  } else if (typeof inject.query !== 'string' || !/^[A-Za-z0-9._~-]{1,64}$/.test(inject.query)) {
    throw new ValidationError(`${field}.query`, 'must be a query parameter name');
  }
}

function buildService(name: string, options: ServiceOptions, network: NetworkOptions | undefined): Service {
  const stream = options.stream ?? true;
  const timeouts = upstreamTimeouts(options.timeouts);
  return {
    name,
    kind: options.kind ?? 'http',
    upstream: {
      name,
      // Only the relay's plumbing is used: the gateway's own answers are in the services' JSON shape.
      kind: 'openai',
      dialect: 'openai',
      ...parseBaseUrl(options.baseUrl, `services.${name}.baseUrl`),
      credentials: [],
      dropBetas: new Set(),
      timeouts,
      dispatcher: createDispatcher(timeouts.connectMs, network),
    },
    credential: options.credential ? credentialFor(options.credential, options.inject ?? { header: 'authorization', prefix: 'Bearer ' }) : undefined,
    methods: options.methods ? checkMethods(options.methods, `services.${name}.methods`) : DEFAULT_METHODS,
    paths: options.paths?.map((glob) => compilePathRule(glob, `services.${name}.paths`)),
    groups: new Set(options.groups ?? []),
    stream,
    passClientAuth: options.passClientAuth === true,
    rpm: options.rpm,
    maxConcurrent: options.maxConcurrent ?? 16,
    maxBodyBytes: options.maxBodyBytes ?? 32 * 1024 * 1024,
  };
}

function credentialFor(secret: string, inject: CredentialInjection): ServiceCredential {
  const injection = injector(secret, inject);
  return { ...injection, needleBytes: injection.needles.map((needle) => Buffer.from(needle)) };
}

/** Applies the credential; `needles` are the forms of it a response must never carry. */
function injector(secret: string, inject: CredentialInjection): Omit<ServiceCredential, 'needleBytes'> {
  if ('basic' in inject) {
    const value = `Basic ${Buffer.from(`${inject.basic}:${secret}`).toString('base64')}`;
    return {
      apply(headers, query) {
        headers.authorization = value;
        return query;
      },
      needles: [secret, value.slice('Basic '.length)],
    };
  }
  if ('query' in inject) {
    const pair = `${inject.query}=${encodeURIComponent(secret)}`;
    return {
      // The client's own value of the parameter is dropped: only the host's goes upstream.
      apply: (_headers, query) => [...query.split('&').filter((p) => p !== '' && paramName(p) !== inject.query), pair].join('&'),
      needles: [...new Set([secret, encodeURIComponent(secret)])],
    };
  }
  const header = inject.header.toLowerCase();
  const value = `${inject.prefix ?? ''}${secret}`;
  return {
    apply(headers, query) {
      headers[header] = value;
      return query;
    },
    needles: [secret],
  };
}

function paramName(pair: string): string {
  const name = pair.split('=', 1)[0]!;
  try {
    return decodeURIComponent(name.replace(/\+/g, ' '));
  } catch {
    return name;
  }
}
