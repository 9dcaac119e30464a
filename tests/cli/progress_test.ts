// The plain progress printer of `strata pull`: one line per change of state, and a layer applied
// while it downloads reads `extracting` until its download ends.

import assert from "node:assert/strict";
import { progressPrinter } from "../../cli/_progress.ts";
import type { ProgressEvent } from "../../transfer/progress.ts";

Deno.test("plain progress prints a line per state, and a layer extracting while it downloads stays extracting", () => {
  const lines: string[] = [];
  const printer = progressPrinter("plain", (l) => lines.push(l));
  const id = `sha256:${"ab".repeat(32)}`;
  const layer = (status: ProgressEvent["status"], current?: number): ProgressEvent => ({
    id,
    kind: "layer",
    status,
    ...(current === undefined ? {} : { current, total: 2048 }),
  });
  for (
    const e of [
      layer("waiting", 0),
      layer("downloading", 10),
      layer("downloading", 20),
      layer("extracting"),
      layer("downloading", 1000),
      layer("downloaded", 2048),
      layer("extracted"),
    ]
  ) printer.event(e);
  printer.done();
  assert.deepEqual(lines, [
    "layer abababababab: waiting (2.0 KiB)",
    "layer abababababab: downloading (2.0 KiB)",
    "layer abababababab: extracting",
    "layer abababababab: downloaded (2.0 KiB)",
    "layer abababababab: extracted",
  ]);
});
