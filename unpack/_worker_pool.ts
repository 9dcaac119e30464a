// The main-thread side of the parallel unpack's workers: a few module workers, each applying one
// layer at a time (see `_apply_worker.ts`), with the lower directories and aborts relayed and
// errors turned back into Strata's typed errors.

import type { ApplyOptions, ApplyResult } from "../diff/apply.ts";
import { FailedPrecondition, reviveError, type SerializedError } from "../errors.ts";
import type { Mount } from "../mount/types.ts";

/** What the workers are told. */
export type ToWorker =
  | {
    type: "apply";
    id: number;
    path: string;
    mounts: Mount[];
    options: ApplyOptions;
    deferLowers: boolean;
    /** Whether the worker may read the blob again (see `ApplyOptions.reopen`). */
    reopen: boolean;
  }
  | { type: "lowers"; id: number; dirs: string[] }
  | { type: "lowers-error"; id: number; error: SerializedError }
  | { type: "abort"; id: number };

/** What the workers say. */
export type FromWorker =
  | { type: "lowers"; id: number }
  | { type: "done"; id: number; result: ApplyResult }
  | { type: "error"; id: number; error: SerializedError };

/** The options of {@linkcode WorkerPool.apply} that stay on the main thread. */
export interface PoolApplyOptions {
  /** Gives the lower directories when an entry needs them. */
  awaitLowerDirs?: () => Promise<string[]>;
  /** Set: the worker reads the blob file again when it must (see `ApplyOptions.reopen`). */
  reopen?: () => AsyncIterable<Uint8Array> | URL;
  /** Aborts the apply. */
  signal?: AbortSignal;
}

/** Applies layers on worker threads, at most `size` at once. */
export class WorkerPool {
  #idle: Worker[] = [];
  #all: Worker[] = [];
  #size: number;
  #next = 1;

  /**
   * Creates a pool; workers start when first needed.
   *
   * @param size The most workers.
   */
  constructor(size: number) {
    this.#size = size;
  }

  /** Whether a worker is free (or can be started) for {@linkcode WorkerPool.apply}. */
  get hasRoom(): boolean {
    return this.#idle.length > 0 || this.#all.length < this.#size;
  }

  #take(): Worker {
    const idle = this.#idle.pop();
    if (idle !== undefined) return idle;
    if (this.#all.length >= this.#size) {
      throw new FailedPrecondition(
        `Cannot start an unpack worker: all ${this.#size} are busy`,
      );
    }
    const worker = new Worker(new URL("./_apply_worker.ts", import.meta.url), {
      type: "module",
    });
    this.#all.push(worker);
    return worker;
  }

  /**
   * Applies the blob at `path` onto `mounts` on a worker, taken before this returns (check
   * {@linkcode WorkerPool.hasRoom} first).
   *
   * @param path The blob file.
   * @param mounts The snapshot's mounts.
   * @param options Apply options (plain data) plus the deferred lowers and the abort signal.
   * @returns What the applier returned.
   */
  apply(
    path: string,
    mounts: Mount[],
    options: ApplyOptions & PoolApplyOptions,
  ): Promise<ApplyResult> {
    const { awaitLowerDirs, signal, reopen, ...plain } = options;
    let worker: Worker;
    try {
      signal?.throwIfAborted();
      worker = this.#take();
    } catch (err) {
      return Promise.reject(err);
    }
    const id = this.#next++;
    return new Promise<ApplyResult>((resolve, reject) => {
      const onAbort = () => worker.postMessage({ type: "abort", id } satisfies ToWorker);
      signal?.addEventListener("abort", onAbort, { once: true });
      const finish = () => {
        signal?.removeEventListener("abort", onAbort);
        worker.removeEventListener("message", onMessage);
        worker.removeEventListener("error", onError);
      };
      const onError = (event: ErrorEvent) => {
        event.preventDefault();
        finish();
        // A worker that failed outside a job is not reused.
        this.#all = this.#all.filter((w) => w !== worker);
        worker.terminate();
        reject(new FailedPrecondition(`Cannot apply layer on a worker: ${event.message}`));
      };
      const onMessage = (event: MessageEvent<FromWorker>) => {
        const message = event.data;
        if (message.id !== id) return;
        if (message.type === "lowers") {
          const lowers = awaitLowerDirs?.() ??
            Promise.reject(new FailedPrecondition("Cannot give lower directories: none"));
          lowers.then(
            (dirs) => worker.postMessage({ type: "lowers", id, dirs } satisfies ToWorker),
            (err: Error) =>
              worker.postMessage(
                {
                  type: "lowers-error",
                  id,
                  error: { name: err.name, message: err.message },
                } satisfies ToWorker,
              ),
          );
          return;
        }
        finish();
        this.#idle.push(worker);
        if (message.type === "done") resolve(message.result);
        else if (signal?.aborted) reject(signal.reason);
        else reject(reviveError(message.error));
      };
      worker.addEventListener("message", onMessage);
      worker.addEventListener("error", onError);
      worker.postMessage(
        {
          type: "apply",
          id,
          path,
          mounts,
          options: plain,
          deferLowers: awaitLowerDirs !== undefined,
          reopen: reopen !== undefined,
        } satisfies ToWorker,
      );
    });
  }

  /** Stops every worker. */
  close(): void {
    for (const worker of this.#all) worker.terminate();
    this.#all = [];
    this.#idle = [];
  }
}
