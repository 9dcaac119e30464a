// Measures readTar over a large tar in the page cache against `tar -tf`.
//
//   deno run -A bench/tar_read_bench.ts [archive.tar]
//
// Without an argument it builds /tmp/strata-bench-usr.tar from /usr/include and /usr/bin once.
// Every header and every data byte is consumed; nothing is written. Prints the median of 3 runs.

import { createReadStream } from "node:fs";
import { readTar } from "../diff/tar/mod.ts";

const path = Deno.args[0] ?? "/tmp/strata-bench-usr.tar";

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}

if (!(await exists(path))) {
  console.log(`Building ${path} from /usr/include and /usr/bin ...`);
  const r = await new Deno.Command("tar", {
    args: ["--format=gnu", "-cf", path, "-C", "/", "usr/include", "usr/bin"],
    stderr: "null",
  }).output();
  if (!(await exists(path))) throw new Error(`Cannot build "${path}": tar exited with ${r.code}`);
}
const size = (await Deno.stat(path)).size;

async function* readInto(chunkSize: number): AsyncGenerator<Uint8Array> {
  using file = await Deno.open(path);
  const buf = new Uint8Array(chunkSize);
  for (;;) {
    const n = await file.read(buf);
    if (n === null) return;
    // The buffer is reused: readTar keeps nothing from a chunk once it asks for the next one.
    yield buf.subarray(0, n);
  }
}

async function consume(source: AsyncIterable<Uint8Array>): Promise<number> {
  let entries = 0;
  let bytes = 0;
  for await (const e of readTar(source)) {
    entries++;
    for await (const c of e.body) bytes += c.length;
  }
  return entries + bytes * 0;
}

const modes: [string, () => Promise<number>][] = [
  ["readTar, FsFile.readable (64 KiB chunks)", async () => {
    const f = await Deno.open(path);
    return await consume(f.readable);
  }],
  ["readTar, FsFile.read into a reused 1 MiB buffer", () => consume(readInto(1 << 20))],
  [
    "readTar, node:fs createReadStream 1 MiB",
    () => consume(createReadStream(path, { highWaterMark: 1 << 20 })),
  ],
  ["tar -tf (GNU tar, native)", async () => {
    const r = await new Deno.Command("tar", { args: ["-tf", path], stdout: "null" }).output();
    return r.code === 0 ? -1 : NaN;
  }],
];

console.log(`${path}: ${(size / 1e6).toFixed(1)} MB`);
const times = new Map<string, number[]>(modes.map(([n]) => [n, []]));
let entries = 0;
for (let round = 0; round < 3; round++) {
  for (const [name, fn] of modes) {
    const t0 = performance.now();
    const n = await fn();
    if (n > 0) entries = n;
    times.get(name)!.push((performance.now() - t0) / 1000);
  }
}
console.log(`${entries} entries`);
for (const [name, ts] of times) {
  const median = ts.sort((a, b) => a - b)[1]!;
  console.log(
    `${name.padEnd(50)} ${median.toFixed(3)} s  ${(size / 1e6 / median).toFixed(0)} MB/s`,
  );
}
