// A bounded in-memory pipe: a producer pushes byte chunks (awaiting back-pressure), a consumer
// reads them as an async iterable. Used to feed the tar writer's sink into the compressor.

/** Thrown to the producer when the consumer stopped reading. */
export class PipeClosed extends Error {
  /** Always `"PipeClosed"`. */
  override readonly name: string = "PipeClosed";
}

/** A single-producer, single-consumer byte pipe holding at most about `limit` bytes. */
export class BytePipe implements AsyncIterable<Uint8Array> {
  #queue: Uint8Array[] = [];
  #queued = 0;
  #limit: number;
  #ended = false;
  #error: { error: unknown } | undefined;
  #stopped = false;
  #wakeReader: (() => void) | undefined;
  #wakeWriter: (() => void) | undefined;

  /**
   * Creates an empty pipe.
   *
   * @param limit Bytes queued before `push` waits for the reader (default 4 MiB).
   */
  constructor(limit = 4 << 20) {
    this.#limit = limit;
  }

  #signalReader(): void {
    const wake = this.#wakeReader;
    this.#wakeReader = undefined;
    wake?.();
  }

  #signalWriter(): void {
    const wake = this.#wakeWriter;
    this.#wakeWriter = undefined;
    wake?.();
  }

  /** Queues a chunk; waits while the pipe is full. Throws {@linkcode PipeClosed} once the reader stopped. */
  async push(chunk: Uint8Array): Promise<void> {
    if (this.#stopped) throw new PipeClosed("Cannot write to pipe: the reader stopped");
    if (chunk.length === 0) return;
    this.#queue.push(chunk);
    this.#queued += chunk.length;
    this.#signalReader();
    while (this.#queued > this.#limit && !this.#stopped) {
      await new Promise<void>((resolve) => (this.#wakeWriter = resolve));
    }
    if (this.#stopped) throw new PipeClosed("Cannot write to pipe: the reader stopped");
  }

  /** Ends the stream after the queued chunks. */
  end(): void {
    this.#ended = true;
    this.#signalReader();
  }

  /** Ends the stream with an error, thrown to the reader after the queued chunks. */
  fail(error: unknown): void {
    this.#error ??= { error };
    this.#signalReader();
  }

  /** Yields the chunks in order; stopping early makes later pushes throw. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    try {
      for (;;) {
        const chunk = this.#queue.shift();
        if (chunk !== undefined) {
          this.#queued -= chunk.length;
          this.#signalWriter();
          yield chunk;
          continue;
        }
        if (this.#error !== undefined) throw this.#error.error;
        if (this.#ended) return;
        await new Promise<void>((resolve) => (this.#wakeReader = resolve));
      }
    } finally {
      this.#stopped = true;
      this.#queue = [];
      this.#queued = 0;
      this.#signalWriter();
    }
  }
}
