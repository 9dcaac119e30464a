// Worker-thread checks of off_thread_test.ts, run in a process of their own so that no other
// test's workers are counted (test files run in parallel in one process). Prints JSON.
//
//   reuse LAYER_URL ROOT...  applies the layer into each root under keepInflateWorkers():
//                            { seen: worker threads that ran, diffIds, ended: all gone after }
//   error LAYER_URL ROOT     applies a layer that fails part-way:
//                            { error: its class name, seen, ended }

import { applyLayer } from "../../diff/apply.ts";
import { keepInflateWorkers } from "../../diff/_inflate.ts";

const [mode, url, ...roots] = Deno.args;
if ((mode !== "reuse" && mode !== "error") || url === undefined || roots.length === 0) {
  throw new Error("Usage: _worker_threads_child.ts reuse|error LAYER_URL ROOT...");
}

/** Polls a thread must be seen in to count as a worker (1 ms apart). */
const MIN_POLLS = 10;

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
// How often each new worker-named thread was seen (a thread id is not reused soon). A thread a
// worker starts carries the worker's name until it names itself, so only threads seen in several
// polls count: a worker lives for a whole layer.
const polls = new Map<string, number>();
const poll = setInterval(() => {
  for (const tid of workerThreads()) {
    if (!before.has(tid)) polls.set(tid, (polls.get(tid) ?? 0) + 1);
  }
}, 1);
const result: Record<string, unknown> = {};
const release = mode === "reuse" ? keepInflateWorkers() : () => {};
try {
  const diffIds: string[] = [];
  for (const root of roots) {
    try {
      diffIds.push((await applyLayer(new URL(url), root)).diffId);
    } catch (err) {
      if (mode !== "error") throw err;
      result.error = (err as Error).constructor.name;
    }
  }
  if (mode === "reuse") result.diffIds = diffIds;
} finally {
  clearInterval(poll);
  release();
}
// A released or failed worker's thread ends (one left running would keep the process alive).
let ended = false;
for (let i = 0; i < 100 && !ended; i++) {
  ended = workerThreads().size === before.size;
  if (!ended) await new Promise((resolve) => setTimeout(resolve, 20));
}
const seen = [...polls].filter(([, n]) => n >= MIN_POLLS).map(([tid]) => tid);
console.log(JSON.stringify({ ...result, seen, ended }));
// A worker left running would keep the process alive: the report above says so; exit anyway.
Deno.exit(0);
