// Reading a layer file that is still being written (a layer applied while it downloads): the
// reader waits at the end of the file for more bytes until it has read the size the file will
// have, and stops when the writer says it failed. The writer's side is a shared `Int32Array`
// (on a SharedArrayBuffer), so that readers on worker threads see it too.

import { FailedPrecondition } from "../errors.ts";
import { type Follow, FOLLOW_DONE, FOLLOW_STOPPED } from "./follow.ts";

/** How long a reader sleeps at the end of a file still being written: doubled up to the most. */
const POLL_FIRST_MS = 2;
const POLL_MOST_MS = 32;

/**
 * The bytes of `path` in chunks of `chunkSize` bytes (the last one shorter), read into one
 * buffer: each chunk is valid until the next is asked for. With `follow`, reads exactly
 * `follow.size` bytes, waiting at the end of the file while it is written.
 *
 * @param path The file.
 * @param options The chunk size, the file being written, and who sees each chunk first.
 */
export async function* readFileChunks(
  path: string,
  options: {
    chunkSize: number;
    follow?: Follow | undefined;
    onChunk?: (chunk: Uint8Array) => void;
  },
): AsyncGenerator<Uint8Array, void, undefined> {
  const { chunkSize, follow, onChunk } = options;
  using file = await Deno.open(path);
  const buf = new Uint8Array(chunkSize);
  let total = 0;
  // Set once the end of the file was met after the writer finished.
  let finalRead = false;
  let pause = POLL_FIRST_MS;
  for (;;) {
    const want = follow === undefined ? buf.length : Math.min(buf.length, follow.size - total);
    if (want === 0) return;
    let n = 0;
    let eof = false;
    while (n < want) {
      const got = await file.read(buf.subarray(n, want));
      if (got !== null) {
        n += got;
        pause = POLL_FIRST_MS;
        continue;
      }
      if (follow === undefined) {
        eof = true;
        break;
      }
      const state = Atomics.load(follow.state, 0);
      if (state === FOLLOW_STOPPED) {
        // The file's size, not what this read got: the writer may have added bytes between this
        // read's end of file and the state.
        const { size } = await file.stat();
        throw new FailedPrecondition(
          `Cannot read "${path}": its writer stopped after ${size} of its ${follow.size} bytes`,
        );
      }
      if (state === FOLLOW_DONE) {
        // Bytes written just before the state changed: one more read sees them.
        if (finalRead) {
          throw new FailedPrecondition(
            `Cannot read "${path}": it ended after ${total + n} of its ${follow.size} bytes`,
          );
        }
        finalRead = true;
        continue;
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, POLL_MOST_MS);
    }
    total += n;
    if (n > 0) {
      const chunk = n === buf.length ? buf : buf.subarray(0, n);
      onChunk?.(chunk);
      yield chunk;
    }
    if (eof) return;
  }
}
