// Durability helpers of the unpacker: syncfs(2) on a thread of Deno's blocking pool, coalesced
// per file system, and a first-in first-out limit on concurrent layer applies.

import { FailedPrecondition } from "../errors.ts";
import * as sys from "../sys/mod.ts";

interface FsState {
  /**
   * The descriptor every syncfs of this file system uses, open from the first request on: a
   * syncfs reports each writeback error of the file system that happened since its descriptor
   * was opened (once), so one descriptor kept open also sees the errors of writebacks that were
   * not its own (the kernel's background writeback) even when another process's syncfs saw
   * them first.
   */
  fd: number | null;
  /** The syncfs running now. */
  running: Promise<void> | null;
  /** The one that starts when `running` ends, shared by everyone who asked meanwhile. */
  queued: Promise<void> | null;
  /**
   * The first failure of a syncfs of this file system, reported to every later request: the
   * kernel reports a writeback error to one syncfs only, so a failed head start must not let a
   * later sync succeed.
   */
  failed: FailedPrecondition | null;
}

/** Options of {@linkcode SyncQueue}. */
export interface SyncQueueOptions {
  /** The call that syncs a file system given a descriptor on it (default `sys.syncfsAsync`). */
  syncfs?: (fd: number) => Promise<void>;
}

/**
 * Syncs file systems without blocking the event loop, one `syncfs` at a time per file system:
 * a request made while one runs joins the single call queued behind it (that one starts after
 * the request, so it covers everything written before the request). A descriptor per file
 * system stays open until {@linkcode SyncQueue.close}.
 */
export class SyncQueue {
  #fs = new Map<number, FsState>();
  #syncfs: (fd: number) => Promise<void>;

  /**
   * Creates a queue.
   *
   * @param options The sync call (tests replace it).
   */
  constructor(options: SyncQueueOptions = {}) {
    this.#syncfs = options.syncfs ?? sys.syncfsAsync;
  }

  /**
   * Resolves once a `syncfs` of the file system holding `dir` that started after this call has
   * finished: everything written there before the call is on disk.
   *
   * @param dir A directory on the file system.
   * @returns A promise that rejects with `FailedPrecondition` when the sync fails.
   */
  sync(dir: string): Promise<void> {
    let state: FsState;
    try {
      state = this.#state(dir);
    } catch (err) {
      return Promise.reject(err);
    }
    if (state.failed !== null) return Promise.reject(state.failed);
    const running = state.running;
    if (running === null) return this.#start(state, dir);
    if (state.queued !== null) return state.queued;
    const s = state;
    const queued = running.then(ignore, ignore).then(() => {
      s.queued = null;
      // What the failed sync did not write is not on disk, and no later one will say so.
      if (s.failed !== null) throw s.failed;
      return this.#start(s, dir);
    });
    s.queued = queued;
    return queued;
  }

  /**
   * Opens the descriptor that syncs of the file system holding `dir` use, unless it is open: from
   * now on they report every writeback error of that file system. Failures are left to the syncs.
   *
   * @param dir A directory on the file system.
   */
  track(dir: string): void {
    try {
      this.#open(this.#state(dir), dir);
    } catch {
      // The sync that counts will report it.
    }
  }

  /**
   * Waits for the syncs running or queued, then closes the descriptors; a later request opens
   * them again.
   *
   * @returns A promise that resolves once they are closed (it never rejects).
   */
  async close(): Promise<void> {
    for (const state of this.#fs.values()) {
      while (state.running !== null || state.queued !== null) {
        await Promise.allSettled([state.running, state.queued]);
      }
      if (state.fd !== null) sys.close(state.fd);
      state.fd = null;
    }
  }

  /**
   * Starts a `syncfs` of the file system holding `dir` unless one is running or queued: a head
   * start for the writeback of what is being written, so that a later {@linkcode sync} has less
   * left to flush. Its failure is kept and fails every later {@linkcode sync} of the file system.
   *
   * @param dir A directory on the file system.
   * @returns Whether a `syncfs` was started.
   */
  kick(dir: string): boolean {
    let state: FsState;
    try {
      state = this.#state(dir);
    } catch {
      return false; // The sync that counts will report it.
    }
    if (state.failed !== null || state.running !== null || state.queued !== null) return false;
    this.#start(state, dir).catch(ignore);
    return true;
  }

