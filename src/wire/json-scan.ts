// An incremental JSON scanner for request bodies: fed chunk by chunk as they arrive, it checks the
// whole JSON grammar in one linear pass (bounded depth, strict UTF-8) and keeps only the few values
// the gateway reads. A full JSON.parse of a 32 MiB body shaped to be slow held the event loop for
// seconds; here no chunk costs more than its own length, and nothing is built for the rest.
import { GatewayError } from './errors.ts';

/** A captured value: scalars with their text, containers by kind only. */
export interface Scalar {
  kind: 'string' | 'number' | 'true' | 'false' | 'null' | 'object' | 'array';
  /** String contents decoded (at most MAX_CAPTURE_UNITS), or a number's text ('' when too long). */
  text?: string;
  /** A string's full length in UTF-16 units, however much was kept. */
  units?: number;
  /** A kept list (see ScanPlan.lists): how many items it holds, and the items kept, in order. */
  count?: number;
  items?: Scalar[];
}

/** Which values to keep; everything else is only validated. */
export interface ScanPlan {
  /** Top-level keys whose values are kept; a second occurrence of one is reported. */
  fields: ReadonlySet<string>;
  /** Top-level objects whose direct keys (of the set) are kept, last one winning. */
  objects: ReadonlyMap<string, ReadonlySet<string>>;
  /** Top-level arrays whose elements are counted, and whose object elements' keys (of the set) are kept. */
  arrays: ReadonlyMap<string, ReadonlySet<string>>;
  /** Most elements kept per array (they are still counted past it). */
  maxElements: number;
  /**
   * Keys (of `arrays`' sets) whose value, when an array, is kept as a list: its items counted, and
   * kept (strings up to `listItemUnits` characters, other items by kind) while the whole body has kept
   * fewer than `maxListItems` of them.
   */
  lists: ReadonlyMap<string, ReadonlySet<string>>;
  maxListItems: number;
  listItemUnits: number;
  /** Top-level keys whose value is kept as raw JSON text, up to this many bytes. */
  raw: ReadonlyMap<string, number>;
}

export interface ScanResult {
  /** False when the body is not a JSON object (it is valid JSON). */
  isObject: boolean;
  fields: Map<string, Scalar>;
  /** The first field of the plan that appeared twice. */
  duplicate?: string;
  objects: Map<string, Map<string, Scalar>>;
  /** `duplicate`: the first kept key that appeared twice in one element. */
  arrays: Map<string, { count: number; elements: Map<string, Scalar>[]; duplicate?: string }>;
  /** Raw JSON text, or null when it was longer than its bound. */
  raw: Map<string, string | null>;
  /** String contents as decoded plus structure, without whitespace between tokens. */
  inputBytes: number;
}

const MAX_DEPTH = 128;
/**
 * Nesting levels with room from the start, grown to MAX_DEPTH + 1 past them. Typed arrays of up to
 * 64 bytes live on V8's heap; two of 129 bytes per request cost two off-heap allocations and their
 * sweeping (issue 20's profile), for nesting that real requests never reach.
 */
const FIRST_DEPTH_SLOTS = 32;
/** Decoded characters kept of a captured string (longer ones are counted, not kept). */
const MAX_CAPTURE_UNITS = 2048;
const MAX_KEY_UNITS = 32;
const MAX_NUMBER_CHARS = 1024;

// Grammar states.
const S_VALUE = 0;
const S_VALUE_OR_CLOSE = 1;
const S_KEY = 2;
const S_KEY_OR_CLOSE = 3;
const S_COLON = 4;
const S_AFTER = 5;
const S_END = 6;
const S_STRING = 7;
const S_ESCAPE = 8;
const S_UNICODE = 9;
const S_UTF8 = 10;
const S_LITERAL = 11;
const S_N_MINUS = 12;
const S_N_ZERO = 13;
const S_N_INT = 14;
const S_N_DOT = 15;
const S_N_FRAC = 16;
const S_N_E = 17;
const S_N_ESIGN = 18;
const S_N_EXP = 19;

