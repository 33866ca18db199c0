// The control API tells the caller's mistakes from the gateway's bugs: a ValidationError is a 400 with
// its message, any other error a 500 whose stack goes to the daemon's log.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import type { Server } from 'node:http';
import { callControl, startControlServer } from '../src/control/socket.ts';
import { createGateway, type Gateway } from '../src/gateway.ts';

describe('control API errors', () => {
  let dir: string;
  let gateway: Gateway;
  let server: Server;
  const logLines: string[] = [];
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'gw-ctl-'));
    gateway = await createGateway({ stateDir: dir, logger: pino({ level: 'silent' }), providers: {} });
    const sink = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        logLines.push(chunk.toString());
        done();
      },
    });
    server = await startControlServer(gateway, { info: () => ({}), logger: pino({ level: 'error' }, sink) });
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    await gateway.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** The daemon's error message, or 'ok' for a 2xx answer. */
  const answer = (method: string, url: string, body?: unknown) =>
    callControl(dir, method, url, body).then(
      () => 'ok',
      (error: Error) => error.message,
    );

  test('a bad limit or budget is a 400 naming the field, and nothing is logged', async () => {
    assert.match(await answer('POST', '/v1/keys', { group: 'g', rpm: -1 }), /limit `rpm`: must be a non-negative number/);
    assert.match(await answer('PUT', '/v1/groups/g/budget', { usd: -1 }), /budget of group g \(USD\): must be a non-negative number/);
    assert.deepEqual(logLines, []);
  });

  test('a bug is a 500 and its stack is logged', async () => {
    const broken = gateway.setGroupBudget;
    // A plain TypeError, as a real bug throws: it used to be answered 400 as if the caller erred.
    gateway.setGroupBudget = () => (undefined as unknown as { x: () => void }).x();
    try {
      // Only a 500 is worded "internal error" (src/control/socket.ts).
      assert.match(await answer('PUT', '/v1/groups/g/budget', { usd: 1 }), /^internal error: /);
    } finally {
      gateway.setGroupBudget = broken;
    }
    assert.equal(logLines.length, 1);
    const line = JSON.parse(logLines[0]!) as { msg: string; err: { type: string; stack: string } };
    assert.equal(line.msg, 'control API request failed');
    assert.equal(line.err.type, 'TypeError');
    assert.match(line.err.stack, /control-errors\.test\.ts/);
  });
});
