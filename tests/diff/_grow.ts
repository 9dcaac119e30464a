// A writer for tests of reading a file while it is written (a layer applied as it downloads).

import { FOLLOW_DONE, FOLLOW_STOPPED, newFollowState } from "../../diff/follow.ts";
import type { Follow } from "../../diff/follow.ts";

/** What {@linkcode growFile} reports. */
export interface Growing {
  /** What the reader is given (`size` is the whole of `data`). */
  follow: Follow;
  /** Bytes written so far. */
  written(): number;
  /** Settles once the writer has ended (and set the state). */
  done: Promise<void>;
}

/**
 * Writes `data` to `path` (created empty at once) in pieces of `piece` bytes, `delayMs` apart,
 * then sets the state to done; with `stopAt`, sets it to stopped once that many bytes are written
 * instead of going on; with `after`, writes nothing before it settles.
 *
 * @param path The file.
 * @param data Its whole content.
 * @param options Piece size, delay, where to stop.
 * @returns The follow state and the writer's progress.
 */
export async function growFile(
  path: string,
  data: Uint8Array,
  options: { piece: number; delayMs: number; stopAt?: number; after?: Promise<void> },
): Promise<Growing> {
  const state = newFollowState();
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  let written = 0;
  const done = (async () => {
    try {
      await options.after;
      while (written < data.length) {
        if (options.stopAt !== undefined && written >= options.stopAt) {
          Atomics.store(state, 0, FOLLOW_STOPPED);
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, options.delayMs));
        const end = Math.min(data.length, written + options.piece);
        let at = written;
        while (at < end) at += await file.write(data.subarray(at, end));
        written = end;
      }
      Atomics.store(state, 0, FOLLOW_DONE);
    } finally {
      file.close();
    }
  })();
  return { follow: { size: data.length, state }, written: () => written, done };
}