// What a container is to the plan.
const R_NONE = 0;
const R_ROOT = 1;
const R_OBJECT = 2; // a planned top-level object
const R_ARRAY = 3; // a planned top-level array
const R_ELEMENT = 4; // an object element of a planned array
const R_LIST = 5; // a kept list inside such an element

// What the value being read is to the plan.
const T_NONE = 0;
const T_FIELD = 1;
const T_OBJECT_KEY = 2;
const T_ELEMENT = 3;
const T_ELEMENT_KEY = 4;
const T_LIST_ITEM = 5;

const LITERALS = { t: 'true', f: 'false', n: 'null' } as const;
const ESCAPES: Record<number, number> = { 0x22: 0x22, 0x5c: 0x5c, 0x2f: 0x2f, 0x62: 8, 0x66: 12, 0x6e: 10, 0x72: 13, 0x74: 9 };
/** The bytes after a backslash that make a one-character escape (all of ESCAPES). */
const SHORT_ESCAPE = new Uint8Array(256).map((_, b) => (ESCAPES[b] !== undefined ? 1 : 0));

/** String bytes that need no attention: printable ASCII but the quote and the backslash. */
const PLAIN = new Uint8Array(256).map((_, b) => (b >= 0x20 && b < 0x80 && b !== 0x22 && b !== 0x5c ? 1 : 0));
const isSpace = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const hexValue = (b: number) => (b >= 0x30 && b <= 0x39 ? b - 0x30 : b >= 0x61 && b <= 0x66 ? b - 0x57 : b >= 0x41 && b <= 0x46 ? b - 0x37 : -1);

export class JsonScanner {
  private readonly plan: ScanPlan;
  private readonly result: ScanResult;
  private state = S_VALUE;
  private depth = 0;
  private isObject = new Uint8Array(FIRST_DEPTH_SLOTS);
  private role = new Uint8Array(FIRST_DEPTH_SLOTS);
  private offset = 0; // bytes consumed before the current chunk
  private inputBytes = 0;
  // The value being read: its place in the plan.
  private target = T_NONE;
  private targetName = '';
  private topName = ''; // the planned top-level key whose value is being read
  private element: Map<string, Scalar> | undefined;
  private list: Scalar | undefined;
  private listItems = 0; // items kept in all lists
  private seen = new Set<string>();
  // String being read.
  private inKey = false;
  private capturing = false;
  private captureLimit = 0;
  private captured = '';
  private capturedBytes: number[] = [];
  private units = 0;
  private utfNeed = 0;
  private utfLow = 0x80;
  private utfHigh = 0xbf;
  private hexCount = 0;
  private hexCode = 0;
  // Literal or number being read.
  private literal = '';
  private literalAt = 0;
  private number = '';
  private keepingNumber = false;
  // Raw capture of one top-level value.
  private rawName = '';
  private rawParts: Buffer[] = [];
  private rawBytes = 0;
  private rawFrom = -1; // where the raw value starts in the current chunk, -1 when not capturing
  private rawLimit = 0;
  private chunk: Buffer | undefined; // the chunk being scanned

  constructor(plan: ScanPlan) {
    this.plan = plan;
    this.result = { isObject: false, fields: new Map(), objects: new Map(), arrays: new Map(), raw: new Map(), inputBytes: 0 };
  }

