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
