// Off-thread decompression of a compressed layer file: a worker (`_inflate_worker.ts`) reads,
// decompresses and hashes it while the main thread parses the tar and writes files. Decompression
// and hashing are about half of the CPU time of an unpack on one thread, so on two CPUs this
// takes them off the critical path, as `tar -xzf` does by running gzip as its own process.

import { createHash } from "node:crypto";
import { reviveError, type SerializedError } from "../errors.ts";
import type { Follow } from "./follow.ts";

/** What the inflate worker is told. */
export type ToInflater =
  | { type: "start"; path: string; slots: number; follow: Follow | undefined }
  | { type: "give"; buffer: ArrayBuffer };

/** What the inflate worker says. */
export type FromInflater =
  | { type: "output"; buffer: ArrayBuffer; length: number }
  | { type: "done"; compressedDigest: string; compressedSize: number; size: number }
  | { type: "error"; error: SerializedError };

/** Digests and sizes of a layer decompressed off the main thread. */
export interface InflateResult {
  /** sha256 of the file, `sha256:<hex>`. */
  compressedDigest: string;
  /** Bytes of the file. */
  compressedSize: number;
  /** sha256 of the decompressed stream, `sha256:<hex>`. */
  diffId: string;
  /** Bytes of the decompressed stream. */
  size: number;
}

/** Buffers in flight between the threads: how far decompression may run ahead of the tar. */
const SLOTS = 16;

/** Holders of {@linkcode keepInflateWorkers}. */
let holds = 0;
/** Workers that finished a layer, kept for the next one while someone holds them. */
const idle: Worker[] = [];

/**
 * Keeps the decompression workers of finished layers for the next layers of this thread until the
 * returned function is called (an unpack holds them from its first layer to its end). Starting
 * and ending a worker per layer costs time and leaves about half a MiB of C heap behind each time
 * (measured: 0.6 MiB per layer, see BENCHMARKS.md); an idle worker, though, keeps the process
 * alive, so they are only kept while held.
 *
 * @returns Ends the hold; the last one ends the idle workers. Calling it again does nothing.
 */
export function keepInflateWorkers(): () => void {
  holds++;
  let done = false;
  return () => {
    if (done) return;
    done = true;
    if (--holds === 0) { for (const worker of idle.splice(0)) worker.terminate(); }
  };
}

/** An idle worker, or a new one. */
function takeWorker(): Worker {
  return idle.pop() ??
    new Worker(new URL("./_inflate_worker.ts", import.meta.url), { type: "module" });
}

/** Keeps `worker` for the next layer when it finished its stream and is held; ends it otherwise. */
function putWorker(worker: Worker, finished: boolean): void {
  worker.onmessage = null;
  worker.onerror = null;
  worker.onmessageerror = null;
  if (finished && holds > 0) idle.push(worker);
  else worker.terminate();
}

/**
 * The decompressed bytes of a gzip or zstd file, decompressed and hashed on a worker thread.
 * Each chunk is valid until the next one is asked for (its buffer then goes back to the worker),
 * the contract `readTar` keeps. {@linkcode result} is set once the stream has ended.
 */
export class OffThreadInflate implements AsyncIterable<Uint8Array> {
  #path: string;
  #follow: Follow | undefined;
  /** Digests and sizes, once every chunk was read. */
  result: InflateResult | undefined;

  /**
   * @param path The compressed file.
   * @param follow Set when the file is still being written (see `ApplyOptions.follow`).
   */
  constructor(path: string, follow?: Follow) {
    this.#path = path;
    this.#follow = follow;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    const worker = takeWorker();
    // Set once the worker has sent everything: only then can it take another file.
    let finished = false;
    const queue: FromInflater[] = [];
    let wake: (() => void) | null = null;
    const push = (message: FromInflater): void => {
      queue.push(message);
      const w = wake;
      wake = null;
      w?.();
    };
    worker.onmessage = (event: MessageEvent<FromInflater>) => push(event.data);
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      push({ type: "error", error: { name: "Error", message: event.message } });
    };
    worker.onmessageerror = () => {
      push({ type: "error", error: { name: "Error", message: "a message could not be read" } });
    };
    const start: ToInflater = {
      type: "start",
      path: this.#path,
      slots: SLOTS,
      follow: this.#follow,
    };
    worker.postMessage(start);
    let lent: ArrayBuffer | null = null;
    const hash = createHash("sha256");
    try {
      for (;;) {
        while (queue.length === 0) await new Promise<void>((resolve) => (wake = resolve));
        const message = queue.shift()!;
        if (message.type === "error") throw reviveError(message.error);
        if (message.type === "done") {
          finished = true;
          const { compressedDigest, compressedSize, size } = message;
          const diffId = `sha256:${hash.digest("hex")}`;
          this.result = { compressedDigest, compressedSize, diffId, size };
          return;
        }
        lent = message.buffer;
        const chunk = new Uint8Array(message.buffer, 0, message.length);
        // The diffID is hashed here: decompression alone keeps the worker as busy as this thread.
        hash.update(chunk);
        yield chunk;
        // The consumer is done with the chunk: its buffer goes back (and is detached here).
        const give: ToInflater = { type: "give", buffer: lent };
        worker.postMessage(give, [lent]);
        lent = null;
      }
    } finally {
      putWorker(worker, finished);
    }
  }
}