  /** Scans the next chunk; throws a 400 at the first byte that cannot be JSON. */
  push(chunk: Buffer): void {
    const length = chunk.length;
    this.chunk = chunk;
    let state = this.state;
    let counted = 0; // bytes counted into inputBytes in this chunk
    for (let i = 0; i < length; i++) {
      let b = chunk[i]!;
      switch (state) {
        case S_STRING: {
          // The hot loop: plain string bytes and, outside a kept value, the one-character escapes
          // (\n, \", \\: most of what a conversation's text escapes) without leaving it. A \u
          // escape, a kept value's escape, or one cut by the chunk's end takes the escape states.
          const start = i;
          let runStart = i;
          let units = 0;
          for (;;) {
            while (PLAIN[b] === 1) {
              if (++i === length) break;
              b = chunk[i]!;
            }
            if (i === length || b !== 0x5c || this.capturing || i + 1 === length || SHORT_ESCAPE[chunk[i + 1]!] !== 1) break;
            units += i - runStart + 1; // the plain run, and the escape's one decoded unit
            i += 2;
            runStart = i;
            if (i === length) break;
            b = chunk[i]!;
          }
          units += i - runStart;
          counted += units;
          if (this.capturing && i > start) this.keepBytes(chunk, start, i);
          else if (!this.capturing) this.units += units;
          if (i === length) break;
          if (b === 0x22) {
            counted++;
            state = this.endString(i);
          } else if (b === 0x5c) {
            state = S_ESCAPE;
          } else if (b < 0x20) {
            this.fail(i, 'a control character inside a string');
          } else {
            counted++;
            state = this.utf8Lead(b, i);
          }
          break;
        }
        case S_UTF8:
          if (b < this.utfLow || b > this.utfHigh) this.fail(i, 'invalid UTF-8');
          counted++;
          if (this.capturing && this.capturedBytes.length < MAX_CAPTURE_UNITS * 4) this.capturedBytes.push(b);
          this.utfLow = 0x80;
          this.utfHigh = 0xbf;
          if (--this.utfNeed === 0) state = S_STRING;
          break;
        case S_ESCAPE: {
          if (b === 0x75 /* u */) {
            this.hexCount = 0;
            this.hexCode = 0;
            state = S_UNICODE;
            break;
          }
          const decoded = ESCAPES[b];
          if (decoded === undefined) this.fail(i, 'an invalid escape');
          counted++;
          this.keepUnit(decoded!);
          state = S_STRING;
          break;
        }
        case S_UNICODE: {
          const digit = hexValue(b);
          if (digit < 0) this.fail(i, 'an invalid \\u escape');
          this.hexCode = this.hexCode * 16 + digit;
          if (++this.hexCount === 4) {
            const code = this.hexCode;
            // As UTF-8: a surrogate pair makes 4 bytes, 2 per half.
            counted += code < 0x80 ? 1 : code < 0x800 || (code >= 0xd800 && code <= 0xdfff) ? 2 : 3;
            this.keepUnit(code);
            state = S_STRING;
          }
          break;
        }
        case S_LITERAL:
          if (b !== this.literal.charCodeAt(this.literalAt)) this.fail(i, 'an invalid literal');
          counted++;
          if (++this.literalAt === this.literal.length) {
            if (this.target !== T_NONE) this.scalar(this.literal as Scalar['kind'], undefined);
            state = this.endValue(i + 1);
          }
          break;
        case S_N_MINUS:
        case S_N_DOT:
        case S_N_ESIGN:
          if (b < 0x30 || b > 0x39) this.fail(i, 'an invalid number');
          state = state === S_N_MINUS ? (b === 0x30 ? S_N_ZERO : S_N_INT) : state === S_N_DOT ? S_N_FRAC : S_N_EXP;
          counted++;
          this.keepNumber(b);
          break;
        case S_N_E:
          if (b === 0x2b || b === 0x2d) state = S_N_ESIGN;
          else if (b >= 0x30 && b <= 0x39) state = S_N_EXP;
          else this.fail(i, 'an invalid number');
          counted++;
          this.keepNumber(b);
          break;
        case S_N_ZERO:
        case S_N_INT:
        case S_N_FRAC:
        case S_N_EXP: {
          if (b >= 0x30 && b <= 0x39 && state !== S_N_ZERO) {
            counted++;
            this.keepNumber(b);
            break;
          }
          if (b === 0x2e /* . */ && (state === S_N_ZERO || state === S_N_INT)) state = S_N_DOT;
          else if ((b === 0x65 || b === 0x45) && state !== S_N_EXP) state = S_N_E;
          else {
            // The number ended just before this byte, which is read again as what follows it.
            if (this.keepingNumber) this.scalar('number', this.number.length > MAX_NUMBER_CHARS ? '' : this.number);
            state = this.endValue(i);
            i--;
            break;
          }
          counted++;
          this.keepNumber(b);
          break;
        }
        default: {
          if (isSpace(b)) break;
          counted++;
          state = this.structure(state, b, i);
        }
      }
    }
    this.state = state;
    this.inputBytes += counted;
    if (this.rawFrom !== -1) this.keepRaw(chunk, this.rawFrom, length, true);
    this.offset += length;
    this.chunk = undefined;
  }

