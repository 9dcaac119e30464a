// Spawned by writer_test.ts: opens a writer on a root, writes part of a blob, says "ready" and
// waits to be killed. Arguments: <strata root> <ref> <total size> <bytes to write>.
import { openStore, pattern, sha256 } from "./_helpers.ts";

const [root, ref, totalArg, writeArg] = Deno.args;
const total = Number(totalArg);
const count = Number(writeArg);
const data = pattern(total);
const { store } = await openStore(root!);
const writer = await store.writer({
  ref: ref!,
  expected: { digest: sha256(data), size: total },
});
for (let i = 0; i < count; i += 4096) {
  await writer.write(data.subarray(i, Math.min(i + 4096, count)));
}
console.log("ready");
setInterval(() => {}, 60_000);
