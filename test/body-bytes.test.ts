// A request body kept in the chunks it arrived in: joined only when read whole, sent as it came.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BodyBytes, BodyCollector } from '../src/wire/body-bytes.ts';

describe('BodyBytes', () => {
  const chunks = [Buffer.from('{"model":'), Buffer.from('"claude-'), Buffer.from('sonnet-4-5"}')];
  const length = chunks.reduce((sum, chunk) => sum + chunk.length, 0);

  test('goes upstream in its chunks, unjoined, until something reads it whole', () => {
    const body = new BodyBytes(chunks, length);
    assert.equal(body.toSend(), body.toSend());
    assert.deepEqual(body.toSend(), chunks);
    const whole = body.whole();
    assert.equal(whole.toString(), '{"model":"claude-sonnet-4-5"}');
    assert.equal(body.length, whole.length);
    assert.equal(body.whole(), whole, 'joined once');
    assert.equal(body.toSend(), whole, 'then sent joined');
  });

  test('one chunk is the body itself, never copied', () => {
    const only = Buffer.from('{}');
    const body = BodyBytes.of(only);
    assert.equal(body.whole(), only);
    assert.equal(body.toSend(), only);
    assert.equal(new BodyBytes([], 0).whole().length, 0);
  });

  test('an edit gives a new body; an edit that changes nothing gives the same one', () => {
    const body = new BodyBytes(chunks, length);
    assert.equal(
      body.edit(() => undefined),
      body,
    );
    const renamed = body.edit((whole) => Buffer.from(whole.toString().replace('sonnet', 'haiku')));
    assert.equal(renamed.whole().toString(), '{"model":"claude-haiku-4-5"}');
    assert.equal(renamed.length, 28);
    assert.equal(body.whole().toString(), '{"model":"claude-sonnet-4-5"}', 'the original is left as it was');
  });

  test('a body sent a byte at a time is held in a few blocks, its bytes in order', () => {
    const collector = new BodyCollector();
    const sent: number[] = [];
    for (let i = 0; i < 100_000; i++) {
      const byte = 0x20 + (i % 90);
      sent.push(byte);
      collector.push(Buffer.from([byte]));
    }
    const body = collector.finish();
    const held = body.toSend() as readonly Buffer[];
    // One object per 8 KiB at most, besides the first chunk: a Buffer per byte held ~400 bytes each.
    assert.ok(held.length <= 1 + Math.ceil(100_000 / 8192), `${held.length} objects`);
    assert.equal(body.length, 100_000);
    assert.ok(body.whole().equals(Buffer.from(sent)));
  });

  test('chunks of the usual sizes are kept as they came, never copied', () => {
    const first = Buffer.alloc(300, 'a');
    const large = [Buffer.alloc(65_536, 'b'), Buffer.alloc(20_000, 'c')];
    const last = Buffer.alloc(100, 'd');
    const collector = new BodyCollector();
    for (const chunk of [first, ...large, last]) collector.push(chunk);
    const held = collector.finish().toSend() as readonly Buffer[];
    const sent = [first, ...large, last];
    assert.equal(held.length, sent.length);
    assert.ok(
      held.every((chunk, i) => chunk === sent[i]),
      'the same Buffers, not copies',
    );
    const small = new BodyCollector();
    small.push(first);
    assert.equal(small.finish().toSend(), first, 'a body in one chunk is that chunk');
  });

  test('small chunks between large ones stay in order', () => {
    const pieces = [Buffer.from('{'), Buffer.alloc(20_000, 'x'), Buffer.from('a'), Buffer.from('b'), Buffer.alloc(17_000, 'y'), Buffer.from('}')];
    const collector = new BodyCollector();
    for (const piece of pieces) collector.push(piece);
    const body = collector.finish();
    assert.ok(body.whole().equals(Buffer.concat(pieces)));
  });
});
