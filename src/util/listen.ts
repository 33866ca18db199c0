// `HOST:PORT` (or `[v6]:PORT`, or a bare port meaning loopback) for the telemetry listeners.
import { isIP } from 'node:net';
import { ValidationError } from '../util/validation.ts';

/** Where a listener binds. */
export interface ListenAddress {
  host: string;
  port: number;
}

export function parseListenAddress(text: string, field: string): ListenAddress {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text) ?? /^()()(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : Number.NaN;
  if (!match || !(port >= 0 && port <= 65535)) throw new ValidationError(field, `must be HOST:PORT (127.0.0.1:9464), got "${text.slice(0, 80)}"`);
  const host = match[1] || match[2] || '127.0.0.1';
  if (match[1] !== undefined && isIP(host) !== 6) throw new ValidationError(field, `"${host.slice(0, 64)}" is not an IPv6 address`);
  return { host, port };
}