  /** The values kept; throws a 400 if the JSON is incomplete. */
  finish(): ScanResult {
    // A bare number only ends with the input.
    if (this.depth === 0 && (this.state === S_N_ZERO || this.state === S_N_INT || this.state === S_N_FRAC || this.state === S_N_EXP)) {
      this.state = S_END;
    }
    if (this.state !== S_END) throw invalid('unexpected end of input');
    this.result.inputBytes = this.inputBytes;
    return this.result;
  }

  /** Structural bytes, and the first byte of every value. */
  private structure(state: number, b: number, i: number): number {
    switch (state) {
      case S_VALUE:
      case S_VALUE_OR_CLOSE:
        if (b === 0x5d /* ] */ && state === S_VALUE_OR_CLOSE) return this.close(i);
        if (this.depth > 0 && !this.isObject[this.depth]) this.placeElement();
        return this.startValue(b, i);
      case S_KEY:
      case S_KEY_OR_CLOSE:
        if (b === 0x7d /* } */ && state === S_KEY_OR_CLOSE) return this.close(i);
        if (b !== 0x22) this.fail(i, 'expected a key');
        this.startString(true, this.role[this.depth] === R_NONE ? 0 : MAX_KEY_UNITS);
        return S_STRING;
      case S_COLON:
        if (b !== 0x3a) this.fail(i, "expected ':'");
        return S_VALUE;
      case S_AFTER:
        if (b === 0x2c /* , */) return this.isObject[this.depth] ? S_KEY : S_VALUE;
        if (b === 0x7d && this.isObject[this.depth]) return this.close(i);
        if (b === 0x5d && !this.isObject[this.depth]) return this.close(i);
        return this.fail(i, "expected ',' or a closing bracket");
      default:
        return this.fail(i, 'unexpected data after the JSON value');
    }
  }

  private startValue(b: number, i: number): number {
    if (this.target === T_FIELD && this.plan.raw.has(this.topName)) {
      this.rawName = this.topName;
      this.rawLimit = this.plan.raw.get(this.topName)!;
      this.rawFrom = i;
    }
    if (b === 0x22) {
      const target = this.target;
      this.startString(false, target === T_NONE || target === T_ELEMENT ? 0 : target === T_LIST_ITEM ? this.plan.listItemUnits : MAX_CAPTURE_UNITS);
      return S_STRING;
    }
    if (b === 0x7b || b === 0x5b) return this.open(b === 0x7b);
    if (b === 0x2d || (b >= 0x30 && b <= 0x39)) {
      this.keepingNumber = this.target !== T_NONE;
      if (this.keepingNumber) this.number = String.fromCharCode(b);
      return b === 0x2d ? S_N_MINUS : b === 0x30 ? S_N_ZERO : S_N_INT;
    }
    const literal = LITERALS[String.fromCharCode(b) as keyof typeof LITERALS];
    if (literal === undefined) return this.fail(i, 'expected a value');
    this.literal = literal;
    this.literalAt = 1;
    return S_LITERAL;
  }

