// Egress rules: what a key's or a group's allowlist says, compiled once and matched per request.
// A rule allows a host (exact, `*.suffix` for its subdomains, or `*`) on some ports; where the
// request is visible (plain HTTP through the proxy) it may also narrow methods and path prefixes;
// it may name non-public addresses (CIDRs) it is allowed to reach, which are otherwise refused.
// An entry is a rule, `host[:port]` shorthand, or the name of a preset (a list of entries).
import { BlockList, isIP } from 'node:net';
import type { EgressEntry, EgressRule } from '../keys/limits.ts';
import { ValidationError } from '../util/validation.ts';

export type { EgressEntry };

/** A rule ready to match, with the words a refusal or an audit line uses for it. */
export interface CompiledRule {
  /** Where it came from: a preset's name, or `key` / `group` for a rule written there. */
  source: string;
  /** The rule as it reads: `registry.npmjs.org:443`. */
  text: string;
  host: string;
  ports: ReadonlySet<number> | 'any';
  methods?: ReadonlySet<string>;
  paths?: readonly string[];
  addresses?: BlockList;
}

/** What a request asks to reach. `method` and `path` are known for plain HTTP only. */
export interface EgressTarget {
  host: string;
  port: number;
  method?: string;
  path?: string;
}

const DEFAULT_PORTS: ReadonlySet<number> = new Set([80, 443]);
/** Bounds on what a policy may hold: entries per list, and preset nesting depth (presets name presets). */
const MAX_ENTRIES = 256;
const MAX_PRESET_DEPTH = 4;
const PRESET_NAME = /^[a-z][a-z0-9_-]{0,63}$/;

/**
 * Compiles `entries` (a key's, a group's or a preset's) against `presets`; throws a ValidationError
 * naming `field` for anything malformed or an unknown preset.
 */
export function compileEntries(
  entries: unknown,
  presets: Readonly<Record<string, readonly EgressEntry[]>>,
  field: string,
  source: string,
  depth = 0,
): CompiledRule[] {
  if (!Array.isArray(entries)) throw new ValidationError(field, 'must be an array of hosts ("host[:port]"), preset names or rules { host, ports, ... }');
  if (entries.length > MAX_ENTRIES) throw new ValidationError(field, `may hold at most ${MAX_ENTRIES} entries`);
  const rules: CompiledRule[] = [];
  entries.forEach((entry: unknown, i) => {
    const where = `${field}[${i}]`;
    if (typeof entry === 'string' && PRESET_NAME.test(entry) && !entry.includes('.')) {
      const preset = presets[entry];
      if (!preset || !Object.hasOwn(presets, entry)) {
        throw new ValidationError(where, `no egress preset named "${entry}" (known: ${Object.keys(presets).sort().join(', ')}); a host needs a dot or a port`);
      }
      if (depth >= MAX_PRESET_DEPTH) throw new ValidationError(where, `presets nest more than ${MAX_PRESET_DEPTH} deep`);
      rules.push(...compileEntries(preset, presets, `egress.presets.${entry}`, entry, depth + 1));
    } else if (typeof entry === 'string') {
      rules.push(compileRule(parseShorthand(entry, where), where, source));
    } else if (entry !== null && typeof entry === 'object' && !Array.isArray(entry)) {
      rules.push(compileRule(entry as EgressRule, where, source));
    } else {
      throw new ValidationError(where, 'must be "host[:port]", a preset name, or a rule { host, ports, methods, paths, addresses }');
    }
  });
  return rules;
}

function parseShorthand(text: string, field: string): EgressRule {
  const bracketed = /^\[([^\]]+)\](?::(\d+|\*))?$/.exec(text);
  if (bracketed) return withPort({ host: bracketed[1]! }, bracketed[2], field);
  const colon = text.lastIndexOf(':');
  // A bare IPv6 literal has colons and no port.
  if (colon === -1 || isIP(text) === 6) return { host: text };
  return withPort({ host: text.slice(0, colon) }, text.slice(colon + 1), field);
}

function withPort(rule: EgressRule, port: string | undefined, field: string): EgressRule {
  if (port === undefined) return rule;
  if (port === '*') return { ...rule, ports: [] };
  const number = Number(port);
  if (!/^\d{1,5}$/.test(port) || number < 1 || number > 65535) throw new ValidationError(field, `port must be 1-65535 or *, got "${port}"`);
  return { ...rule, ports: [number] };
}

const RULE_FIELDS = new Set(['host', 'ports', 'methods', 'paths', 'addresses']);