  /** Syncs the file system of `dir`; a failed sync (not a failed open) is kept. */
  async #syncDir(dir: string, state: FsState): Promise<void> {
    const fd = this.#open(state, dir);
    try {
      await this.#syncfs(fd);
    } catch (err) {
      const failure = syncError(dir, err);
      state.failed ??= failure;
      throw failure;
    }
  }

  /** The file system's descriptor, opening `dir` when there is none; throws `FailedPrecondition`. */
  #open(state: FsState, dir: string): number {
    if (state.fd !== null) return state.fd;
    try {
      state.fd = sys.open(dir, sys.O_RDONLY | sys.O_DIRECTORY | sys.O_CLOEXEC);
    } catch (err) {
      throw syncError(dir, err);
    }
    return state.fd;
  }

  #state(dir: string): FsState {
    const dev = deviceOf(dir);
    let state = this.#fs.get(dev);
    if (state === undefined) {
      state = { fd: null, running: null, queued: null, failed: null };
      this.#fs.set(dev, state);
    }
    return state;
  }

  #start(state: FsState, dir: string): Promise<void> {
    const run = this.#syncDir(dir, state);
    state.running = run;
    const clear = () => {
      if (state.running === run) state.running = null;
    };
    run.then(clear, clear);
    return run;
  }
}

/** The device number of `dir`'s file system; throws `FailedPrecondition`. */
function deviceOf(dir: string): number {
  try {
    return sys.stat(dir).dev;
  } catch (err) {
    throw syncError(dir, err);
  }
}

function ignore(): void {}

function syncError(dir: string, err: unknown): FailedPrecondition {
  return new FailedPrecondition(
    `Cannot sync the file system of "${dir}": ${err instanceof Error ? err.message : String(err)}`,
    { cause: err },
  );
}

/** Options of {@linkcode EarlyWriteback}. */
export interface EarlyWritebackOptions {
  /** How often to look at what was written, in milliseconds (default 25). */
  intervalMs?: number;
  /** Bytes the process must have dirtied since the last head start before the next one. */
  minBytes?: number;
  /** Bytes this process has dirtied so far (default: `write_bytes` of `/proc/self/io`). */
  written?: () => number | undefined;
}

/**
 * Starts the writeback of an unpack's data while it is being written: every `intervalMs`, when
 * the process has dirtied `minBytes` (default 64 MiB) since the last head start and no `syncfs`
 * of the file system is running or queued, a `syncfs` is started through the
 * {@linkcode SyncQueue}. The page cache would otherwise hold everything until the per-layer sync,
 * which then has to write it all with nothing left to overlap. A `syncfs` also writes the
 * metadata blocks (directories, bitmaps, inode tables) the writer is changing and makes it wait
 * for them, so these are kept few. They are only a head start: each layer still waits for a
 * `syncfs` that started after its apply ended.
 */
export class EarlyWriteback {
  #queue: SyncQueue;
  /** A directory per file system (device number) given head starts. */
  #dirs = new Map<number, string>();
  #intervalMs: number;
  #minBytes: number;
  #written: () => number | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #last = 0;
  #active = 0;

  /**
   * Creates the loop; it runs while a writer is at work ({@linkcode begin}).
   *
   * @param queue The sync queue the head starts go through.
   * @param options Interval, threshold and the byte counter.
   */
  constructor(queue: SyncQueue, options: EarlyWritebackOptions = {}) {
    this.#queue = queue;
    this.#intervalMs = options.intervalMs ?? 25;
    this.#minBytes = options.minBytes ?? 64 * 1024 * 1024;
    this.#written = options.written ?? processWrittenBytes;
  }

  /**
   * Adds the file system holding `dir` to those given head starts.
   *
   * @param dir A directory being written.
   */
  watch(dir: string): void {
    try {
      this.#dirs.set(sys.stat(dir).dev, dir);
    } catch {
      // No head start for it; the sync that counts reports the problem.
      return;
    }
    // Writes start before any sync of it: their writeback errors must reach the syncs.
    this.#queue.track(dir);
  }

  /**
   * Marks the start of a writer (a layer's prepare and apply): head starts are given only while
   * one is at work, so that none competes with the syncs and commits that follow the last apply.
   *
   * @returns A function that marks its end; calling it again does nothing.
   */
  begin(): () => void {
    if (this.#active++ === 0) {
      this.#last = this.#written() ?? 0;
      const timer = setInterval(() => this.#tick(), this.#intervalMs);
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (--this.#active === 0) this.close();
    };
  }

  /** Stops the loop; head starts already running go on and their failures stay recorded. */
  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #tick(): void {
    const written = this.#written();
    if (written !== undefined && written - this.#last < this.#minBytes) return;
    let started = false;
    for (const dir of this.#dirs.values()) started = this.#queue.kick(dir) || started;
    if (started && written !== undefined) this.#last = written;
  }
}

/** The bytes this process (every thread) has dirtied in the page cache, or undefined. */
function processWrittenBytes(): number | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/self/io");
  } catch {
    return undefined;
  }
  const m = /^write_bytes:\s*(\d+)/m.exec(text);
  return m === null ? undefined : Number(m[1]);
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