  private open(object: boolean): number {
    if (this.depth === MAX_DEPTH) throw new GatewayError('invalid_request', `request body nests deeper than ${MAX_DEPTH} levels`);
    const kind = object ? 'object' : 'array';
    let role = R_NONE;
    if (this.depth === 0) {
      if (object) {
        role = R_ROOT;
        this.result.isObject = true;
      }
    } else if (this.target === T_FIELD) {
      if (object && this.plan.objects.has(this.topName)) {
        role = R_OBJECT;
        this.result.objects.set(this.topName, new Map());
      } else if (!object && this.plan.arrays.has(this.topName)) {
        role = R_ARRAY;
        this.result.arrays.set(this.topName, { count: 0, elements: [] });
      }
      this.scalar(kind, undefined);
    } else if (this.target === T_ELEMENT && object && this.element) {
      role = R_ELEMENT;
    } else if (this.target === T_ELEMENT_KEY && !object && this.element && this.plan.lists.get(this.topName)?.has(this.targetName)) {
      role = R_LIST;
      this.list = { kind, count: 0, items: [] };
      this.element.set(this.targetName, this.list);
    } else if (this.target !== T_NONE) {
      this.scalar(kind, undefined);
    }
    this.depth++;
    if (this.depth === this.role.length) this.growDepth();
    this.isObject[this.depth] = object ? 1 : 0;
    this.role[this.depth] = role;
    this.target = T_NONE;
    return object ? S_KEY_OR_CLOSE : S_VALUE_OR_CLOSE;
  }

  private growDepth(): void {
    const isObject = new Uint8Array(MAX_DEPTH + 1);
    const role = new Uint8Array(MAX_DEPTH + 1);
    isObject.set(this.isObject);
    role.set(this.role);
    this.isObject = isObject;
    this.role = role;
  }

  /** An array element is about to start: place it in the plan. */
  private placeElement(): void {
    this.target = T_NONE;
    if (this.role[this.depth] === R_ARRAY) {
      const array = this.result.arrays.get(this.topName)!;
      array.count++;
      this.element = undefined;
      if (this.plan.arrays.get(this.topName)!.size > 0 && array.elements.length < this.plan.maxElements) {
        this.element = new Map();
        array.elements.push(this.element);
      }
      this.target = T_ELEMENT;
    } else if (this.role[this.depth] === R_LIST) {
      this.list!.count!++;
      if (this.listItems < this.plan.maxListItems) {
        this.listItems++;
        this.target = T_LIST_ITEM;
      }
    }
  }

  private close(i: number): number {
    if (this.role[this.depth] === R_ELEMENT) this.element = undefined;
    else if (this.role[this.depth] === R_LIST) this.list = undefined;
    this.depth--;
    return this.endValue(i + 1);
  }

  /** A value ended at `end` (offset in the current chunk): what comes next. */
  private endValue(end: number): number {
    if (this.rawFrom !== -1 && this.depth === 1) {
      this.keepRaw(undefined, this.rawFrom, end, false);
    }
    if (this.depth === 0) return S_END;
    if (this.depth === 1) this.topName = '';
    this.target = T_NONE;
    return S_AFTER;
  }

  private startString(key: boolean, limit: number): void {
    this.inKey = key;
    this.capturing = limit > 0;
    this.captureLimit = limit;
    this.captured = '';
    // Empty already (every string that kept bytes flushed them at its end): setting an array's
    // length is a call into V8's runtime, a fifth of a tool list's scan when done for every string.
    if (this.capturedBytes.length !== 0) this.capturedBytes.length = 0;
    this.units = 0;
  }

  private endString(i: number): number {
    const text = this.capturing ? this.flushCaptured().slice(0, this.captureLimit) : '';
    if (this.inKey) {
      this.key(this.units <= MAX_KEY_UNITS ? text : '');
      return S_COLON;
    }
    if (this.target !== T_NONE) this.scalar('string', text, this.units);
    return this.endValue(i + 1);
  }

  /** A key was read: what its value is to the plan. */
  private key(name: string): void {
    this.target = T_NONE;
    const role = this.role[this.depth];
    if (role === R_ROOT) {
      if (!this.plan.fields.has(name)) return;
      if (this.seen.has(name)) this.result.duplicate ??= name;
      this.seen.add(name);
      this.target = T_FIELD;
      this.topName = name;
    } else if (role === R_OBJECT) {
      if (this.plan.objects.get(this.topName)!.has(name)) {
        this.target = T_OBJECT_KEY;
        this.targetName = name;
      }
    } else if (role === R_ELEMENT) {
      if (this.plan.arrays.get(this.topName)!.has(name)) {
        // Parsers differ on which of two equal keys wins: a second one is reported, not guessed.
        if (this.element!.has(name)) this.result.arrays.get(this.topName)!.duplicate ??= name;
        this.target = T_ELEMENT_KEY;
        this.targetName = name;
      }
    }
  }

