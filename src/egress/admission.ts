// Whether one tunnel or plain HTTP request may leave, checked in the order that costs least first:
// the key's refusal rate, its policy (key and group), its open tunnels and byte budget, then the name
// resolved on the host and every address it resolves to. A refusal carries the status, the reason for
// the audit, and a message for the model that says what would allow it.
import type { Socket } from 'node:net';
import type { KeyLimits } from '../keys/limits.ts';
import type { KeyRecord } from '../keys/store.ts';
import type { Refusals } from '../metering/refusals.ts';
import { classifyAddress } from './addresses.ts';
import type { EgressBooks, EgressAccount } from './books.ts';
import type { ParentProxy } from './dial.ts';
import { addressNamed, type EgressPolicy } from './policy.ts';
import type { EgressReason, EgressRecord } from './record.ts';
import { type EgressResolver, type ResolvedAddress, ResolveError } from './resolve.ts';
import type { CompiledRule, EgressTarget } from './rules.ts';

/** What governs egress right now; replaced whole on reconfiguration. */
export interface EgressSettings {
  policy: EgressPolicy;
  resolver: EgressResolver;
  /** The operator's upstream proxy (`[network] https_proxy`), used for egress too. */
  parent?: ParentProxy;
  connectTimeoutMs: number;
  /** A tunnel or request with no byte either way for this long is closed. */
  idleTimeoutMs: number;
  /** How long a tunnel waits for the client's TLS ClientHello. */
  helloTimeoutMs: number;
}

export interface EgressContext {
  keyOf(socket: Socket): KeyRecord | undefined;
  /** The live key's limits; undefined once it is revoked. */
  limitsOf(keyId: string): KeyLimits | undefined;
  settings(): EgressSettings;
  books: EgressBooks;
  /** The key's egress refusals in the last minute: past its `maxRefusalsPerMinute`, egress is refused at once. */
  refusals: Refusals;
  onRecord(record: EgressRecord): void;
  onInternalError(error: unknown): void;
}

/** Tunnels and requests one key may have open at once unless its limits say otherwise. */
const DEFAULT_MAX_TUNNELS = 32;

export class EgressRefusal extends Error {
  override readonly name = 'EgressRefusal';
  readonly status: number;
  readonly reason: EgressReason;
  constructor(status: number, reason: EgressReason, message: string) {
    super(message);
    this.status = status;
    this.reason = reason;
  }
}

/** An admitted request: the rule that allowed it in each layer, and the addresses it may connect to. */
export interface Admitted {
  rules: CompiledRule[];
  addresses: ResolvedAddress[];
  account: EgressAccount;
}

/** Checks everything but the TLS server name; throws an EgressRefusal. */
export async function admitEgress(context: EgressContext, key: KeyRecord, limits: KeyLimits, target: EgressTarget): Promise<Admitted> {
  const overRate = context.refusals.check(key.id, limits.maxRefusalsPerMinute);
  if (overRate) throw new EgressRefusal(429, 'refusal_rate', overRate.message);
  const settings = context.settings();
  const decision = settings.policy.decide(key.group, limits.egress, target);
  if (!decision.allowed) throw new EgressRefusal(403, decision.reason, decision.message);
  const account = context.books.account(key.id);
  const maxTunnels = limits.egressMaxTunnels ?? DEFAULT_MAX_TUNNELS;
  if (account.totals.tunnelsOpen >= maxTunnels) {
    throw new EgressRefusal(
      429,
      'too_many_tunnels',
      `egress refused: this key already has ${maxTunnels} tunnels and requests open (limit egressMaxTunnels); close some first`,
    );
  }
  if (account.spent(limits.egressBudgetBytes)) {
    throw new EgressRefusal(403, 'byte_budget', `egress refused: this key has used its egress budget of ${limits.egressBudgetBytes} bytes`);
  }
  const addresses = await checkedAddresses(settings, decision.rules, target.host);
  return { rules: decision.rules, addresses, account };
}

/** The host's addresses, every one of them allowed; with an upstream proxy, none when only it can resolve the name. */
async function checkedAddresses(settings: EgressSettings, rules: CompiledRule[], host: string): Promise<ResolvedAddress[]> {
  let resolution: Awaited<ReturnType<EgressResolver['resolve']>>;
  try {
    resolution = await settings.resolver.resolve(host);
  } catch (error) {
    if (!(error instanceof ResolveError)) throw error;
    if (error.code === 'invalid_host')
      throw new EgressRefusal(400, 'bad_target', `egress refused: "${host.slice(0, 256)}" is not a host name or an IP address`);
    // Behind an upstream proxy the host may see no outside DNS: the proxy resolves, and checks, then.
    if (settings.parent) return [];
    throw new EgressRefusal(502, 'resolve_failed', `egress to ${host} failed: the name could not be resolved (${error.code})`);
  }
  for (const { address } of resolution.addresses) {
    // Names the operator pinned in egress.hosts are trusted to point where the operator said.
    if (resolution.source === 'hosts') continue;
    const kind = classifyAddress(address);
    if (kind !== 'public' && !addressNamed(rules, address)) {
      throw new EgressRefusal(
        403,
        'address',
        `egress to ${host} refused: it resolves to ${address}, a ${kind.replace('_', '-')} address, which no rule names (a rule reaches a non-public address only when it lists it in \`addresses\`)`,
      );
    }
  }
  return resolution.addresses;
}

/** The audit text of the rules that allowed a request: `npm: registry.npmjs.org:443`. */
export function ruleText(rules: readonly CompiledRule[]): string {
  return rules.map((rule) => `${rule.source}: ${rule.text}`).join(' + ');
}

/** RFC 9209 Proxy-Status error types, so clients and tools that read the header see why. */
const PROXY_STATUS: Record<EgressReason, string> = {
  no_policy: 'http_request_denied',
  not_allowed: 'http_request_denied',
  bad_target: 'http_request_error',
  address: 'destination_ip_prohibited',
  resolve_failed: 'dns_error',
  connect_failed: 'destination_unavailable',
  too_many_tunnels: 'proxy_configuration_error',
  byte_budget: 'http_request_denied',
  sni_mismatch: 'tls_protocol_error',
  not_tls: 'tls_protocol_error',
  refusal_rate: 'http_request_denied',
  key_revoked: 'http_request_denied',
};

const STATUS_TEXT: Readonly<Record<number, string>> = { 400: 'Bad Request', 403: 'Forbidden', 429: 'Too Many Requests', 502: 'Bad Gateway' };

/**
 * The status line's reason phrase: the status text and the message. Most clients drop a refused
 * CONNECT's body but print its status line (npm: "403 Forbidden (...)", pip: "Tunnel connection
 * failed: 403 Forbidden (...)", apt), so the model reads what would allow the request. Printable ASCII.
 */
export function reasonPhrase(refusal: EgressRefusal): string {
  return `${STATUS_TEXT[refusal.status] ?? 'Refused'} (${refusal.message})`.replace(/[^\x20-\x7e]/g, '?').slice(0, 512);
}

/** The refusal's response headers (besides the length): why, for the client and for tools. */
export function refusalHeaders(refusal: EgressRefusal): Record<string, string> {
  const details = refusal.message
    .slice(0, 200)
    .replace(/[\\"]/g, '')
    .replace(/[^\x20-\x7e]/g, '?');
  return {
    'content-type': 'text/plain; charset=utf-8',
    'proxy-status': `llm-socket-gateway; error=${PROXY_STATUS[refusal.reason]}; details="${details}"`,
    'x-gateway-error': `egress_${refusal.reason}`,
  };
}