function compileRule(rule: EgressRule, field: string, source: string): CompiledRule {
  for (const name of Object.keys(rule)) {
    if (!RULE_FIELDS.has(name)) throw new ValidationError(`${field}.${name}`, 'is unknown (expected host, ports, methods, paths, addresses)');
  }
  const host = checkHostPattern(rule.host, `${field}.host`);
  const ports = rule.ports === undefined ? DEFAULT_PORTS : checkPorts(rule.ports, `${field}.ports`);
  const methods =
    rule.methods === undefined ? undefined : new Set(checkStrings(rule.methods, `${field}.methods`, /^[A-Za-z]{1,16}$/).map((m) => m.toUpperCase()));
  const paths = rule.paths === undefined ? undefined : checkStrings(rule.paths, `${field}.paths`, /^\/[\x21-\x7e]{0,255}$/);
  const addresses = rule.addresses === undefined ? undefined : blockListOf(rule.addresses, `${field}.addresses`);
  // An IP literal names its own address: a rule for 10.0.0.5 may reach 10.0.0.5.
  const literal = isIP(host);
  const named = literal ? (addresses ?? new BlockList()) : addresses;
  if (literal) named!.addAddress(host, literal === 6 ? 'ipv6' : 'ipv4');
  return {
    source,
    text: ruleText(host, ports, methods, paths),
    host,
    ports,
    ...(methods ? { methods } : {}),
    ...(paths ? { paths } : {}),
    ...(named ? { addresses: named } : {}),
  };
}

function checkHostPattern(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new ValidationError(field, 'must be a host name, "*.domain", an IP literal or "*"');
  const host = value.toLowerCase().replace(/\.$/, '');
  if (host === '*' || isIP(host)) return host;
  const name = host.startsWith('*.') ? host.slice(2) : host;
  if (name.length > 253 || !/^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$/.test(name)) {
    throw new ValidationError(field, `must be a host name, "*.domain", an IP literal or "*", got "${value}"`);
  }
  return host;
}

function checkPorts(value: unknown, field: string): ReadonlySet<number> | 'any' {
  if (!Array.isArray(value) || !value.every((port) => Number.isInteger(port) && port >= 1 && port <= 65535)) {
    throw new ValidationError(field, 'must be an array of ports (1-65535); empty for any port');
  }
  return value.length === 0 ? 'any' : new Set(value as number[]);
}

function checkStrings(value: unknown, field: string, shape: RegExp): string[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > 64 || !value.every((item) => typeof item === 'string' && shape.test(item))) {
    throw new ValidationError(field, `must be a non-empty array of strings like ${shape.source}`);
  }
  return value as string[];
}

function blockListOf(value: unknown, field: string): BlockList {
  const list = new BlockList();
  if (!Array.isArray(value) || value.length > 64) throw new ValidationError(field, 'must be an array of IP addresses or CIDRs');
  for (const item of value) {
    const [address, prefix] = typeof item === 'string' ? item.split('/') : [];
    const family = address ? isIP(address) : 0;
    const bits = prefix === undefined ? undefined : /^\d{1,3}$/.test(prefix) ? Number(prefix) : Number.NaN;
    if (!family || (bits !== undefined && !(bits <= (family === 4 ? 32 : 128)))) {
      throw new ValidationError(field, `must be an array of IP addresses or CIDRs, got ${JSON.stringify(item)}`);
    }
    const type = family === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(address!, type);
    else list.addSubnet(address!, bits, type);
  }
  return list;
}

function ruleText(host: string, ports: ReadonlySet<number> | 'any', methods?: ReadonlySet<string>, paths?: readonly string[]): string {
  const shownHost = isIP(host) === 6 ? `[${host}]` : host;
  const portText = ports === 'any' ? '*' : [...ports].join(',');
  const visible = [methods && [...methods].join('|'), paths?.join('|')].filter(Boolean).join(' ');
  return `${shownHost}:${portText}${visible ? ` (${visible})` : ''}`;
}

/** Whether `host` (lower-case, no trailing dot) is one `pattern` names. */
function hostMatches(pattern: string, host: string): boolean {
  if (pattern === '*') return true;
  if (pattern.startsWith('*.')) return host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1;
  return pattern === host;
}

/** How a rule relates to a target: it allows it, or it names the host but not this use of it. */
export type RuleMatch = { kind: 'allows' } | { kind: 'other_host' } | { kind: 'near'; why: string };

export function matchRule(rule: CompiledRule, target: EgressTarget): RuleMatch {
  if (!hostMatches(rule.host, target.host)) return { kind: 'other_host' };
  if (rule.ports !== 'any' && !rule.ports.has(target.port)) return { kind: 'near', why: `${rule.text} allows other ports` };
  if (rule.methods || rule.paths) {
    if (target.method === undefined) return { kind: 'near', why: `${rule.text} allows only plain HTTP requests it can see, not a tunnel` };
    if (rule.methods && !rule.methods.has(target.method)) return { kind: 'near', why: `${rule.text} allows other methods` };
    if (rule.paths && !rule.paths.some((prefix) => target.path?.startsWith(prefix))) return { kind: 'near', why: `${rule.text} allows other paths` };
  }
  return { kind: 'allows' };
}
