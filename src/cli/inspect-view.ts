// How `gateway inspect` shows live keys and one key's recent calls, as plain-text tables. Paths,
// model names, session ids and labels come from clients: every value is escaped before it reaches
// the operator's terminal, so no client can send it control sequences (clipboard writes, screen
// clears, reordered text).
import type { CallRecord } from '../metering/call-record.ts';
import { formatDuration } from '../util/duration.ts';
import type { GatewaySnapshot, GroupSnapshot, KeySnapshot } from '../gateway.ts';

// C0 controls, DEL, C1 controls, and the bidi embeddings, overrides and isolates.
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;
const escapeCode = (char: string) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`;

/** `text` with every character a terminal would act on written as a visible `\uXXXX` instead. */
function printable(text: string): string {
  return text.replace(UNPRINTABLE, escapeCode);
}

// What JSON.stringify leaves raw: it escapes C0 controls only.
const UNPRINTABLE_IN_JSON = /[\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/** JSON text safe to print: those characters occur only inside strings, where `\uXXXX` means the same. */
export function printableJson(json: string): string {
  return json.replace(UNPRINTABLE_IN_JSON, escapeCode);
}

function table(header: string[], rowsIn: string[][]): string {
  const rows = rowsIn.map((row) => row.map(printable));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

const usd = (value: number) => `$${value < 10 ? value.toFixed(4) : value.toFixed(2)}`;
const ago = (time: number | undefined, now: number) => (time === undefined ? '-' : `${formatDuration(now - time)} ago`);

function spend(spent: number, budget: number | undefined): string {
  return budget === undefined ? usd(spent) : `${usd(spent)}/${usd(budget)}`;
}

export type KeyRow = Omit<KeySnapshot, 'recentCalls'> & { recentCalls?: CallRecord[] };

export function renderKeys(keys: KeyRow[], groups: GroupSnapshot[], store?: GatewaySnapshot['store'], now = Date.now()): string {
  const storeLine = store ? `shared store: ${store.state} (this host: ${printable(store.hostId)})\n\n` : '';
  return storeLine + renderTables(keys, groups, now);
}

function renderTables(keys: KeyRow[], groups: GroupSnapshot[], now: number): string {
  const groupTables = renderGroups(groups);
  if (keys.length === 0) return groupTables ? `no live keys\n\n${groupTables}` : 'no live keys';
  const rows = keys.map((key) => [
    key.id,
    key.group,
    key.label ?? '-',
    formatDuration(now - key.createdAt),
    key.expiresAt === undefined ? 'never' : formatDuration(key.expiresAt - now),
    spend(key.spentUsd, key.limits.budgetUsd),
    key.limits.rpm === undefined ? String(key.requestsLastMinute) : `${key.requestsLastMinute}/${key.limits.rpm}`,
    String(key.inFlight),
    ago(key.lastCallAt, now),
    egressCell(key),
  ]);
  const keyTable = table(['ID', 'GROUP', 'LABEL', 'AGE', 'TTL LEFT', 'SPEND/BUDGET', 'RPM', 'IN FLIGHT', 'LAST CALL', 'EGRESS (DOWN/UP)'], rows);
  return groupTables ? `${keyTable}\n\n${groupTables}` : keyTable;
}

/**
 * Groups with keys or a budget: this host's spend, and with a shared store every host's (the total
 * against the budget, then each host's share).
 */
function renderGroups(groups: GroupSnapshot[]): string {
  const shown = groups.filter((group) => group.liveKeys > 0 || group.budgetUsd !== undefined);
  if (shown.length === 0) return '';
  const sharedView = shown.some((group) => group.shared);
  const rows = shown.map((group) => [
    group.group,
    String(group.liveKeys),
    spend(group.spentUsd, group.budgetUsd),
    usd(group.reservedUsd),
    ...(sharedView ? [group.shared ? `${spend(group.shared.totalUsd, group.budgetUsd)} (${Object.keys(group.shared.hosts).length} hosts)` : '-'] : []),
  ]);
  const groupTable = table(['GROUP', 'KEYS', 'SPEND/BUDGET (THIS HOST)', 'RESERVED', ...(sharedView ? ['ALL HOSTS'] : [])], rows);
  const hostRows = shown.flatMap((group) => Object.entries(group.shared?.hosts ?? {}).map(([host, spent]) => [group.group, printable(host), usd(spent)]));
  return hostRows.length > 0 ? `${groupTable}\n\n${table(['GROUP', 'HOST', 'SPENT'], hostRows)}` : groupTable;
}

/** A limit's value as text: objects (a GitHub scope, an egress rule) as JSON. */
const item = (value: unknown): string => (typeof value === 'object' ? JSON.stringify(value) : String(value));

/** 1234567 -> "1.2 MB". */
function bytes(count: number): string {
  if (count < 1000) return `${count} B`;
  const [value, unit] = count < 1e6 ? [count / 1e3, 'kB'] : count < 1e9 ? [count / 1e6, 'MB'] : [count / 1e9, 'GB'];
  return `${value.toFixed(1)} ${unit}`;
}

/** The key's egress in one cell: tunnels open, bytes down/up. */
function egressCell(key: KeyRow): string {
  const use = key.egressUse;
  if (!use) return key.egress ? 'allowed' : '-';
  return `${use.tunnelsOpen} open, ${bytes(use.bytesDown)}/${bytes(use.bytesUp)}${use.refusals ? `, ${use.refusals} refused` : ''}`;
}

/** The key's egress totals and its last refusals (host and path come from the container: escaped by table()). */
function renderEgress(key: KeySnapshot, now: number): string {
  const use = key.egressUse;
  if (!use) return `egress     ${key.egress ? 'allowed, not used yet' : 'none'}`;
  const budget = key.limits.egressBudgetBytes === undefined ? '' : ` of ${bytes(key.limits.egressBudgetBytes)}`;
  const line = `egress     ${use.tunnels} tunnels and ${use.requests} requests (${use.tunnelsOpen} open), ${bytes(use.bytesDown)} down and ${bytes(use.bytesUp)} up${budget}, ${use.refusals} refused`;
  if (use.recentRefusals.length === 0) return line;
  const rows = use.recentRefusals.map((refusal) => [
    ago(refusal.time, now),
    refusal.method ? `${refusal.method} http://${refusal.host}:${refusal.port}${refusal.path ?? ''}` : `CONNECT ${refusal.host}:${refusal.port}`,
    String(refusal.status),
    refusal.reason ?? '-',
  ]);
  return `${line}\n\n${table(['WHEN', 'EGRESS REFUSED', 'STATUS', 'REASON'], rows)}`;
}

