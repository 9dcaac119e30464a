// Durability helpers of the unpacker: syncfs(2) on a thread of Deno's blocking pool, coalesced
// per file system, and a first-in first-out limit on concurrent layer applies.

import { FailedPrecondition } from "../errors.ts";
import * as sys from "../sys/mod.ts";

interface FsState {
  /** The syncfs running now. */
  running: Promise<void> | null;
  /** The one that starts when `running` ends, shared by everyone who asked meanwhile. */
  queued: Promise<void> | null;
}

/**
 * Syncs file systems without blocking the event loop, one `syncfs` at a time per file system:
 * a request made while one runs joins the single call queued behind it (that one starts after
 * the request, so it covers everything written before the request).
 */
export class SyncQueue {
  #fs = new Map<number, FsState>();

  /**
   * Resolves once a `syncfs` of the file system holding `dir` that started after this call has
   * finished: everything written there before the call is on disk.
   *
   * @param dir A directory on the file system.
   * @returns A promise that rejects with `FailedPrecondition` when the sync fails.
   */
  sync(dir: string): Promise<void> {
    let dev: number;
    try {
      dev = sys.stat(dir).dev;
    } catch (err) {
      return Promise.reject(syncError(dir, err));
    }
    let state = this.#fs.get(dev);
    if (state === undefined) {
      state = { running: null, queued: null };
      this.#fs.set(dev, state);
    }
    const running = state.running;
    if (running === null) return this.#start(state, dir);
    if (state.queued !== null) return state.queued;
    const s = state;
    const queued = running.then(ignore, ignore).then(() => {
      s.queued = null;
      return this.#start(s, dir);
    });
    s.queued = queued;
    return queued;
  }

  #start(state: FsState, dir: string): Promise<void> {
    const run = syncDir(dir);
    state.running = run;
    const clear = () => {
      if (state.running === run) state.running = null;
    };
    run.then(clear, clear);
    return run;
  }
}

function ignore(): void {}

async function syncDir(dir: string): Promise<void> {
  let fd: number;
  try {
    fd = sys.open(dir, sys.O_RDONLY | sys.O_DIRECTORY | sys.O_CLOEXEC);
  } catch (err) {
    throw syncError(dir, err);
  }
  try {
    await sys.syncfsAsync(fd);
  } catch (err) {
    throw syncError(dir, err);
  } finally {
    sys.close(fd);
  }
}

function syncError(dir: string, err: unknown): FailedPrecondition {
  return new FailedPrecondition(
    `Cannot sync the file system of "${dir}": ${err instanceof Error ? err.message : String(err)}`,
    { cause: err },
  );
}

/** A counting semaphore whose waiters get their turn in the order they asked. */
export class Limiter {
  #free: number;
  #waiters: (() => void)[] = [];

  /**
   * Creates a limiter.
   *
   * @param limit How many holders at once (at least 1).
   */
  constructor(limit: number) {
    this.#free = Math.max(1, Math.floor(limit));
  }

  /**
   * Waits for a turn.
   *
   * @returns A function that ends the turn; calling it again does nothing.
   */
  async acquire(): Promise<() => void> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiters.push(resolve));
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.#waiters.shift();
      if (next !== undefined) next();
      else this.#free++;
    };
  }
}
