// Applies one compressed layer file three times under keepInflateWorkers() and prints, as JSON,
// the worker threads that ran meanwhile, the diff IDs, and whether the worker threads were gone
// after the release. Run in its own process by off_thread_test.ts, so that no other test's
// workers are counted.

import { applyLayer } from "../../diff/apply.ts";
import { keepInflateWorkers } from "../../diff/_inflate.ts";

const [url, ...roots] = Deno.args;
if (url === undefined || roots.length === 0) {
  throw new Error("Usage: _inflate_reuse_child.ts LAYER_URL ROOT...");
}

function workerThreads(): Set<string> {
  const out = new Set<string>();
  for (const task of Deno.readDirSync("/proc/self/task")) {
    try {
      const comm = Deno.readTextFileSync(`/proc/self/task/${task.name}/comm`);
      if (comm.startsWith("worker-")) out.add(task.name);
    } catch {
      // The thread ended while we looked.
    }
  }
  return out;
}

const before = workerThreads();
// Every worker thread that ran while the layers were applied (a thread id is not reused soon).
const seen = new Set<string>();
const poll = setInterval(() => {
  for (const tid of workerThreads()) if (!before.has(tid)) seen.add(tid);
}, 1);
const release = keepInflateWorkers();
const diffIds: string[] = [];
try {
  for (const root of roots) diffIds.push((await applyLayer(new URL(url), root)).diffId);
} finally {
  clearInterval(poll);
  release();
}
// Released: the idle worker ends (it would keep the process alive).
let ended = false;
for (let i = 0; i < 100 && !ended; i++) {
  ended = workerThreads().size === before.size;
  if (!ended) await new Promise((resolve) => setTimeout(resolve, 20));
}
console.log(JSON.stringify({ seen: [...seen], diffIds, ended }));
