// Nanoseconds per call of the sys/ FFI calls a layer applier makes per file, next to the Deno
// built-ins that do (less of) the same work.
//
//   deno run -A bench/sys_bench.ts [iterations]
//
// Every call hits the same small file in a temp dir (so the dentry is cached); prints the median
// of 5 rounds per call.

import * as sys from "../sys/mod.ts";

const N = Number(Deno.args[0] ?? 200_000);
const dir = Deno.makeTempDirSync({ prefix: "strata-sys-bench-" });
const file = `${dir}/file`;
const link = `${dir}/link`;
Deno.writeTextFileSync(file, "x");
Deno.symlinkSync("file", link);
const fd = sys.open(file, sys.O_RDONLY | sys.O_CLOEXEC);
const times: [sys.Timespec, sys.Timespec] = [
  { sec: 1700000000, nsec: 1 },
  { sec: 1700000000, nsec: 123456789 },
];
const value = new Uint8Array([121]);

const cases: [string, () => void][] = [
  ["sys.lstat (statx)", () => sys.lstat(file)],
  ["sys.fstat (statx)", () => sys.fstat(fd)],
  ["Deno.lstatSync", () => Deno.lstatSync(file)],
  ["sys.fchownat NOFOLLOW", () => sys.fchownat(sys.AT_FDCWD, link, 0, 0, sys.AT_SYMLINK_NOFOLLOW)],
  ["Deno.chownSync", () => Deno.chownSync(file, 0, 0)],
  ["sys.fchmodat", () => sys.fchmodat(sys.AT_FDCWD, file, 0o644, 0)],
  ["Deno.chmodSync", () => Deno.chmodSync(file, 0o644)],
  [
    "sys.utimensat NOFOLLOW",
    () => sys.utimensat(sys.AT_FDCWD, link, times, sys.AT_SYMLINK_NOFOLLOW),
  ],
  ["Deno.utimeSync", () => Deno.utimeSync(file, 1700000000, 1700000000)],
  ["sys.lsetxattr", () => sys.lsetxattr(file, "user.bench", value)],
  ["sys.lgetxattr", () => sys.lgetxattr(file, "user.bench")],
  ["sys.lstat ENOENT (throws)", () => {
    try {
      sys.lstat(`${dir}/missing`);
    } catch { /* expected */ }
  }],
  ["Deno.lstatSync NotFound (throws)", () => {
    try {
      Deno.lstatSync(`${dir}/missing`);
    } catch { /* expected */ }
  }],
];

console.log(`${N} iterations per round, median of 5 rounds`);
for (const [name, fn] of cases) {
  for (let i = 0; i < 10_000; i++) fn(); // warm up (JIT, fast calls)
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (let i = 0; i < N; i++) fn();
    rounds.push(((performance.now() - t0) * 1e6) / N);
  }
  rounds.sort((a, b) => a - b);
  console.log(`${name.padEnd(34)} ${rounds[2]!.toFixed(0).padStart(6)} ns/call`);
}
sys.close(fd);
Deno.removeSync(dir, { recursive: true });
