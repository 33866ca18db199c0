// Editing one top-level string of a JSON request body while keeping every other byte as the client
// sent it (re-serializing would break thinking-block signatures and prompt-cache prefixes).

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const isSpace = (byte: number | undefined) => byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;

/**
 * `body` (a JSON object) with the string value of its top-level `key` replaced by `value`, or
 * undefined when that key has no string value. Works on bytes: JSON's structure is ASCII, and
 * UTF-8 never puts an ASCII byte inside a multi-byte character. Like JSON.parse, the last of
 * duplicate keys counts.
 */
export function replaceTopLevelString(body: Buffer, key: string, value: string): Buffer | undefined {
  let depth = 0;
  let pendingKey: string | undefined;
  let found: [number, number] | undefined;
  for (let i = 0; i < body.length; i++) {
    const byte = body[i];
    if (byte === QUOTE) {
      const start = i;
      for (i++; i < body.length && body[i] !== QUOTE; i++) if (body[i] === BACKSLASH) i++;
      const end = i + 1;
      if (depth === 1) {
        let next = end;
        while (isSpace(body[next])) next++;
        if (body[next] === COLON) {
          pendingKey = JSON.parse(body.subarray(start, end).toString('utf8')) as string;
          i = next;
          continue;
        }
        if (pendingKey === key) found = [start, end];
        pendingKey = undefined;
      }
    } else if (byte === 0x7b || byte === 0x5b) {
      depth++;
    } else if (byte === 0x7d || byte === 0x5d) {
      depth--;
    } else if (depth === 1 && byte === 0x2c) {
      pendingKey = undefined;
    }
  }
  if (!found) return undefined;
  return Buffer.concat([body.subarray(0, found[0]), Buffer.from(JSON.stringify(value)), body.subarray(found[1])]);
}
