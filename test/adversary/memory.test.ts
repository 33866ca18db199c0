// Class 3 of issue 12: request bodies held in memory. Many concurrent big bodies from one key stay
// within the key's share of the body pool (the rest get 429 with retry-after), the gateway's own
// count returns to zero, and another key keeps being served.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startFixture, type Fixture } from '../support/fixture.ts';
import { anthropicHeaders, request } from '../support/http.ts';

const MiB = 1024 * 1024;
const PAYLOAD = Buffer.alloc(4 * MiB, 0x61);
const message = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] });

/** Sends headers declaring `size` bytes and then `sent` of them; resolves with the status line or ''. */
function bigBody(socketPath: string, size: number, sent: number): { status: Promise<number>; socket: net.Socket } {
  const socket = net.connect(socketPath);
  socket.on('error', () => undefined);
  socket.write(
    `POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\ncontent-length: ${size}\r\n\r\n{"model":"claude-sonnet-4-5","messages":"`,
  );
  socket.write(PAYLOAD.subarray(0, sent)); // one buffer for every sender: the test's own memory stays flat
  const status = new Promise<number>((resolve) => {
    let received = '';
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      if (received.includes('\r\n')) resolve(Number(received.split(' ')[1]));
    });
    socket.on('close', () => resolve(0));
  });
  return { status, socket };
}

describe('request-body memory in flight', () => {
  let fx: Fixture;
  let attacker: string;
  let bystander: string;
  before(async () => {
    fx = await startFixture({}, { maxBodyMemoryBytes: 64 * MiB, maxBodyMemoryPerKeyBytes: 32 * MiB, maxBodyBytes: 8 * MiB });
    attacker = (await fx.gateway.mint({ group: 'attacker', maxConcurrent: 100 })).socketPath;
    bystander = (await fx.gateway.mint({ group: 'bystander' })).socketPath;
  });
  after(() => fx.close());

  test('many concurrent big bodies from one key: bounded memory, 429 past its share, another key still served', async () => {
    const rssBefore = process.memoryUsage().rss;
    // 24 bodies of 8 MiB each, half sent and then held open: 192 MiB if all were kept.
    const attacks = Array.from({ length: 24 }, () => bigBody(attacker, 8 * MiB, 4 * MiB));
    const refused = await Promise.race([
      Promise.all(attacks.slice(4).map((a) => a.status)),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no refusals')), 10_000)),
    ]);
    assert.ok(
      refused.every((status) => status === 429),
      `statuses ${refused}`,
    );
    const rssDuring = process.memoryUsage().rss;
    const res = await request({ socketPath: bystander, path: '/v1/messages', headers: anthropicHeaders(), body: message });
    assert.equal(res.status, 200, 'another key is served while the attacker holds its share');
    // Four 8 MiB bodies fit the 32 MiB share; the refused ones were never read past their headers.
    assert.ok(rssDuring - rssBefore < 96 * MiB, `RSS grew ${((rssDuring - rssBefore) / MiB).toFixed(0)} MiB`);
    for (const attack of attacks) attack.socket.destroy();
    await Promise.all(attacks.slice(0, 4).map((a) => a.status));
  });

  test('a body sent a byte at a time is held in about its own size, and served', async () => {
    // A client in a process of its own, so that only the gateway's memory is in this one: it writes
    // 512 KB one byte per write (the gateway reads a few bytes at a time), then the last byte.
    const size = 512 * 1024;
    const client = `
      const net = require('node:net');
      const body = '{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"' + 'x'.repeat(${size} - 90) + '"}]}';
      const socket = net.connect(process.argv[1]);
      let reply = '';
      socket.on('data', (data) => (reply += data));
      socket.on('close', () => {
        console.log(reply.split(' ')[1]);
        process.disconnect();
      });
      socket.write('POST /v1/messages HTTP/1.1\\r\\nhost: x\\r\\ncontent-type: application/json\\r\\nanthropic-version: 2023-06-01\\r\\nconnection: close\\r\\ncontent-length: ' + body.length + '\\r\\n\\r\\n');
      (async () => {
        for (let i = 0; i < body.length - 1; i++) {
          if (!socket.write(body[i])) await new Promise((resolve) => socket.once('drain', resolve));
          if (i % 2 === 0) await new Promise((resolve) => setImmediate(resolve));
        }
        process.send('all but the last');
        process.once('message', () => socket.write(body[body.length - 1]));
      })();`;
    const rssBefore = process.memoryUsage().rss;
    const child = spawn(process.execPath, ['-e', client, attacker], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    await new Promise((resolve, reject) => {
      child.once('message', resolve);
      child.once('exit', (code) => reject(new Error(`the client exited (${code}) before sending its body`)));
    });
    const rssHeld = process.memoryUsage().rss;
    // Each chunk kept as it was read held about 140 bytes of RSS per byte of body (70 MiB here).
    assert.ok(rssHeld - rssBefore < 24 * MiB, `RSS grew ${((rssHeld - rssBefore) / MiB).toFixed(1)} MiB for 0.5 MiB of body`);
    let status = '';
    child.stdout!.on('data', (data) => (status += data));
    child.send('last byte');
    await new Promise((resolve) => child.once('exit', resolve));
    assert.equal(status.trim(), '200');
  });

  test('a body larger than any key could hold is 413; a declared size past the share is refused before any byte is read', async () => {
    const small = await startFixture({}, { maxBodyMemoryBytes: 4 * MiB, maxBodyBytes: 8 * MiB });
    try {
      const key = (await small.gateway.mint({ group: 'g' })).socketPath;
      const attempt = bigBody(key, 6 * MiB, 0);
      assert.equal(await attempt.status, 413);
      attempt.socket.destroy();
    } finally {
      await small.close();
    }
  });
});
