// Keeps the JavaScript heaps of a long unpack near their live size.
//
// V8 lets a heap grow with the run: every scavenge adds its survivors to the young generation's
// growth budget, and the old generation's next collection is set at a multiple of what was live
// at the last one; the memory stays committed once the heap has grown. An unpack's live heap is
// small (about 9 MB on the main thread, whatever the image's size), but on an image eight times
// the size of `app` the main thread's heap reached 45-59 MB and the process's peak grew by about
// 40 MB (see BENCHMARKS.md). At the end of each layer, when the heap has committed more than twice
// what was live after the last collection (and more than 16 MB), a memory-reducing full
// collection (V8's "last resort" one, which also gives the emptied pages and young generation
// back) brings it to its live size, so the peak no longer depends on how many layers an image
// has. It takes 15-25 ms at this live size, and is skipped while the heap is small.
//
// `gc` is V8's `--expose-gc` function: the flag is set at run time and the function taken from a
// fresh context, which is the only way to reach it from Deno without a command-line flag. When
// either step fails (another runtime), the collection is simply not done.

import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** Committed heap below which a collection is not worth its time. */
const MIN_HEAP_BYTES = 16 * 1024 * 1024;

/** V8's `gc` with `--expose-gc`: an options object selects the collection. */
type Gc = (options?: { type: "major"; execution: "sync"; flavor: "last-resort" }) => void;

let gc: Gc | null | undefined;
/** The heap in use right after the last collection. */
let live = 0;

/**
 * Collects this isolate's garbage and gives the emptied heap back when the heap has committed
 * more than twice what was live after the last collection (and more than
 * {@linkcode MIN_HEAP_BYTES}). Called at the end of each layer.
 */
export function collectBetweenLayers(): void {
  gc ??= loadGc();
  if (gc === null) return;
  if (Deno.memoryUsage().heapTotal < Math.max(MIN_HEAP_BYTES, 2 * live)) return;
  gc({ type: "major", execution: "sync", flavor: "last-resort" });
  live = Deno.memoryUsage().heapUsed;
}

function loadGc(): Gc | null {
  const exposed = (globalThis as { gc?: unknown }).gc;
  if (typeof exposed === "function") return exposed as Gc;
  try {
    setFlagsFromString("--expose-gc");
    const fn = runInNewContext("gc");
    return typeof fn === "function" ? fn : null;
  } catch {
    return null;
  }
}
