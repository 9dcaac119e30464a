// Run by early_writeback_test.ts in a process of its own, where nothing else dirties pages: an
// EarlyWriteback with the default byte counter (`/proc/self/io`) and `minBytes` 1 MiB gives no
// head start while nothing is written, then one after a 4 MiB write. Prints
// `before=N after=M` (the syncfs calls counted) and exits.

import { EarlyWriteback, SyncQueue } from "../../unpack/_sync.ts";

const dir = Deno.args[0]!;
let calls = 0;
const queue = new SyncQueue({
  syncfs: () => {
    calls++;
    return Promise.resolve();
  },
});
const early = new EarlyWriteback(queue, { intervalMs: 5, minBytes: 1024 * 1024 });
early.watch(dir);
const end = early.begin();
await new Promise((r) => setTimeout(r, 100));
const before = calls;
await Deno.writeFile(`${dir}/f`, new Uint8Array(4 * 1024 * 1024).fill(1));
for (let i = 0; i < 1000 && calls === before; i++) await new Promise((r) => setTimeout(r, 10));
end();
console.log(`before=${before} after=${calls}`);
