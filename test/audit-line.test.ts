// An audit line: `{"record":KIND,"time":"<ISO>",...}` for a call or a record of another kind,
// whatever the order its fields were built in (records built with `time` first take a faster way).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { type AuditedRecord, AuditTrail, isoTime } from '../src/metering/audit.ts';
import type { CallRecord } from '../src/metering/call-record.ts';

const TIME = Date.UTC(2026, 11, 2, 8, 30, 15, 123);

function call(overrides: Partial<CallRecord> = {}): CallRecord {
  return {
    time: TIME,
    keyId: 'k1',
    group: 'g',
    method: 'POST',
    path: '/v1/messages',
    model: 'claude-sonnet-4-5',
    attempts: 1,
    stream: false,
    status: 200,
    outcome: 'complete',
    latencyMs: 1.25,
    requestBytes: 105,
    responseBytes: 304,
    inputTokens: 10,
    outputTokens: 5,
    costUsd: 0.000105,
    ...overrides,
  };
}

async function linesOf(records: CallRecord[], egress: AuditedRecord[] = []): Promise<string[]> {
  const dir = mkdtempSync(path.join(tmpdir(), 'audit-line-'));
  try {
    const file = path.join(dir, 'audit.jsonl');
    const audit = new AuditTrail(dir, { file });
    for (const record of records) audit.write(record);
    for (const record of egress) audit.writeRecord('egress', record, false);
    await audit.close();
    return readFileSync(file, 'utf8').trim().split('\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a call is one line that starts with its kind and its ISO time, in either field order', async () => {
  const timeFirst = call();
  const { time, ...rest } = call({ keyId: 'k2' });
  const timeLater = { ...rest, time } as CallRecord;
  const [first, later] = await linesOf([timeFirst, timeLater]);
  const iso = new Date(TIME).toISOString();
  for (const line of [first!, later!]) {
    assert.ok(line.startsWith(`{"record":"call","time":"${iso}",`), line);
    const parsed = JSON.parse(line) as Record<string, unknown>;
    assert.equal(Object.keys(parsed).filter((name) => name === 'time').length, 1);
  }
  const { record: _kind, time: _time, ...fields } = JSON.parse(first!) as Record<string, unknown>;
  assert.deepEqual(fields, { ...rest, keyId: 'k1' });
  assert.equal((JSON.parse(later!) as Record<string, unknown>).keyId, 'k2');
});

test('fields left undefined are left out of the line', async () => {
  const [line] = await linesOf([call({ label: undefined, ttfbMs: undefined, errorKind: undefined })]);
  const parsed = JSON.parse(line!) as Record<string, unknown>;
  assert.equal('label' in parsed, false);
  assert.equal('ttfbMs' in parsed, false);
  assert.equal(parsed.latencyMs, 1.25);
});

test('a record of another kind is one line the same way: its kind, then its ISO time', async () => {
  const [line] = await linesOf([], [{ time: TIME, keyId: 'k1', group: 'g', status: 200, host: 'registry.npmjs.org' } as AuditedRecord]);
  assert.ok(line!.startsWith(`{"record":"egress","time":"${new Date(TIME).toISOString()}",`), line);
  assert.deepEqual(JSON.parse(line!), {
    record: 'egress',
    time: new Date(TIME).toISOString(),
    keyId: 'k1',
    group: 'g',
    status: 200,
    host: 'registry.npmjs.org',
  });
});

test('the line time is the ISO time of the record, each second formatted once', () => {
  const times = [
    TIME,
    TIME + 1,
    TIME + 877,
    TIME + 1000,
    TIME + 0.75,
    0,
    -1,
    -999,
    -1000,
    Date.UTC(9999, 11, 31, 23, 59, 59, 999),
    Date.UTC(10000, 0, 1, 0, 0, 0, 7),
  ];
  for (let i = 0; i < 200; i++) times.push(Math.floor(Math.random() * 4e12) - 1e12);
  for (const ms of times) assert.equal(isoTime(ms), new Date(ms).toISOString(), String(ms));
  // Out of range is an error, as it is for a Date, and leaves the next time right.
  assert.throws(() => isoTime(8.64e15 + 1000), RangeError);
  assert.equal(isoTime(TIME), new Date(TIME).toISOString());
});