  private scalar(kind: Scalar['kind'], text: string | undefined, units?: number): void {
    const value: Scalar = { kind, text, units };
    switch (this.target) {
      case T_FIELD:
        this.result.fields.set(this.topName, value);
        break;
      case T_OBJECT_KEY:
        this.result.objects.get(this.topName)!.set(this.targetName, value);
        break;
      case T_ELEMENT_KEY:
        this.element?.set(this.targetName, value);
        break;
      case T_LIST_ITEM:
        this.list!.items!.push(value);
        break;
    }
  }

  private utf8Lead(b: number, i: number): number {
    if (b >= 0xc2 && b <= 0xdf) this.utfNeed = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      this.utfNeed = 2;
      if (b === 0xe0) this.utfLow = 0xa0;
      if (b === 0xed) this.utfHigh = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      this.utfNeed = 3;
      if (b === 0xf0) this.utfLow = 0x90;
      if (b === 0xf4) this.utfHigh = 0x8f;
    } else this.fail(i, 'invalid UTF-8');
    this.units += this.utfNeed === 3 ? 2 : 1;
    if (this.capturing && this.capturedBytes.length < MAX_CAPTURE_UNITS * 4) this.capturedBytes.push(b);
    return S_UTF8;
  }

  /** Plain bytes (printable ASCII): kept as text at once, a byte each costing 20 ns when pushed one by one. */
  private keepBytes(chunk: Buffer, start: number, end: number): void {
    this.units += end - start;
    const room = MAX_CAPTURE_UNITS * 4 - this.captured.length - this.capturedBytes.length;
    if (room > 0) this.captured = this.flushCaptured() + chunk.toString('latin1', start, Math.min(end, start + room));
  }

  private keepUnit(code: number): void {
    this.units++;
    if (!this.capturing || this.captured.length + this.capturedBytes.length > MAX_CAPTURE_UNITS * 4) return;
    this.captured = this.flushCaptured() + String.fromCharCode(code);
  }

  private flushCaptured(): string {
    if (this.capturedBytes.length > 0) {
      this.captured += Buffer.from(this.capturedBytes).toString('utf8');
      this.capturedBytes.length = 0;
    }
    return this.captured;
  }

  private keepNumber(b: number): void {
    if (this.keepingNumber && this.number.length <= MAX_NUMBER_CHARS) this.number += String.fromCharCode(b);
  }

  private keepRaw(chunk: Buffer | undefined, from: number, to: number, more: boolean): void {
    const part = (chunk ?? this.chunk!).subarray(from, to);
    this.rawBytes += part.length;
    if (this.rawBytes <= this.rawLimit) this.rawParts.push(Buffer.from(part));
    if (more) {
      this.rawFrom = 0;
      return;
    }
    this.result.raw.set(this.rawName, this.rawBytes <= this.rawLimit ? Buffer.concat(this.rawParts).toString('utf8') : null);
    this.rawParts = [];
    this.rawBytes = 0;
    this.rawFrom = -1;
  }

  private fail(i: number, what: string): never {
    throw invalid(`${what} at byte ${this.offset + i}`);
  }
}

function invalid(detail: string): GatewayError {
  return new GatewayError('invalid_request', `request body is not valid JSON: ${detail}`);
}

// V8 compiles push's loop on the fly (on-stack replacement) during the first long chunk; until push
// has once run to its end, the code after the loop has no type feedback and every later call threw
// the compiled code away (measured: 20x slower). One tiny scan at load gives it that feedback.
new JsonScanner({
  fields: new Set(),
  objects: new Map(),
  arrays: new Map(),
  maxElements: 0,
  lists: new Map(),
  maxListItems: 0,
  listItemUnits: 0,
  raw: new Map(),
}).push(Buffer.from('{"a":[1,"b",true]}'));
