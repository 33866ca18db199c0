// Class 1 and the refusal part of class 6 of docs/security.md: one key floods the gateway with
// requests that carry long client strings (paths, session ids, model names) and get refused. The
// gateway must stay up with bounded memory, keep serving other keys, write a bounded audit trail,
// cut the flooding key off cheaply, and never print a client's control characters to the operator.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { describe, test } from 'node:test';
import { MAX_AUDIT_LINE_BYTES } from '../../src/metering/audit.ts';
import { RECORD_STRING_LIMITS } from '../../src/metering/call-record.ts';
import { printableJson, renderKey, renderKeys } from '../../src/cli/inspect-view.ts';
import { Refusals } from '../../src/metering/refusals.ts';
import { startChildGateway } from '../support/child-gateway.ts';
import { startFixture } from '../support/fixture.ts';
import { anthropicHeaders, request } from '../support/http.ts';

const chat = (model: string) => JSON.stringify({ model, max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
const padded = (tag: string, length: number) => tag.padEnd(length, 'x');

/** Characters a terminal acts on: C0 (newline aside, the tables' own), DEL, C1, bidi controls. */
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

describe('adversary: client strings and refusals', () => {
  test('a flood of long paths, session ids and model names: the gateway lives with bounded memory, other keys are served, audit lines stay small', {
    timeout: 60_000,
  }, async () => {
    const child = await startChildGateway({
      heapMb: 64,
      // Every refusal written one line each: this test measures the size of a line, not the summaries.
      gateway: { audit: { refusalLinesPerMinute: 1_000_000 } },
      keys: [{ group: 'attacker', models: ['claude-*'], maxRefusalsPerMinute: 1_000_000 }, { group: 'victim' }],
    });
    try {
      const [attacker, victim] = child.keys;
      const flood = 1500;
      const batch = 25;
      let maxRss = 0;
      let refused = 0;
      for (let i = 0; i < flood; i += batch) {
        const requests = [];
        for (let j = i; j < i + batch; j++) {
          const tag = `${j}-`;
          const kind = j % 3;
          requests.push(
            kind === 0
              ? request({ socketPath: attacker!.socketPath, path: `/v1/${padded(tag, 12_000)}`, headers: anthropicHeaders(), body: chat('claude-x') })
              : kind === 1
                ? request({
                    socketPath: attacker!.socketPath,
                    path: '/v1/messages',
                    headers: anthropicHeaders({ 'x-claude-code-session-id': padded(tag, 12_000) }),
                    body: chat('gpt-5'),
                  })
                : request({ socketPath: attacker!.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: chat(padded(`gpt-${tag}`, 250)) }),
          );
        }
        for (const answer of await Promise.all(requests)) {
          assert.ok(answer.status === 404 || answer.status === 403, `refused, got ${answer.status}`);
          refused++;
        }
        const served = await request({ socketPath: victim!.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: chat('claude-sonnet-4-5') });
        assert.equal(served.status, 200, 'the other key is served throughout');
        maxRss = Math.max(maxRss, await child.rssBytes());
      }
      assert.ok(child.alive(), 'the gateway survived the flood');
      assert.equal(refused, flood);
      assert.ok(maxRss < 256 * 2 ** 20, `RSS stayed bounded (max ${(maxRss / 2 ** 20).toFixed(0)} MiB)`);

      // What inspect keeps for the attacker is bounded too.
      const snapshot = await child.inspect(attacker!.id);
      assert.ok(snapshot.recentCalls.length <= 20);
      for (const call of snapshot.recentCalls) {
        assert.ok(call.path.length <= RECORD_STRING_LIMITS.path);
        assert.ok((call.sessionId ?? '').length <= RECORD_STRING_LIMITS.sessionId);
        assert.ok((call.model ?? '').length <= RECORD_STRING_LIMITS.model);
      }
      assert.ok(snapshot.refusalsLastMinute >= flood);

      // Audit lines are written in batches (a tenth of a second apart at most): read until the flood's are in.
      const readAudit = async () => {
        const audit = await readFile(path.join(child.stateDir, 'audit.jsonl'), 'utf8');
        const lines = audit.trimEnd().split('\n');
        const rejected = lines.map((line) => JSON.parse(line) as { outcome?: string; path?: string }).filter((record) => record.outcome === 'rejected');
        return { audit, lines, rejected };
      };
      let { audit, lines, rejected } = await readAudit();
      for (const deadline = Date.now() + 5000; rejected.length < flood && Date.now() < deadline; ) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        ({ audit, lines, rejected } = await readAudit());
      }
      assert.ok(rejected.length >= flood, `one line per refusal (${rejected.length})`);
      const longest = Math.max(...lines.map((line) => Buffer.byteLength(line) + 1));
      assert.ok(longest <= MAX_AUDIT_LINE_BYTES, `longest line ${longest} bytes`);
      // Before: 12,300 bytes per refusal (the whole path or header copied into each line).
      const perRefusal = Buffer.byteLength(audit) / rejected.length;
      assert.ok(perRefusal < 1024, `${perRefusal.toFixed(0)} bytes per refusal`);
      console.log(
        `# ${flood} refusals: max RSS ${(maxRss / 2 ** 20).toFixed(0)} MiB, audit ${(Buffer.byteLength(audit) / 1024).toFixed(0)} KiB, ${perRefusal.toFixed(0)} bytes per refusal, longest line ${longest} bytes`,
      );
    } finally {
      await child.close();
    }
  });

  test('past maxRefusalsPerMinute a key is answered 429 at once, before its body is read, and its connection closed; other keys are unaffected', {
    timeout: 60_000,
  }, async () => {
    const fixture = await startFixture({}, { defaultLimits: { maxRefusalsPerMinute: 10 } });
    try {
      const attacker = await fixture.gateway.mint({ group: 'a' });
      const victim = await fixture.gateway.mint({ group: 'b' });
      for (let i = 0; i < 10; i++) {
        const answer = await request({ socketPath: attacker.socketPath, path: `/v1/nothing-${i}`, headers: anthropicHeaders(), body: '{}' });
        assert.equal(answer.status, 404);
      }
      // A valid call, announced with a body it never sends: answered without waiting for the body.
      const answer = await new Promise<http.IncomingMessage>((resolve, reject) => {
        const req = http.request(
          {
            socketPath: attacker.socketPath,
            method: 'POST',
            path: '/v1/messages',
            headers: { ...anthropicHeaders(), 'content-length': String(1024 * 1024) },
            agent: false,
          },
          resolve,
        );
        req.on('error', reject);
        req.flushHeaders();
      });
      answer.resume();
      assert.equal(answer.statusCode, 429);
      assert.equal(answer.headers['x-gateway-error'], 'rate_limited');
      assert.equal(answer.headers.connection, 'close');
      assert.ok(Number(answer.headers['retry-after']) >= 1 && Number(answer.headers['retry-after']) <= 60);
      const valid = await request({ socketPath: attacker.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: chat('claude-sonnet-4-5') });
      assert.equal(valid.status, 429, 'even a valid call waits until the refusals age out');
      assert.equal(fixture.standin.requests.length, 0, 'nothing went upstream for the attacker');

      const served = await request({ socketPath: victim.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: chat('claude-sonnet-4-5') });
      assert.equal(served.status, 200);
      const snapshot = fixture.gateway.inspect().keys.find((key) => key.id === attacker.id)!;
      assert.equal(snapshot.refusalsLastMinute, 12);
    } finally {
      await fixture.close();
    }
  });

  test('the refusal count slides over a minute in fixed memory, and retry-after says when the key may come back', () => {
    const refusals = new Refusals();
    const t0 = 1_700_000_000_000;
    for (let i = 0; i < 10; i++) refusals.add('k', t0 + i * 1000);
    refusals.add('other', t0);
    assert.equal(refusals.check('k', 11, t0 + 9500), undefined);
    const refused = refusals.check('k', 10, t0 + 9500);
    assert.equal(refused?.kind, 'rate_limited');
    // The oldest refusal leaves the window at t0 + 60 s: 50.5 s from now, rounded up.
    assert.equal(refused?.headers['retry-after'], '51');
    assert.equal(refusals.check('k', 10, t0 + 59_999)?.kind, 'rate_limited');
    assert.equal(refusals.check('k', 10, t0 + 60_000), undefined);
    assert.equal(refusals.lastMinute('k', t0 + 60_000), 9);
    // A flood in one second is one bucket; hours later nothing is left.
    for (let i = 0; i < 100_000; i++) refusals.add('k', t0 + 70_000);
    assert.equal(refusals.lastMinute('k', t0 + 70_000), 100_000); // the first ten are more than a minute old
    assert.equal(refusals.lastMinute('k', t0 + 3_600_000), 0);
    assert.equal(refusals.check('k', 1, t0 + 3_600_000), undefined);
    // Default limit: 120.
    for (let i = 0; i < 119; i++) refusals.add('d', t0);
    assert.equal(refusals.check('d', undefined, t0), undefined);
    refusals.add('d', t0);
    assert.equal(refusals.check('d', undefined, t0)?.kind, 'rate_limited');
  });

  test('past the per-key rate, refusals are counted in one summary audit line instead of one line each', { timeout: 60_000 }, async () => {
    const fixture = await startFixture({}, { defaultLimits: { maxRefusalsPerMinute: 10_000 }, audit: { refusalLinesPerMinute: 20 } });
    try {
      const attacker = await fixture.gateway.mint({ group: 'a' });
      const refusals = 300;
      for (let i = 0; i < refusals; i += 30) {
        await Promise.all(
          Array.from({ length: 30 }, (_, j) =>
            request({ socketPath: attacker.socketPath, path: `/v1/${padded(`${i + j}-`, 4000)}`, headers: anthropicHeaders(), body: '{}' }),
          ),
        );
      }
      const snapshot = fixture.gateway.inspect().keys.find((key) => key.id === attacker.id)!;
      assert.equal(snapshot.refusalsSuppressed, refusals - 20);
      assert.equal(snapshot.recentCalls.length, 20, 'inspect still shows the latest refusals');
      assert.match(renderKey(snapshot), new RegExp(`${refusals - 20} counted in audit summaries`));

      await fixture.gateway.close(); // writes the open window's summary
      const audit = await readFile(path.join(fixture.stateDir, 'audit.jsonl'), 'utf8');
      const records = audit
        .trimEnd()
        .split('\n')
        .map((line) => JSON.parse(line) as Record<string, unknown>);
      assert.equal(records.filter((record) => record.outcome === 'rejected').length, 20);
      const summaries = records.filter((record) => record.record === 'refusals_suppressed');
      assert.equal(summaries.length, 1);
      assert.equal(summaries[0]!.keyId, attacker.id);
      assert.equal(summaries[0]!.suppressed, refusals - 20);
      assert.deepEqual(summaries[0]!.byStatus, { 404: refusals - 20 });
      // Before: 4 KiB paths made 1.2 MB of lines for these 300 refusals.
      assert.ok(Buffer.byteLength(audit) < 20 * 1024, `${Buffer.byteLength(audit)} bytes of audit for ${refusals} refusals`);
    } finally {
      await fixture.close();
    }
  });

  test('inspect prints no raw control or bidi characters from a hostile model name, session id, or label', { timeout: 60_000 }, async () => {
    const fixture = await startFixture();
    try {
      const hostile = '\u001b]52;c;ZXZpbA==\u0007\u001b[2J\u009b31m\u007f\u202etxt.exe\u2066';
      const key = await fixture.gateway.mint({ group: 'g', label: `lab${hostile}`, models: ['claude-*'] });
      const refused = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: chat(`m${hostile}`) });
      assert.equal(refused.status, 403);
      // Node refuses raw high bytes in a path, not in a header value: it reads them as latin1, and 0x9b is the C1 CSI.
      await new Promise<void>((resolve) => {
        const head = `POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-claude-code-session-id: s\x9b2J\x85\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(chat('m'))}\r\n\r\n`;
        const socket = net.connect(key.socketPath, () => socket.end(Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(chat('m'))])));
        socket.on('data', () => undefined);
        socket.on('close', () => resolve());
        socket.on('error', () => resolve());
      });
      const snapshot = fixture.gateway.inspect().keys.find((k) => k.id === key.id)!;
      assert.ok(
        snapshot.recentCalls.some((call) => call.model?.includes('\u001b]52')),
        'the record keeps what the client sent',
      );
      assert.ok(
        snapshot.recentCalls.some((call) => call.sessionId?.includes('\u009b')),
        'the raw header reached the record',
      );

      const outputs = {
        key: renderKey(snapshot),
        keys: renderKeys([snapshot], fixture.gateway.inspect().groups),
        json: printableJson(JSON.stringify(snapshot, null, 2)),
      };
      for (const [name, output] of Object.entries(outputs)) {
        assert.doesNotMatch(output, RAW_CONTROL, `${name}: no raw control characters`);
      }
      assert.match(outputs.key, /m\\u001b\]52;c;ZXZpbA==\\u0007\\u001b\[2J\\u009b31m\\u007f\\u202etxt\.exe\\u2066/, 'shown escaped, not dropped');
      assert.deepEqual(JSON.parse(outputs.json), JSON.parse(JSON.stringify(snapshot)), 'the JSON still means the same');
    } finally {
      await fixture.close();
    }
  });
});
