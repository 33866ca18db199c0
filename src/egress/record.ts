// The record of one egress tunnel or plain HTTP request through a key's socket: what the audit trail
// writes and `inspect` shows. Its strings come from the container (host, path, SNI) and are cut to a
// fixed length before the record is stored, logged or handed on.
import { cut } from '../metering/call-record.ts';

/** Why egress was refused, or why an allowed tunnel was cut. */
export type EgressReason =
  | 'no_policy'
  | 'not_allowed'
  | 'bad_target'
  | 'address'
  | 'resolve_failed'
  | 'connect_failed'
  | 'too_many_tunnels'
  | 'byte_budget'
  | 'sni_mismatch'
  | 'not_tls'
  | 'refusal_rate'
  | 'key_revoked';

export interface EgressRecord {
  /** Epoch milliseconds when the request arrived. */
  time: number;
  keyId: string;
  group: string;
  label?: string;
  /** `tunnel` for CONNECT, `http` for a plain HTTP request through the proxy. */
  kind: 'tunnel' | 'http';
  host: string;
  port: number;
  /** Plain HTTP only. */
  method?: string;
  path?: string;
  /** The TLS server name the client sent through the tunnel. */
  sni?: string;
  /** The address connected to (after the checks). */
  address?: string;
  decision: 'allowed' | 'denied';
  /** `npm: registry.npmjs.org:443`: the rule (per layer) that allowed it. */
  rule?: string;
  reason?: EgressReason;
  /** The status the gateway or the server answered (200 for an established tunnel). */
  status: number;
  /** Client to server, and server to client. */
  bytesUp: number;
  bytesDown: number;
  durationMs: number;
}

const LIMITS = { label: 256, host: 256, method: 16, path: 256, sni: 256, address: 64, rule: 512 } as const;

/** The record with every container-influenced string cut to its limit. */
export function boundEgressRecord(record: EgressRecord): EgressRecord {
  const bounded = { ...record };
  for (const [field, max] of Object.entries(LIMITS) as [keyof typeof LIMITS, number][]) {
    const value = bounded[field];
    if (typeof value === 'string' && value.length > max) bounded[field] = cut(value, max);
  }
  return bounded;
}
