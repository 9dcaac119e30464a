// Applies every corpus case to fresh directories under WORK (delete policy, plain directories)
// from whatever working directory it is started in, and prints each case's outcome as JSON.
// The corpus test starts it in a canary directory and checks that nothing there changed.

import { basename, dirname, join } from "node:path";
import { applyLayer } from "../../diff/apply.ts";
import { CASES } from "./_corpus_cases.ts";
import { chunks } from "./_helpers.ts";

const [work] = Deno.args;
if (work === undefined) throw new Error("Usage: _corpus_cwd_child.ts WORK");
// G60 (100 000 files) is left to the snapshotter runs: it adds nothing about the working directory.
const SKIP = new Set(["G60"]);
const outcomes: Record<string, string> = {};
for (const c of CASES) {
  if (SKIP.has(c.id)) continue;
  const root = join(work, c.id, "root");
  await Deno.mkdir(root, { recursive: true });
  const ctx = {
    parent: dirname(root),
    rootName: basename(root),
    victim: join(work, c.id, "victim"),
  };
  const layers = await c.layers(ctx);
  const rejectAt = c.reject === undefined ? -1 : c.reject.layer ?? layers.length - 1;
  outcomes[c.id] = "applied";
  for (const [i, data] of layers.entries()) {
    try {
      await applyLayer(chunks(data), root, (await c.options?.(i, layers)) ?? {});
    } catch (err) {
      outcomes[c.id] = i === rejectAt ? "rejected" : `failed at layer ${i}: ${err}`;
      break;
    }
  }
  await Deno.remove(join(work, c.id), { recursive: true });
}
console.log(JSON.stringify(outcomes));
