// Editing one top-level field of a JSON request body while keeping every other byte as the client
// sent it (re-serializing would break thinking-block signatures and prompt-cache prefixes).

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const COMMA = 0x2c;
const isSpace = (byte: number | undefined) => byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
const isOpen = (byte: number | undefined) => byte === 0x7b || byte === 0x5b;
const isClose = (byte: number | undefined) => byte === 0x7d || byte === 0x5d;

/**
 * Where the value of top-level `key` stands in `body` (a JSON object): [start, end) byte offsets, or
 * undefined when the key is absent. Works on bytes: JSON's structure is ASCII, and UTF-8 never puts
 * an ASCII byte inside a multi-byte character. Like JSON.parse, the last of duplicate keys counts.
 */
function valueSpan(body: Buffer, key: string): [number, number] | undefined {
  const span = fieldSpans(body, key).at(-1);
  return span && [span[1], span[2]];
}

/** Every top-level `key` field in `body`, in order: [keyStart, valueStart, valueEnd) each. */
function fieldSpans(body: Buffer, key: string): [number, number, number][] {
  let depth = 0;
  const found: [number, number, number][] = [];
  let keyStart = -1;
  let valueStart = -1; // where the value of the wanted key began, while it is being read
  for (let i = 0; i < body.length; i++) {
    const byte = body[i];
    if (byte === QUOTE) {
      const start = i;
      for (i++; i < body.length && body[i] !== QUOTE; i++) if (body[i] === BACKSLASH) i++;
      const end = i + 1;
      if (depth !== 1) continue;
      if (valueStart === start) {
        found.push([keyStart, start, end]);
        valueStart = -1;
        continue;
      }
      let next = end;
      while (isSpace(body[next])) next++;
      if (body[next] !== COLON) continue;
      const name = JSON.parse(body.subarray(start, end).toString('utf8')) as string;
      i = next;
      if (name !== key) continue;
      keyStart = start;
      next++;
      while (isSpace(body[next])) next++;
      valueStart = next;
      i = next - 1;
    } else if (isOpen(byte)) {
      depth++;
    } else if (isClose(byte)) {
      depth--;
      if (depth === 1 && valueStart !== -1) {
        found.push([keyStart, valueStart, i + 1]);
        valueStart = -1;
      }
    } else if (depth === 1 && valueStart !== -1 && i === valueStart && !isOpen(byte)) {
      // A number, true, false or null: runs to the next comma, closing brace or whitespace.
      let end = i;
      while (end < body.length && body[end] !== COMMA && !isClose(body[end]) && !isSpace(body[end])) end++;
      found.push([keyStart, i, end]);
      valueStart = -1;
      i = end - 1;
    }
  }
  return found;
}

/**
 * `body` with the top-level `key` set to `valueJson` (JSON text): its value replaced in place when
 * present, else the field added before the closing brace. Undefined when `body` is not an object.
 */
export function setTopLevelField(body: Buffer, key: string, valueJson: string): Buffer | undefined {
  const span = valueSpan(body, key);
  if (span) return Buffer.concat([body.subarray(0, span[0]), Buffer.from(valueJson), body.subarray(span[1])]);
  let end = body.length - 1;
  while (end > 0 && isSpace(body[end])) end--;
  if (body[end] !== 0x7d /* } */) return undefined;
  let before = end - 1;
  while (before > 0 && isSpace(body[before])) before--;
  const empty = body[before] === 0x7b; /* { */
  const field = `${empty ? '' : ','}${JSON.stringify(key)}:${valueJson}`;
  return Buffer.concat([body.subarray(0, end), Buffer.from(field), body.subarray(end)]);
}

/** `body` with the string value of top-level `key` replaced, or undefined when it has no string value. */
export function replaceTopLevelString(body: Buffer, key: string, value: string): Buffer | undefined {
  const span = valueSpan(body, key);
  if (!span || body[span[0]] !== QUOTE) return undefined;
  return Buffer.concat([body.subarray(0, span[0]), Buffer.from(JSON.stringify(value)), body.subarray(span[1])]);
}

/** The JSON text of top-level `key`'s value, or undefined when it is absent. */
export function topLevelValue(body: Buffer, key: string): Buffer | undefined {
  const span = valueSpan(body, key);
  return span && body.subarray(span[0], span[1]);
}

/** `body` without its top-level `key` fields (each with one comma beside it); `body` itself when absent. */
export function removeTopLevelField(body: Buffer, key: string): Buffer {
  const spans = fieldSpans(body, key);
  if (spans.length === 0) return body;
  const kept: Buffer[] = [];
  let from = 0;
  for (let [start, , end] of spans) {
    let after = end;
    while (isSpace(body[after])) after++;
    if (body[after] === COMMA) {
      end = after + 1;
    } else {
      // The last field: the comma before it goes instead (kept just before, or in the kept piece
      // before a field removed right before this one).
      let before = start - 1;
      while (before >= from && isSpace(body[before])) before--;
      if (before >= from && body[before] === COMMA) start = before;
      else if (before < from && kept.length > 0) kept.push(withoutTrailingComma(kept.pop()!));
    }
    kept.push(body.subarray(from, start));
    from = end;
  }
  kept.push(body.subarray(from));
  return Buffer.concat(kept);
}

function withoutTrailingComma(piece: Buffer): Buffer {
  let end = piece.length - 1;
  while (end >= 0 && isSpace(piece[end])) end--;
  return piece[end] === COMMA ? piece.subarray(0, end) : piece;
}
