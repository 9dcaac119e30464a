// The collection an unpack does between layers (unpack/_gc.ts): the heap goes back to its live
// size, in use and committed, once a layer's garbage has made it grow.

import assert from "node:assert/strict";
import { collectBetweenLayers } from "../../unpack/_gc.ts";

const MB = 1024 * 1024;

/** About `mb` MiB more of small objects, as an apply leaves behind (headers, names, views). */
function garbage(mb: number): unknown[] {
  const out: unknown[] = [];
  const start = Deno.memoryUsage().heapUsed;
  while (Deno.memoryUsage().heapUsed < start + mb * MB) {
    for (let i = 0; i < 10_000; i++) out.push({ name: `usr/lib/file-${i}`, size: i, mode: 0o644 });
  }
  return out;
}

Deno.test("collectBetweenLayers gives a layer's garbage back", () => {
  collectBetweenLayers();
  const start = Deno.memoryUsage().heapUsed;
  // Above twice the live heap, where a collection is due.
  let junk: unknown[] | null = garbage(start / MB + 16);
  const before = Deno.memoryUsage();
  assert.ok(junk.length > 0);
  junk = null;
  collectBetweenLayers();
  const after = Deno.memoryUsage();
  assert.ok(
    after.heapUsed < start + 8 * MB,
    `heap in use: ${start} bytes at the start, ${before.heapUsed} with the garbage, ${after.heapUsed} after`,
  );
  // The emptied pages are given back, not kept for later allocations.
  assert.ok(
    after.heapTotal < before.heapTotal - 16 * MB,
    `heap committed: ${before.heapTotal} bytes with the garbage, ${after.heapTotal} after`,
  );
});

Deno.test("collectBetweenLayers keeps what is still referenced", () => {
  const start = Deno.memoryUsage().heapUsed;
  const kept = garbage(24);
  collectBetweenLayers();
  const after = Deno.memoryUsage().heapUsed;
  assert.ok(after >= start + 16 * MB, `the live objects are still there (${after} bytes)`);
  assert.ok(kept.length > 0);
});
