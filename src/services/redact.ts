// Keeps a service's credential out of what goes back to the container. An upstream that reflects
// the request (an echo endpoint, an error page quoting the Authorization header, a redirect with a
// token in its query) would otherwise hand the container the secret the gateway exists to hide.
// Bodies are masked as they stream: each occurrence becomes as many `*`, so lengths and framing stay
// valid, and only a chunk's tail that could start an occurrence is held until the next chunk.
import type { HeaderMap } from '../wire/headers.ts';

const MASK = 0x2a; // '*'

export class StreamRedactor {
  private readonly needles: readonly Buffer[];
  private carry: Buffer | undefined;

  constructor(needles: readonly Buffer[]) {
    this.needles = needles.filter((needle) => needle.length > 0);
  }

  /** The chunk with every occurrence masked, minus a tail held back while it could begin one. */
  push(chunk: Buffer): Buffer {
    const data = this.carry ? Buffer.concat([this.carry, chunk]) : chunk;
    this.carry = undefined;
    for (const needle of this.needles) mask(data, needle);
    const held = this.heldTail(data);
    if (held === 0) return data;
    this.carry = Buffer.from(data.subarray(data.length - held));
    return data.subarray(0, data.length - held);
  }

  /** What was held back at the end of the stream: it never completed an occurrence. */
  flush(): Buffer | undefined {
    const rest = this.carry;
    this.carry = undefined;
    return rest;
  }

  /** The longest tail of `data` that is a proper prefix of some needle. */
  private heldTail(data: Buffer): number {
    let longest = 0;
    for (const needle of this.needles) {
      for (let i = Math.max(0, data.length - needle.length + 1); i < data.length; i++) {
        if (data[i] === needle[0] && data.subarray(i).equals(needle.subarray(0, data.length - i))) {
          longest = Math.max(longest, data.length - i);
          break;
        }
      }
    }
    return longest;
  }
}

function mask(data: Buffer, needle: Buffer): void {
  for (let at = data.indexOf(needle); at !== -1; at = data.indexOf(needle, at + needle.length)) data.fill(MASK, at, at + needle.length);
}

/** Drops every response header whose value holds a needle (a reflected Authorization, a cookie made of the token). */
export function dropRevealingHeaders(headers: HeaderMap, needles: readonly string[]): void {
  for (const name of Object.keys(headers)) {
    const value = headers[name]!;
    const text = Array.isArray(value) ? value.join('\n') : value;
    if (needles.some((needle) => needle.length > 0 && text.includes(needle))) delete headers[name];
  }
}
