// The worker side of a parallel unpack: applies one layer blob at a time onto a directory, with
// its own thread (and its own libc errno), so that layers are decompressed, hashed and written
// on several CPUs at once. Spoken to by `_worker_pool.ts`.

import { type ApplyOptions, type ApplyResult, applyToMounts } from "../diff/apply.ts";
import { NotFound } from "../errors.ts";
import type { Mount } from "../mount/types.ts";
import type { FromWorker, ToWorker } from "./_worker_pool.ts";

const READ_CHUNK = 1 << 20;

/**
 * The worker's global scope, typed here rather than with a `deno.worker` lib directive (JSR does
 * not allow directives that change globals).
 */
const scope = globalThis as unknown as {
  postMessage(message: FromWorker): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
};

let job:
  | {
    id: number;
    abort: AbortController;
    lowers: ((dirs: string[] | { error: SerializedError }) => void) | null;
  }
  | null = null;

/** An error as it crosses to the main thread. */
export interface SerializedError {
  /** The class name (`FailedPrecondition`, `TarError`, `SysError`, ...). */
  name: string;
  /** The message. */
  message: string;
  /** `StrataError.code` (`invalid-argument`, ...), when it has one. */
  code?: string;
}

function post(message: FromWorker): void {
  scope.postMessage(message);
}

/**
 * The blob, read in large chunks into one buffer (the caller closes the file): the applier is done
 * with a chunk before it asks for the next (see `decompress`), so a layer costs one buffer, not
 * one garbage buffer per MiB. Every chunk but the last is full, so the compression is told from
 * the first one.
 */
async function* readBlob(file: Deno.FsFile, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  const buf = new Uint8Array(READ_CHUNK);
  for (;;) {
    signal.throwIfAborted();
    let n = 0;
    while (n < buf.length) {
      const got = await file.read(buf.subarray(n));
      if (got === null) break;
      n += got;
    }
    if (n === 0) return;
    yield n === buf.length ? buf : buf.subarray(0, n);
    if (n < buf.length) return;
  }
}

/** The blob file at `path`, opened and read as {@linkcode readBlob} does, closed at the end. */
async function* readPath(path: string, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  const file = await Deno.open(path);
  try {
    yield* readBlob(file, signal);
  } finally {
    file.close();
  }
}

function serialize(err: unknown): SerializedError {
  if (!(err instanceof Error)) return { name: "Error", message: String(err) };
  const code = (err as { code?: unknown }).code;
  return {
    name: err.name,
    message: err.message,
    ...(typeof code === "string" ? { code } : {}),
  };
}

async function apply(
  id: number,
  path: string,
  mounts: Mount[],
  options: ApplyOptions,
  deferLowers: boolean,
  reopen: boolean,
): Promise<void> {
  const abort = new AbortController();
  job = { id, abort, lowers: null };
  const applyOptions: ApplyOptions = { ...options, signal: abort.signal };
  if (deferLowers) {
    applyOptions.awaitLowerDirs = () =>
      new Promise<string[]>((resolve, reject) => {
        job!.lowers = (dirs) => {
          if (Array.isArray(dirs)) resolve(dirs);
          else reject(Object.assign(new Error(dirs.error.message), { name: dirs.error.name }));
        };
        post({ type: "lowers", id });
      });
  }
  if (reopen) applyOptions.reopen = () => readPath(path, abort.signal);
  let file: Deno.FsFile | undefined;
  try {
    try {
      file = await Deno.open(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      throw new NotFound(`Cannot read blob file "${path}": it is missing`);
    }
    const result: ApplyResult = await applyToMounts(
      readBlob(file, abort.signal),
      mounts,
      applyOptions,
    );
    // Closed before the main thread hears of it: nothing of the layer's file system stays open.
    file.close();
    file = undefined;
    post({ type: "done", id, result });
  } catch (err) {
    file?.close();
    file = undefined;
    post({ type: "error", id, error: serialize(err) });
  } finally {
    file?.close();
    job = null;
  }
}

scope.onmessage = (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  switch (message.type) {
    case "apply":
      apply(
        message.id,
        message.path,
        message.mounts,
        message.options,
        message.deferLowers,
        message.reopen,
      );
      break;
    case "lowers":
      if (job?.id === message.id) job.lowers?.(message.dirs);
      break;
    case "lowers-error":
      if (job?.id === message.id) job.lowers?.({ error: message.error });
      break;
    case "abort":
      if (job?.id === message.id) job.abort.abort();
      break;
  }
};
