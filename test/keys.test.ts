// Keys and their sockets: identity by socket, revoke, expiry, permissions, and close().
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { eventually, startFixture, type Fixture } from './support/fixture.ts';
import { anthropicHeaders, openaiHeaders, request } from './support/http.ts';
import { isRoot, skipUnless } from './support/requirements.ts';

const message = JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] });

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

function connectFails(socketPath: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    socket.on('connect', () => {
      socket.destroy();
      resolve('connected');
    });
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
  });
}

describe('keys', () => {
  let fx: Fixture;
  before(async () => {
    fx = await startFixture();
  });
  after(() => fx.close());

  test('mint makes a private directory holding the socket', async () => {
    const key = await fx.gateway.mint({ group: 'family', label: 'chat-1', ttlMs: 60_000 });
    assert.match(key.id, /^[0-9a-z]{16}$/);
    assert.equal(key.dir, `${fx.stateDir}/keys/${key.id}`);
    assert.equal(key.socketPath, `${key.dir}/gateway.sock`);
    assert.equal(key.group, 'family');
    assert.equal(key.label, 'chat-1');
    assert.ok(key.expiresAt! - key.createdAt === 60_000);
    assert.equal((await stat(key.dir)).mode & 0o777, 0o700);
    const socket = await stat(key.socketPath);
    assert.ok(socket.isSocket());
    assert.equal(socket.mode & 0o777, 0o600);
    assert.ok(fx.gateway.keys().some((k) => k.id === key.id));
  });

  test('mint rejects a missing group and a bad ttl', async () => {
    await assert.rejects(fx.gateway.mint({ group: '' }), /group/);
    await assert.rejects(fx.gateway.mint({ group: 'g', ttlMs: -1 }), /ttlMs/);
  });

  test('two keys are told apart by the socket a request arrives on, whatever it claims', async () => {
    const a = await fx.gateway.mint({ group: 'alpha' });
    const b = await fx.gateway.mint({ group: 'beta' });
    const before = fx.calls.length;
    // Each client claims to be the other key: the claim is ignored.
    await request({ socketPath: a.socketPath, path: '/v1/messages', headers: anthropicHeaders({ 'x-api-key': b.id }), body: message });
    await request({
      socketPath: b.socketPath,
      path: '/v1/chat/completions',
      headers: openaiHeaders({ authorization: `Bearer ${a.id}` }),
      body: JSON.stringify({ model: 'gpt-5.1', messages: [] }),
    });
    await eventually(() => fx.calls.length === before + 2);
    const [first, second] = fx.calls.slice(before);
    assert.deepEqual([first!.keyId, first!.group], [a.id, 'alpha']);
    assert.deepEqual([second!.keyId, second!.group], [b.id, 'beta']);
  });

  test('revoke closes the socket, ends open keep-alive connections and removes the directory', async () => {
    const key = await fx.gateway.mint({ group: 'g' });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const first = await request({ socketPath: key.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message, agent });
    assert.equal(first.status, 200);
    const [socket] = Object.values(agent.freeSockets).flat();
    assert.ok(socket, 'a kept-alive connection is open');
    const closed = new Promise((resolve) => socket.once('close', resolve));

    assert.equal(await fx.gateway.revoke(key.id), true);
    await closed;
    assert.equal(await exists(key.dir), false);
    assert.equal(await connectFails(key.socketPath), 'ENOENT');
    assert.ok(!fx.gateway.keys().some((k) => k.id === key.id));
    assert.equal(await fx.gateway.revoke(key.id), false);
    agent.destroy();
  });

  test('revoke ends a stream in flight and aborts its upstream request', async () => {
    const slow = await startFixture({ eventDelayMs: 200, streamEvents: 8 });
    try {
      const key = await slow.gateway.mint({ group: 'g' });
      // The stream has started when its first event reaches the client; then the key is revoked.
      let streaming: () => void = () => undefined;
      const started = new Promise<void>((resolve) => (streaming = resolve));
      const cut = new Promise<boolean>((resolve) => {
        const req = http.request({ socketPath: key.socketPath, method: 'POST', path: '/v1/messages', headers: anthropicHeaders() }, (res) => {
          res.once('data', () => streaming());
          res.on('error', () => undefined);
          res.on('close', () => resolve(!res.complete));
        });
        req.on('error', () => resolve(true));
        req.end(JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, stream: true, messages: [] }));
      });
      await started;
      await slow.gateway.revoke(key.id);
      assert.equal(await cut, true, 'the client saw its stream cut');
      await eventually(() => slow.calls.length === 1);
      assert.equal(slow.calls[0]!.outcome, 'client_closed');
    } finally {
      await slow.close();
    }
  });

  test('an expired key revokes itself', async () => {
    const key = await fx.gateway.mint({ group: 'g', ttlMs: 150 });
    assert.equal(await exists(key.socketPath), true);
    await eventually(() => !fx.gateway.keys().some((k) => k.id === key.id), 3000);
    // The directory goes a moment after the key leaves the list.
    await eventually(() => !existsSync(key.dir), 2000);
    assert.equal(await connectFails(key.socketPath), 'ENOENT');
  });

  test('owner: the directory and socket are given to the container user', { skip: skipUnless(isRoot, 'needs root to chown') }, async () => {
    const key = await fx.gateway.mint({ group: 'g', owner: { uid: 1000, gid: 1000 } });
    const [dir, socket] = await Promise.all([stat(key.dir), stat(key.socketPath)]);
    assert.deepEqual([dir.uid, dir.gid, socket.uid, socket.gid], [1000, 1000, 1000, 1000]);
    assert.equal(dir.mode & 0o777, 0o700);
  });

  test('close() lets a stream in flight finish, then revokes every key', async () => {
    const local = await startFixture({ eventDelayMs: 40, streamEvents: 6 });
    const key = await local.gateway.mint({ group: 'g' });
    const pending = request({
      socketPath: key.socketPath,
      path: '/v1/messages',
      headers: anthropicHeaders(),
      body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8, stream: true, messages: [] }),
    });
    await eventually(() => local.standin.requests.length === 1);
    await local.gateway.close({ drainMs: 5000 });
    const res = await pending;
    assert.equal(res.status, 200);
    assert.ok(res.body.includes('event: message_stop'), 'the stream was drained to its end');
    assert.equal(await exists(key.dir), false);
    await assert.rejects(local.gateway.mint({ group: 'g' }), /closed/);
    await local.close();
  });

  test('two gateways live in one process without sharing anything', async () => {
    const other = await startFixture();
    try {
      const mine = await fx.gateway.mint({ group: 'one' });
      const theirs = await other.gateway.mint({ group: 'two' });
      assert.ok(!fx.gateway.keys().some((k) => k.id === theirs.id));
      assert.ok(!other.gateway.keys().some((k) => k.id === mine.id));
      const res = await request({ socketPath: theirs.socketPath, path: '/v1/messages', headers: anthropicHeaders(), body: message });
      assert.equal(res.status, 200);
      assert.equal(other.standin.requests.length, 1);
    } finally {
      await other.close();
    }
  });
});
