import assert from "node:assert/strict";
import { join } from "node:path";
import { diskUsage, diskUsageAsync } from "../../snapshotters/_usage.ts";
import * as sys from "../../sys/mod.ts";
import { tempDir } from "../sys/_helpers.ts";

/** GNU du's view of a tree: bytes of allocated blocks and inodes, each inode once. */
async function du(dir: string): Promise<{ size: number; inodes: number }> {
  const out = async (args: string[]) => {
    const r = await new Deno.Command("du", { args: [...args, dir], stdout: "piped" }).output();
    assert.ok(r.success, `du ${args.join(" ")} failed`);
    return Number(new TextDecoder().decode(r.stdout).split(/\s/)[0]);
  };
  return { size: await out(["-s", "-B1"]), inodes: await out(["-s", "--inodes"]) };
}

/**
 * The descriptors of this process open on something under `dir` (tests run in parallel in this
 * process, so only those can be told apart from other tests' descriptors).
 */
function fdsUnder(dir: string): string[] {
  const open: string[] = [];
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      const target = Deno.readLinkSync(`/proc/self/fd/${e.name}`);
      if (target === dir || target.startsWith(`${dir}/`)) open.push(target);
    } catch {
      // Closed meanwhile.
    }
  }
  return open;
}

/** A tree with nested directories, one directory larger than a slice, links and a sparse file. */
function makeTree(root: string): void {
  Deno.mkdirSync(join(root, "a/b/c"), { recursive: true });
  Deno.writeFileSync(join(root, "a/b/c/data"), new Uint8Array(300_000).fill(7));
  Deno.mkdirSync(join(root, "wide"));
  for (let i = 0; i < 5000; i++) Deno.writeTextFileSync(join(root, "wide", `f${i}`), "x");
  Deno.linkSync(join(root, "a/b/c/data"), join(root, "hardlink"));
  Deno.linkSync(join(root, "wide/f1"), join(root, "a/hardlink-in-a"));
  Deno.symlinkSync("a/b/c/data", join(root, "symlink"));
  Deno.symlinkSync("/", join(root, "a/to-root"));
  const fd = sys.open(join(root, "sparse"), sys.O_WRONLY | sys.O_CREAT | sys.O_CLOEXEC);
  sys.ftruncate(fd, 1 << 30);
  sys.pwrite(fd, new Uint8Array(4096).fill(1), 1 << 20);
  sys.close(fd);
}

Deno.test("disk usage counts what du counts: blocks and inodes, hardlinks once, symlinks not followed", async () => {
  using dir = tempDir();
  makeTree(dir.path);
  const expected = await du(dir.path);
  assert.ok(expected.inodes > 5000, `du saw ${expected.inodes} inodes`);
  assert.deepEqual(diskUsage(dir.path), expected);
  assert.deepEqual(await diskUsageAsync(dir.path), expected);
  assert.deepEqual(fdsUnder(dir.path), [], "no directory left open");
});

Deno.test("disk usage of a directory larger than a slice lets the event loop run inside it", async () => {
  using dir = tempDir();
  for (let i = 0; i < 6000; i++) Deno.writeTextFileSync(join(dir.path, `f${i}`), "x");
  let turns = 0;
  const timer = setInterval(() => turns++, 0);
  try {
    assert.equal((await diskUsageAsync(dir.path)).inodes, 6001);
  } finally {
    clearInterval(timer);
  }
  assert.ok(turns > 0, "the walk let the event loop run");
});

Deno.test("disk usage skips what is removed during the walk and leaves no directory open", async () => {
  using dir = tempDir();
  makeTree(dir.path);
  for (let d = 0; d < 4; d++) {
    Deno.mkdirSync(join(dir.path, `gone${d}`));
    for (let i = 0; i < 1500; i++) Deno.writeTextFileSync(join(dir.path, `gone${d}`, `f${i}`), "x");
  }
  const full = await du(dir.path);
  // All removed when the walk first yields, after its first slice (2048 of about 12,000
  // entries): the directory being listed then loses entries, and those still to be listed are
  // gone. A microtask queued now runs at the walk's first await, before its second slice.
  let removed = false;
  queueMicrotask(() => {
    for (let d = 0; d < 4; d++) Deno.removeSync(join(dir.path, `gone${d}`), { recursive: true });
    removed = true;
  });
  const usage = await diskUsageAsync(dir.path);
  assert.ok(removed, "the directories were removed during the walk");
  const after = await du(dir.path);
  assert.ok(
    usage.inodes < full.inodes && usage.inodes >= after.inodes,
    `${usage.inodes} inodes, between ${after.inodes} and ${full.inodes}`,
  );
  assert.deepEqual(fdsUnder(dir.path), [], "no directory left open");
  assert.throws(() => diskUsage(join(dir.path, "missing")), (err) => sys.isErrno(err, "ENOENT"));
});
