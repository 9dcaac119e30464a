// Keeps the JavaScript heaps of a long unpack near their live size.
//
// V8 lets a heap grow with the run: every scavenge adds its survivors to the young generation's
// growth budget, and the old generation's next collection is set at a multiple of what was live
// at the last one. An unpack's live heap is small (about 9 MB on the main thread, whatever the
// image's size), but on an image eight times the size of `app` the main thread's heap reached
// 45-59 MB and the process's peak grew by about 40 MB (see BENCHMARKS.md). A full collection
// between layers (a few milliseconds at this live size) keeps each heap at its live size, so the
// peak no longer depends on how many layers an image has.
//
// `gc` is V8's `--expose-gc` function: the flag is set at run time and the function taken from a
// fresh context, which is the only way to reach it from Deno without a command-line flag. When
// either step fails (another runtime), the collection is simply not done.

import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** Heap in use below which a collection is not worth its time. */
const MIN_HEAP_BYTES = 16 * 1024 * 1024;

let gc: (() => void) | null | undefined;
/** The heap in use right after the last collection. */
let live = 0;

/**
 * Collects this isolate's garbage when its heap holds more than twice what was live after the
 * last collection (and more than {@linkcode MIN_HEAP_BYTES}). Called at the end of each layer.
 */
export function collectBetweenLayers(): void {
  gc ??= loadGc();
  if (gc === null) return;
  const used = Deno.memoryUsage().heapUsed;
  if (used < Math.max(MIN_HEAP_BYTES, 2 * live)) return;
  gc();
  live = Deno.memoryUsage().heapUsed;
}

function loadGc(): (() => void) | null {
  const exposed = (globalThis as { gc?: unknown }).gc;
  if (typeof exposed === "function") return exposed as () => void;
  try {
    setFlagsFromString("--expose-gc");
    const fn = runInNewContext("gc");
    return typeof fn === "function" ? fn : null;
  } catch {
    return null;
  }
}
