// A request body kept in the chunks it arrived in: joined only when read whole, sent as it came.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BodyBytes } from '../src/wire/body-bytes.ts';

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
});
