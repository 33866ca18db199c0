// The spend ledger: durable the moment a call is settled, totals across restarts, compaction.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { Ledger } from '../src/metering/ledger.ts';

const noError = (error: unknown) => assert.fail(`unexpected ledger write error: ${String(error)}`);

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'ledger-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('a recorded spend is in the file when record() returns, before any close', () =>
  withDir(async (dir) => {
    const file = path.join(dir, 'spend.jsonl');
    const ledger = await Ledger.open(file, new Set(), noError);
    ledger.record('team', 'k1', 0.25);
    // Nothing awaited in between: a SIGKILL now would keep this line.
    const [line] = (await readFile(file, 'utf8')).trim().split('\n');
    assert.deepEqual({ ...JSON.parse(line!), t: 0 }, { t: 0, group: 'team', key: 'k1', usd: 0.25 });
    ledger.record('team', 'k1', 0); // nothing spent: nothing written
    assert.equal((await readFile(file, 'utf8')).trim().split('\n').length, 1);
    await ledger.close();
  }));

test('past 10,000 lines the file is rewritten as one line per group, live keys keeping theirs', () =>
  withDir(async (dir) => {
    const file = path.join(dir, 'spend.jsonl');
    const lines: string[] = [];
    for (let i = 0; i < 10_001; i++) lines.push(JSON.stringify({ t: i, group: i % 2 ? 'odd' : 'even', key: i === 4 ? 'live' : `k${i}`, usd: 0.001 }));
    await writeFile(file, `${lines.join('\n')}\n{"t":1,"group":"torn","usd":`);
    const ledger = await Ledger.open(file, new Set(['live']), noError);
    assert.ok(Math.abs(ledger.spent('even') - 5001 * 0.001) < 1e-9);
    assert.ok(Math.abs(ledger.spent('odd') - 5000 * 0.001) < 1e-9);
    assert.equal(ledger.spent('torn'), 0, 'a torn last line counts for nothing');
    assert.ok(Math.abs(ledger.spentByRestoredKey('live') - 0.001) < 1e-12);
    await ledger.close();
    const rewritten = (await readFile(file, 'utf8'))
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { group: string; key?: string; usd: number });
    assert.equal(rewritten.length, 3, 'one line per group plus one for the live key');
    assert.deepEqual(rewritten.map((entry) => `${entry.group}/${entry.key ?? '-'}`).sort(), ['even/-', 'even/live', 'odd/-']);
    const reopened = await Ledger.open(file, new Set(['live']), noError);
    assert.ok(Math.abs(reopened.spent('even') - 5001 * 0.001) < 1e-9, 'totals survive compaction');
    assert.ok(Math.abs(reopened.spentByRestoredKey('live') - 0.001) < 1e-12);
    await reopened.close();
  }));