export function renderKey(key: KeySnapshot, now = Date.now()): string {
  const limits = Object.entries(key.limits)
    .map(([name, value]) => `${name}=${Array.isArray(value) ? value.map(item).join(',') : item(value)}`)
    .join(' ');
  const head = [
    `key        ${printable(key.id)}`,
    `group      ${printable(key.group)}${key.label ? `  label ${printable(key.label)}` : ''}`,
    `socket     ${printable(key.socketPath)}`,
    `age        ${formatDuration(now - key.createdAt)}, ttl left ${key.expiresAt === undefined ? 'never' : formatDuration(key.expiresAt - now)}`,
    `spend      ${spend(key.spentUsd, key.limits.budgetUsd)} (reserved ${usd(key.reservedUsd)})`,
    `traffic    ${key.calls} calls, ${key.requestsLastMinute} requests and ${key.tokensLastMinute} tokens in the last minute, ${key.inFlight} in flight`,
    `refusals   ${key.refusalsLastMinute ?? 0} in the last minute, ${key.refusalsSuppressed ?? 0} counted in audit summaries instead of one line each`,
    `limits     ${printable(limits) || 'none'}`,
    `services   ${key.services?.map((grant) => (grant.kind === 'mcp' ? `${grant.name} (mcp)` : grant.name)).join(', ') || 'none'}`,
    renderEgress(key, now),
  ].join('\n');
  if (key.recentCalls.length === 0) return `${head}\n\nno calls yet`;
  const rows = key.recentCalls.map((call) => [
    ago(call.time, now),
    `${call.method} ${call.path}`,
    call.model ?? '-',
    String(call.status),
    call.stream ? 'yes' : 'no',
    `${call.inputTokens ?? 0}/${call.outputTokens ?? 0}/${(call.cacheWriteTokens ?? 0) + (call.cacheWrite1hTokens ?? 0)}/${call.cacheReadTokens ?? 0}`,
    usd(call.costUsd),
    `${Math.round(call.latencyMs)}ms`,
    call.errorKind ?? call.outcome,
  ]);
  return `${head}\n\n${table(['WHEN', 'REQUEST', 'MODEL', 'STATUS', 'STREAM', 'IN/OUT/CW/CR', 'COST', 'LATENCY', 'OUTCOME'], rows)}`;
}
