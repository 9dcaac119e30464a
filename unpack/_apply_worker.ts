// The worker side of a parallel unpack: applies one layer blob at a time onto a directory, with
// its own thread (and its own libc errno), so that layers are decompressed, hashed and written
// on several CPUs at once. Spoken to by `_worker_pool.ts`.

import { pathToFileURL } from "node:url";
import { type ApplyOptions, applyToMounts } from "../diff/apply.ts";
import { reviveError, type SerializedError, serializeError } from "../errors.ts";
import type { Mount } from "../mount/types.ts";
import { collectBetweenLayers } from "./_gc.ts";
import type { FromWorker, ToWorker } from "./_worker_pool.ts";

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

function post(message: FromWorker): void {
  scope.postMessage(message);
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
          else reject(reviveError(dirs.error));
        };
        post({ type: "lowers", id });
      });
  }
  if (reopen) applyOptions.reopen = () => pathToFileURL(path);
  try {
    // The blob file itself: a big compressed one is decompressed on a further worker thread.
    const result = await applyToMounts(pathToFileURL(path), mounts, applyOptions);
    post({ type: "done", id, result });
  } catch (err) {
    post({ type: "error", id, error: serializeError(err) });
  } finally {
    job = null;
    collectBetweenLayers();
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
