// A request body as the client's socket delivered it: its chunks, joined into one Buffer only when
// something must read it whole (editing a field, a signature over it, a change of format). A coding
// agent's request is about 100 KB; joining every one allocated it twice outside V8's heap (the
// socket's chunks, then their join), and that memory drove V8's full collections
// (docs/performance.md). The chunks go upstream as they are.

export class BodyBytes {
  readonly length: number;
  private chunks: readonly Buffer[];

  constructor(chunks: readonly Buffer[], length: number) {
    this.chunks = chunks;
    this.length = length;
  }

  static of(whole: Buffer): BodyBytes {
    return new BodyBytes([whole], whole.length);
  }

  /** The bytes in one Buffer: joined on first use, and kept joined. */
  whole(): Buffer {
    if (this.chunks.length !== 1) this.chunks = [Buffer.concat(this.chunks, this.length)];
    return this.chunks[0]!;
  }

  /** The body with an edit of its whole bytes made, or itself when the edit leaves them as they are. */
  edit(change: (whole: Buffer) => Buffer | undefined): BodyBytes {
    const changed = change(this.whole());
    return changed ? BodyBytes.of(changed) : this;
  }

  /** What goes upstream: the one Buffer, or the chunks in order (undici writes them one by one). */
  toSend(): Buffer | readonly Buffer[] {
    return this.chunks.length === 1 ? this.chunks[0]! : this.chunks;
  }
}

/** Chunks this large are kept as they came; smaller ones after the first are gathered into blocks. */
const KEPT_CHUNK_BYTES = 16 * 1024;
/** Small chunks waiting to be gathered, at most: past it they are joined into one. */
const MAX_WAITING_CHUNKS = 256;

/**
 * Collects a body's chunks as they arrive, in few objects whatever their sizes. A client can send
 * its body a byte at a time, and each chunk Node reads is a Buffer of its own (a few hundred bytes
 * of objects around one byte of data), while the memory pool (http/body-memory.ts) counts bytes:
 * kept as they came, a 32 MiB body of one-byte chunks would take gigabytes. So the first chunk and
 * every chunk of 16 KiB or more are kept as they are (what real clients send: a small body is one
 * chunk, a large one comes in socket reads of up to 64 KiB), and runs of smaller ones are joined
 * into blocks: at most one object per 8 KiB of body, besides the first chunk and 256 waiting, and no
 * copy at all of a body sent the usual way.
 */
export class BodyCollector {
  private readonly kept: Buffer[] = [];
  private waiting: Buffer[] = [];
  private waitingBytes = 0;
  private length = 0;

  push(chunk: Buffer): void {
    this.length += chunk.length;
    if (this.kept.length === 0 || chunk.length >= KEPT_CHUNK_BYTES) {
      this.gather();
      this.kept.push(chunk);
      return;
    }
    this.waiting.push(chunk);
    this.waitingBytes += chunk.length;
    if (this.waitingBytes >= KEPT_CHUNK_BYTES) this.gather();
    else if (this.waiting.length === MAX_WAITING_CHUNKS) this.waiting = [Buffer.concat(this.waiting, this.waitingBytes)];
  }

  /** The body, once its last chunk was pushed. */
  finish(): BodyBytes {
    this.gather();
    return new BodyBytes(this.kept, this.length);
  }

  /** The waiting chunks, joined into one block after what was kept. */
  private gather(): void {
    if (this.waiting.length === 0) return;
    this.kept.push(this.waiting.length === 1 ? this.waiting[0]! : Buffer.concat(this.waiting, this.waitingBytes));
    this.waiting = [];
    this.waitingBytes = 0;
  }
}
