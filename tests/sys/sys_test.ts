import assert from "node:assert/strict";
import { InvalidArgument } from "../../errors.ts";
import * as sys from "../../sys/mod.ts";
import { CHILD, runChild, str, tempDir, text } from "./_helpers.ts";

const { AT_FDCWD } = sys;

function sysErr(code: string, call?: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof sys.SysError, `expected a SysError, got ${err}`);
    assert.ok(sys.isErrno(err, code), `expected ${code}, got ${err.code}: ${err.message}`);
    if (call !== undefined) assert.equal(err.call, call);
    return true;
  };
}

// Tests run in parallel workers that share one fd table: closing an fd twice, or using a
// closed one, could hit another test's file. This number is above any fd limit.
const NEVER_OPEN_FD = 2 ** 30;

Deno.test("open(), write(), lseek(), read(), pread(), pwrite() and ftruncate() round-trip bytes", () => {
  using dir = tempDir();
  const path = `${dir.path}/f`;
  const fd = sys.open(path, sys.O_RDWR | sys.O_CREAT | sys.O_EXCL | sys.O_CLOEXEC, 0o600);
  try {
    assert.equal(sys.write(fd, text("hello world")), 11);
    assert.equal(sys.lseek(fd, 0, sys.SEEK_CUR), 11);
    assert.equal(sys.lseek(fd, 0, sys.SEEK_SET), 0);
    const buf = new Uint8Array(64);
    assert.equal(sys.read(fd, buf), 11);
    assert.equal(str(buf.subarray(0, 11)), "hello world");
    assert.equal(sys.read(fd, buf), 0);
    // A subarray is read into in place, at its own offset.
    const big = new Uint8Array(16);
    assert.equal(sys.pread(fd, big.subarray(4, 9), 6), 5);
    assert.equal(str(big.subarray(4, 9)), "world");
    assert.deepEqual([...big.subarray(0, 4)], [0, 0, 0, 0]);
    assert.equal(sys.pwrite(fd, text("XY"), 100), 2);
    assert.equal(sys.lseek(fd, 0, sys.SEEK_END), 102);
    assert.equal(sys.lseek(fd, 0, sys.SEEK_CUR), 102);
    sys.ftruncate(fd, 5);
    assert.equal(sys.fstat(fd).size, 5);
    sys.writeAll(fd, new Uint8Array(100_000).fill(7));
    assert.equal(Deno.statSync(path).size, 102 + 100_000);
  } finally {
    sys.close(fd);
  }
  assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
  assert.throws(() => sys.close(NEVER_OPEN_FD), sysErr("EBADF", "close"));
});

Deno.test("openat() resolves relative to a directory fd and node:fs fds work with sys calls", async () => {
  using dir = tempDir();
  const { closeSync, openSync } = await import("node:fs");
  Deno.writeTextFileSync(`${dir.path}/a`, "from deno");
  const dirfd = sys.open(dir.path, sys.O_RDONLY | sys.O_DIRECTORY | sys.O_CLOEXEC);
  try {
    const fd = sys.openat(dirfd, "a", sys.O_RDONLY);
    const buf = new Uint8Array(4);
    assert.equal(sys.pread(fd, buf, 0), 4);
    assert.equal(str(buf), "from");
    sys.close(fd);
    const nodeFd = openSync(`${dir.path}/a`, "r");
    assert.equal(sys.pread(nodeFd, buf, 5), 4);
    assert.equal(str(buf), "deno");
    assert.equal(sys.fstat(nodeFd).size, 9);
    closeSync(nodeFd);
  } finally {
    sys.close(dirfd);
  }
});

Deno.test("mkdirat(), mknodat() create directories, FIFOs and devices Deno.lstat recognises", () => {
  using dir = tempDir();
  sys.mkdirat(AT_FDCWD, `${dir.path}/d`, 0o751);
  const d = Deno.lstatSync(`${dir.path}/d`);
  assert.ok(d.isDirectory);
  sys.mknodat(AT_FDCWD, `${dir.path}/fifo`, sys.S_IFIFO | 0o640, 0);
  sys.mknodat(AT_FDCWD, `${dir.path}/null`, sys.S_IFCHR | 0o666, sys.makedev(1, 3));
  sys.mknodat(AT_FDCWD, `${dir.path}/loop0`, sys.S_IFBLK | 0o660, sys.makedev(7, 0));
  const fifo = Deno.lstatSync(`${dir.path}/fifo`);
  assert.ok(fifo.isFifo);
  const chr = Deno.lstatSync(`${dir.path}/null`);
  assert.ok(chr.isCharDevice);
  assert.equal(chr.rdev, 259);
  assert.equal(chr.rdev, Deno.lstatSync("/dev/null").rdev);
  const blk = Deno.lstatSync(`${dir.path}/loop0`);
  assert.ok(blk.isBlockDevice);
  assert.equal(blk.rdev, sys.makedev(7, 0));
  const st = sys.lstat(`${dir.path}/loop0`);
  assert.equal(st.mode & sys.S_IFMT, sys.S_IFBLK);
  assert.equal(sys.major(st.rdev), 7);
  assert.equal(sys.minor(st.rdev), 0);
  assert.equal(sys.lstat(`${dir.path}/null`).rdev, 259);
  assert.throws(() => sys.mkdirat(AT_FDCWD, `${dir.path}/d`, 0o755), sysErr("EEXIST", "mkdirat"));
});

Deno.test("symlinkat(), readlinkat(), linkat() and unlinkat() manage links", () => {
  using dir = tempDir();
  const p = dir.path;
  Deno.writeTextFileSync(`${p}/target`, "t");
  sys.symlinkat("target", AT_FDCWD, `${p}/link`);
  sys.symlinkat("../ünïcode/…", AT_FDCWD, `${p}/odd`);
  assert.equal(sys.readlinkat(AT_FDCWD, `${p}/link`), "target");
  assert.equal(sys.readlinkat(AT_FDCWD, `${p}/odd`), "../ünïcode/…");
  const long = "x/".repeat(2000);
  sys.symlinkat(long, AT_FDCWD, `${p}/long`);
  assert.equal(sys.readlinkat(AT_FDCWD, `${p}/long`), long);
  const dirfd = sys.open(p, sys.O_RDONLY | sys.O_DIRECTORY);
  try {
    assert.equal(sys.readlinkat(dirfd, "link"), "target");
    sys.linkat(dirfd, "target", dirfd, "hard", 0);
    assert.equal(Deno.lstatSync(`${p}/target`).nlink, 2);
    // Without AT_SYMLINK_FOLLOW the link itself is hard-linked; with it, the target.
    sys.linkat(dirfd, "link", dirfd, "link2", 0);
    assert.ok(Deno.lstatSync(`${p}/link2`).isSymlink);
    sys.linkat(dirfd, "link", dirfd, "target3", sys.AT_SYMLINK_FOLLOW);
    assert.equal(Deno.lstatSync(`${p}/target`).nlink, 3);
    assert.throws(() => sys.readlinkat(dirfd, "target"), sysErr("EINVAL", "readlinkat"));
    sys.unlinkat(dirfd, "hard", 0);
    assert.equal(Deno.lstatSync(`${p}/target`).nlink, 2);
    sys.mkdirat(dirfd, "sub", 0o755);
    assert.throws(() => sys.unlinkat(dirfd, "sub", 0), sysErr("EISDIR", "unlinkat"));
    sys.unlinkat(dirfd, "sub", sys.AT_REMOVEDIR);
    assert.throws(() => Deno.lstatSync(`${p}/sub`), Deno.errors.NotFound);
    assert.throws(() => sys.unlinkat(dirfd, "sub", 0), sysErr("ENOENT"));
    assert.throws(
      () => sys.linkat(dirfd, "target", dirfd, "link", 0),
      (err: unknown) => {
        assert.ok(sys.isErrno(err, "EEXIST"));
        assert.equal(err.path, "target");
        assert.equal(err.dest, "link");
        assert.match(err.message, /^EEXIST: linkat "target" "link": File exists$/);
        return true;
      },
    );
  } finally {
    sys.close(dirfd);
  }
});

Deno.test("renameat2() renames, refuses to replace with RENAME_NOREPLACE and swaps with RENAME_EXCHANGE", () => {
  using dir = tempDir();
  const p = dir.path;
  Deno.writeTextFileSync(`${p}/a`, "A");
  Deno.writeTextFileSync(`${p}/b`, "B");
  assert.throws(
    () => sys.renameat2(AT_FDCWD, `${p}/a`, AT_FDCWD, `${p}/b`, sys.RENAME_NOREPLACE),
    sysErr("EEXIST", "renameat2"),
  );
  sys.renameat2(AT_FDCWD, `${p}/a`, AT_FDCWD, `${p}/b`, sys.RENAME_EXCHANGE);
  assert.equal(Deno.readTextFileSync(`${p}/a`), "B");
  assert.equal(Deno.readTextFileSync(`${p}/b`), "A");
  sys.renameat2(AT_FDCWD, `${p}/a`, AT_FDCWD, `${p}/c`, sys.RENAME_NOREPLACE);
  assert.equal(Deno.readTextFileSync(`${p}/c`), "B");
  sys.renameat2(AT_FDCWD, `${p}/c`, AT_FDCWD, `${p}/b`, 0);
  assert.equal(Deno.readTextFileSync(`${p}/b`), "B");
  assert.throws(
    () => sys.renameat2(AT_FDCWD, `${p}/a`, AT_FDCWD, `${p}/d`, sys.RENAME_EXCHANGE),
    sysErr("ENOENT"),
  );
  // RENAME_WHITEOUT leaves an overlay whiteout, a 0:0 character device (root only).
  sys.renameat2(AT_FDCWD, `${p}/b`, AT_FDCWD, `${p}/e`, sys.RENAME_WHITEOUT);
  const wh = sys.lstat(`${p}/b`);
  assert.equal(wh.mode & sys.S_IFMT, sys.S_IFCHR);
  assert.equal(wh.rdev, 0);
});

Deno.test("fchownat() with AT_SYMLINK_NOFOLLOW changes the link, not the target; fchown() changes an fd", () => {
  using dir = tempDir();
  const p = dir.path;
  Deno.writeTextFileSync(`${p}/target`, "t");
  sys.symlinkat("target", AT_FDCWD, `${p}/link`);
  sys.fchownat(AT_FDCWD, `${p}/link`, 1234, 5678, sys.AT_SYMLINK_NOFOLLOW);
  const link = sys.lstat(`${p}/link`);
  assert.deepEqual([link.uid, link.gid], [1234, 5678]);
  const target = sys.lstat(`${p}/target`);
  assert.deepEqual([target.uid, target.gid], [0, 0]);
  sys.fchownat(AT_FDCWD, `${p}/link`, 42, -1, 0);
  assert.equal(sys.lstat(`${p}/target`).uid, 42);
  assert.equal(sys.lstat(`${p}/target`).gid, 0);
  const fd = sys.open(`${p}/target`, sys.O_RDONLY);
  try {
    sys.fchown(fd, -1, 99);
    assert.deepEqual([sys.fstat(fd).uid, sys.fstat(fd).gid], [42, 99]);
  } finally {
    sys.close(fd);
  }
});

Deno.test("fchmodat() and fchmod() set mode bits; a symlink with AT_SYMLINK_NOFOLLOW gives EOPNOTSUPP", () => {
  using dir = tempDir();
  const p = dir.path;
  Deno.writeTextFileSync(`${p}/f`, "x");
  sys.fchmodat(AT_FDCWD, `${p}/f`, 0o4751, 0);
  assert.equal(sys.lstat(`${p}/f`).mode & 0o7777, 0o4751);
  const fd = sys.open(`${p}/f`, sys.O_RDONLY);
  try {
    sys.fchmod(fd, 0o1600);
    assert.equal(sys.fstat(fd).mode, sys.S_IFREG | 0o1600);
  } finally {
    sys.close(fd);
  }
  sys.symlinkat("f", AT_FDCWD, `${p}/link`);
  assert.throws(
    () => sys.fchmodat(AT_FDCWD, `${p}/link`, 0o700, sys.AT_SYMLINK_NOFOLLOW),
    sysErr("ENOTSUP", "fchmodat"),
  );
});

Deno.test("utimensat() and futimens() set nanosecond times, on a symlink itself with AT_SYMLINK_NOFOLLOW", () => {
  using dir = tempDir();
  const p = dir.path;
  Deno.writeTextFileSync(`${p}/f`, "x");
  sys.utimensat(AT_FDCWD, `${p}/f`, [
    { sec: 1600000000, nsec: 1 },
    { sec: 1700000000, nsec: 123456789 },
  ], 0);
  let st = sys.lstat(`${p}/f`);
  assert.deepEqual(st.mtime, { sec: 1700000000, nsec: 123456789 });
  assert.deepEqual(st.atime, { sec: 1600000000, nsec: 1 });
  // UTIME_OMIT keeps a time; negative seconds (before 1970) work too.
  sys.utimensat(AT_FDCWD, `${p}/f`, [
    { sec: -86400, nsec: 5 },
    { sec: 0, nsec: sys.UTIME_OMIT },
  ], 0);
  st = sys.lstat(`${p}/f`);
  assert.deepEqual(st.atime, { sec: -86400, nsec: 5 });
  assert.deepEqual(st.mtime, { sec: 1700000000, nsec: 123456789 });

  sys.symlinkat("f", AT_FDCWD, `${p}/link`);
  sys.utimensat(AT_FDCWD, `${p}/link`, [
    { sec: 1500000000, nsec: 0 },
    { sec: 1500000000, nsec: 999999999 },
  ], sys.AT_SYMLINK_NOFOLLOW);
  assert.deepEqual(sys.lstat(`${p}/link`).mtime, { sec: 1500000000, nsec: 999999999 });
  assert.deepEqual(sys.lstat(`${p}/f`).mtime, { sec: 1700000000, nsec: 123456789 });
  // Large times beyond 2^32 seconds.
  sys.utimensat(AT_FDCWD, `${p}/f`, [
    { sec: 5000000000, nsec: 0 },
    { sec: 5000000000, nsec: 7 },
  ], 0);
  assert.deepEqual(sys.lstat(`${p}/f`).mtime, { sec: 5000000000, nsec: 7 });

  const fd = sys.open(`${p}/f`, sys.O_RDONLY);
  try {
    sys.futimens(fd, [{ sec: 1, nsec: 2 }, { sec: 3, nsec: 4 }]);
    assert.deepEqual(sys.fstat(fd).mtime, { sec: 3, nsec: 4 });
    const before = Math.floor(Date.now() / 1000) - 1;
    sys.futimens(fd, null);
    assert.ok(sys.fstat(fd).mtime.sec >= before);
  } finally {
    sys.close(fd);
  }
  sys.utimensat(AT_FDCWD, `${p}/f`, null, 0);
  assert.ok(sys.lstat(`${p}/f`).mtime.sec > 1700000000);
  assert.throws(
    () => sys.utimensat(AT_FDCWD, `${p}/f`, [{ sec: 1.5, nsec: 0 }, { sec: 0, nsec: 0 }], 0),
    InvalidArgument,
  );
});

Deno.test("statx(), lstat(), stat() and fstat() agree with Deno.lstat", () => {
  using dir = tempDir();
  const p = dir.path;
  Deno.writeTextFileSync(`${p}/f`, "hello");
  Deno.linkSync(`${p}/f`, `${p}/f2`);
  Deno.symlinkSync("f", `${p}/link`);
  sys.mknodat(AT_FDCWD, `${p}/null`, sys.S_IFCHR | 0o600, sys.makedev(1, 3));
  for (const name of ["f", "link", "null", "."]) {
    const path = `${p}/${name}`;
    const st = sys.lstat(path);
    const info = Deno.lstatSync(path);
    assert.equal(st.mode, info.mode, name);
    assert.equal(st.uid, info.uid, name);
    assert.equal(st.gid, info.gid, name);
    assert.equal(st.size, info.size, name);
    assert.equal(st.nlink, info.nlink, name);
    assert.equal(st.ino, BigInt(info.ino!), name);
    assert.equal(st.rdev, info.rdev, name);
    assert.equal(st.dev, info.dev, name);
    assert.equal(st.blocks, info.blocks, name);
    assert.equal(Math.floor(st.mtime.sec * 1000 + st.mtime.nsec / 1e6), info.mtime!.getTime());
  }
  assert.equal(sys.lstat(`${p}/f`).nlink, 2);
  assert.equal(sys.lstat(`${p}/link`).mode & sys.S_IFMT, sys.S_IFLNK);
  assert.equal(sys.stat(`${p}/link`).mode & sys.S_IFMT, sys.S_IFREG);
  assert.equal(sys.statx(AT_FDCWD, `${p}/link`, 0).ino, sys.lstat(`${p}/f`).ino);
  const fd = sys.open(`${p}/link`, sys.O_PATH | sys.O_NOFOLLOW);
  try {
    assert.equal(sys.fstat(fd).mode & sys.S_IFMT, sys.S_IFLNK);
    assert.equal(sys.statx(fd, "", sys.AT_EMPTY_PATH).ino, sys.lstat(`${p}/link`).ino);
  } finally {
    sys.close(fd);
  }
  assert.throws(() => sys.lstat(`${p}/missing`), sysErr("ENOENT", "statx"));
  assert.throws(() => sys.lstat(`${p}/f/x`), sysErr("ENOTDIR", "statx"));
});

Deno.test("statxIfExists() is statx() that answers null for a missing path and throws the rest", () => {
  using dir = tempDir();
  const p = dir.path;
  Deno.writeTextFileSync(`${p}/f`, "hello");
  Deno.symlinkSync("missing", `${p}/dangling`);
  const fd = sys.open(p, sys.O_RDONLY | sys.O_DIRECTORY);
  try {
    assert.deepEqual(
      sys.statxIfExists(fd, "f", sys.AT_SYMLINK_NOFOLLOW),
      sys.statx(fd, "f", sys.AT_SYMLINK_NOFOLLOW),
    );
    assert.equal(sys.statxIfExists(fd, "missing", sys.AT_SYMLINK_NOFOLLOW), null);
    // A dangling symlink exists itself; followed, its target does not.
    assert.equal(
      sys.statxIfExists(fd, "dangling", sys.AT_SYMLINK_NOFOLLOW)!.mode & sys.S_IFMT,
      sys.S_IFLNK,
    );
    assert.equal(sys.statxIfExists(fd, "dangling", 0), null);
    assert.equal(sys.statxIfExists(AT_FDCWD, `${p}/no/such/dir`, 0), null);
    // Other failures still throw.
    assert.throws(() => sys.statxIfExists(fd, "f/x", 0), sysErr("ENOTDIR", "statx"));
    assert.throws(() => sys.statxIfExists(-1, "f", 0), sysErr("EBADF", "statx"));
    assert.throws(() => sys.statxIfExists(fd, "a\0b", 0), InvalidArgument);
  } finally {
    sys.close(fd);
  }
});

Deno.test("SysError messages name the errno, call and path; isErrno() matches names and aliases", () => {
  using dir = tempDir();
  const path = `${dir.path}/missing`;
  let caught: unknown;
  try {
    sys.open(path, sys.O_RDONLY);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof sys.SysError);
  assert.equal(caught.name, "SysError");
  assert.equal(caught.message, `ENOENT: open "${path}": No such file or directory`);
  assert.equal(caught.errno, 2);
  assert.equal(caught.code, "ENOENT");
  assert.equal(caught.call, "open");
  assert.equal(caught.path, path);
  assert.ok(sys.isErrno(caught, "EEXIST", "ENOENT"));
  assert.ok(!sys.isErrno(caught, "EEXIST"));
  assert.ok(!sys.isErrno(new Error("ENOENT"), "ENOENT"));
  const again = new sys.SysError(11, "flock", { fd: 3 });
  assert.equal(again.message, "EAGAIN: flock fd 3: Resource temporarily unavailable");
  assert.ok(sys.isErrno(again, "EWOULDBLOCK"));
  assert.ok(sys.isErrno(new sys.SysError(95, "x"), "ENOTSUP"));
  assert.equal(new sys.SysError(4095, "x").code, "ERRNO_4095");
  assert.throws(() => sys.open("a\0b", sys.O_RDONLY), InvalidArgument);
});

Deno.test("errnoName() and errnoNumber() match the kernel headers", () => {
  assert.equal(sys.errnoName(2), "ENOENT");
  assert.equal(sys.errnoName(95), "EOPNOTSUPP");
  assert.equal(sys.errnoNumber("ENOTSUP"), 95);
  assert.equal(sys.errnoNumber("EWOULDBLOCK"), 11);
  assert.equal(sys.errnoNumber("ENOPE"), undefined);
  assert.equal(sys.errnoName(0), "ERRNO_0");
  assert.equal(sys.errnoName(41), "ERRNO_41");
  let headers = "";
  for (const f of ["/usr/include/asm-generic/errno-base.h", "/usr/include/asm-generic/errno.h"]) {
    try {
      headers += Deno.readTextFileSync(f);
    } catch {
      return; // no kernel headers here: the fixed checks above have to do
    }
  }
  let count = 0;
  for (const m of headers.matchAll(/^#define\s+(E[A-Z0-9]+)\s+(\d+)/gm)) {
    assert.equal(sys.errnoName(Number(m[2])), m[1]);
    assert.equal(sys.errnoNumber(m[1]!), Number(m[2]));
    count++;
  }
  assert.ok(count > 120);
});

Deno.test("calls fail with ENOENT, EEXIST and ENOTDIR where the kernel says so", () => {
  using dir = tempDir();
  const p = dir.path;
  Deno.writeTextFileSync(`${p}/file`, "x");
  assert.throws(() => sys.open(`${p}/nope`, sys.O_RDONLY), sysErr("ENOENT", "open"));
  assert.throws(
    () => sys.open(`${p}/file`, sys.O_WRONLY | sys.O_CREAT | sys.O_EXCL),
    sysErr("EEXIST", "open"),
  );
  assert.throws(() => sys.openat(AT_FDCWD, `${p}/file/x`, sys.O_RDONLY), sysErr("ENOTDIR"));
  assert.throws(() => sys.mkdirat(AT_FDCWD, `${p}/file/x`, 0o755), sysErr("ENOTDIR"));
  assert.throws(() => sys.open(`${p}/file`, sys.O_RDONLY | sys.O_DIRECTORY), sysErr("ENOTDIR"));
  Deno.symlinkSync("file", `${p}/link`);
  assert.throws(() => sys.open(`${p}/link`, sys.O_RDONLY | sys.O_NOFOLLOW), sysErr("ELOOP"));
});

Deno.test("each thread reports its own errno: failures on a worker and on this thread at once", async () => {
  using dir = tempDir();
  const p = dir.path;
  Deno.writeTextFileSync(`${p}/file`, "x");
  const rounds = 20000;
  const worker = new Worker(new URL("./_errno_worker.ts", import.meta.url), { type: "module" });
  try {
    const report = new Promise<Record<string, number>>((resolve, reject) => {
      worker.onmessage = (e) => resolve(e.data);
      worker.onerror = (e) => reject(new Error(`The errno worker failed: ${e.message}`));
    });
    worker.postMessage({ dir: p, rounds });
    // Meanwhile this thread fails with other codes: EEXIST and EBADF.
    const here = new Map<string, number>();
    for (let i = 0; i < rounds; i++) {
      for (
        const call of [
          () => sys.mkdirat(AT_FDCWD, `${p}/file`, 0o755),
          () => sys.fsync(NEVER_OPEN_FD),
        ]
      ) {
        try {
          call();
        } catch (err) {
          const code = err instanceof sys.SysError ? err.code : String(err);
          here.set(code, (here.get(code) ?? 0) + 1);
        }
      }
    }
    assert.deepEqual(Object.fromEntries(here), { EEXIST: rounds, EBADF: rounds });
    assert.deepEqual(await report, { ENOENT: rounds, ENOTDIR: rounds });
  } finally {
    worker.terminate();
  }
});

Deno.test("mkdirat() as an unprivileged uid fails with EACCES", {
  ignore: !Deno.build.os.startsWith("linux"),
}, () => {
  const setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].find((f) => {
    try {
      return Deno.statSync(f).isFile;
    } catch {
      return false;
    }
  });
  if (setpriv === undefined || Deno.uid() !== 0) {
    console.warn("skipping: needs root and setpriv");
    return;
  }
  using dir = tempDir(); // 0700, owned by root
  using cache = tempDir();
  Deno.chmodSync(cache.path, 0o777);
  const res = runChild(setpriv, [
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    Deno.execPath(),
    "run",
    "--no-config",
    "--allow-ffi",
    "--allow-read",
    CHILD,
    "mkdir",
    `${dir.path}/sub`,
  ], { DENO_DIR: cache.path, HOME: cache.path, NO_COLOR: "1" });
  assert.equal(res.code, 1, res.stderr);
  assert.equal(res.out.name, "SysError");
  assert.equal(res.out.code, "EACCES");
  assert.equal(res.out.message, `EACCES: mkdirat "${dir.path}/sub": Permission denied`);
});

Deno.test("the first call without --allow-ffi throws NotImplemented naming --allow-ffi", () => {
  const res = runChild(Deno.execPath(), [
    "run",
    "--no-config",
    "--allow-read",
    CHILD,
    "no-ffi",
    "/tmp",
  ], { NO_COLOR: "1" });
  assert.notEqual(res.code, 0);
  assert.equal(res.out.name, "NotImplemented");
  assert.match(res.out.message ?? "", /--allow-ffi/);
  assert.match(res.out.message ?? "", /^Cannot call libc: /);
});

Deno.test("syncfs(), fsync() and fdatasync() succeed on a file and fail with EBADF on a bad fd", () => {
  using dir = tempDir();
  const fd = sys.open(`${dir.path}/f`, sys.O_WRONLY | sys.O_CREAT, 0o644);
  sys.writeAll(fd, text("data"));
  assert.equal(sys.fsync(fd), undefined);
  assert.equal(sys.fdatasync(fd), undefined);
  assert.equal(sys.syncfs(fd), undefined);
  sys.close(fd);
  assert.throws(() => sys.fsync(NEVER_OPEN_FD), sysErr("EBADF", "fsync"));
  assert.throws(() => sys.fdatasync(NEVER_OPEN_FD), sysErr("EBADF", "fdatasync"));
  assert.throws(() => sys.syncfs(NEVER_OPEN_FD), sysErr("EBADF", "syncfs"));
});

Deno.test("copyFileRange() copies bytes with and without explicit offsets", () => {
  using dir = tempDir();
  const data = new Uint8Array(200_000);
  crypto.getRandomValues(data.subarray(0, 65536));
  data.copyWithin(65536, 0, 134464);
  Deno.writeFileSync(`${dir.path}/src`, data);
  const src = sys.open(`${dir.path}/src`, sys.O_RDONLY);
  const dst = sys.open(`${dir.path}/dst`, sys.O_WRONLY | sys.O_CREAT, 0o644);
  try {
    let copied = 0;
    for (;;) {
      const n = sys.copyFileRange(src, null, dst, null, 1 << 20);
      if (n === 0) break;
      copied += n;
    }
    assert.equal(copied, data.length);
    assert.deepEqual(Deno.readFileSync(`${dir.path}/dst`), data);
    assert.equal(sys.copyFileRange(src, 10, dst, 3, 5), 5);
    const out = Deno.readFileSync(`${dir.path}/dst`);
    assert.deepEqual(out.subarray(3, 8), data.subarray(10, 15));
    assert.equal(sys.lseek(src, 0, sys.SEEK_CUR), data.length);
  } finally {
    sys.close(src);
    sys.close(dst);
  }
});

Deno.test("lseek() with SEEK_DATA and SEEK_HOLE finds the data of a sparse file", () => {
  using dir = tempDir();
  const MiB = 1 << 20;
  const fd = sys.open(`${dir.path}/sparse`, sys.O_RDWR | sys.O_CREAT, 0o644);
  try {
    sys.ftruncate(fd, 8 * MiB);
    sys.pwrite(fd, new Uint8Array(4096).fill(0xab), 4 * MiB);
    assert.equal(sys.lseek(fd, 0, sys.SEEK_DATA), 4 * MiB);
    const hole = sys.lseek(fd, 4 * MiB, sys.SEEK_HOLE);
    assert.ok(hole >= 4 * MiB + 4096 && hole <= 8 * MiB, `hole at ${hole}`);
    assert.equal(sys.lseek(fd, 0, sys.SEEK_HOLE), 0);
    assert.throws(() => sys.lseek(fd, 6 * MiB, sys.SEEK_DATA), sysErr("ENXIO", "lseek"));
    assert.throws(() => sys.lseek(fd, 9 * MiB, sys.SEEK_HOLE), sysErr("ENXIO"));
    const buf = new Uint8Array(2);
    sys.pread(fd, buf, 4 * MiB + 4095);
    assert.deepEqual([...buf], [0xab, 0]);
    assert.ok(sys.fstat(fd).blocks < 8 * MiB / 512);
  } finally {
    sys.close(fd);
  }
});

Deno.test("flock() with LOCK_EX|LOCK_NB fails with EWOULDBLOCK while another fd holds the lock", () => {
  using dir = tempDir();
  Deno.writeTextFileSync(`${dir.path}/lock`, "");
  const a = sys.open(`${dir.path}/lock`, sys.O_RDONLY);
  const b = sys.open(`${dir.path}/lock`, sys.O_RDONLY);
  try {
    sys.flock(a, sys.LOCK_EX | sys.LOCK_NB);
    assert.throws(() => sys.flock(b, sys.LOCK_EX | sys.LOCK_NB), sysErr("EWOULDBLOCK", "flock"));
    assert.throws(() => sys.flock(b, sys.LOCK_SH | sys.LOCK_NB), sysErr("EAGAIN"));
    sys.flock(a, sys.LOCK_UN);
    sys.flock(b, sys.LOCK_SH | sys.LOCK_NB);
    sys.flock(a, sys.LOCK_SH | sys.LOCK_NB);
  } finally {
    sys.close(a);
    sys.close(b);
  }
});

Deno.test("makedev(), major() and minor() round-trip glibc's encoding", () => {
  assert.equal(sys.makedev(1, 3), 259);
  assert.equal(sys.makedev(7, 0), 1792);
  assert.equal(sys.makedev(0, 0), 0);
  assert.equal(sys.makedev(4095, 1048575), 0xffffffff);
  assert.equal(sys.makedev(0, 256), 0x100000);
  assert.equal(sys.makedev(4096, 0), 2 ** 44);
  for (
    const [ma, mi] of [[4095, 1048575], [1, 3], [259, 65536], [4096, 1], [70000, 0xffffffff], [
      0,
      0xabcdef,
    ]]
  ) {
    const dev = sys.makedev(ma!, mi!);
    assert.equal(sys.major(dev), ma, `${ma}:${mi}`);
    assert.equal(sys.minor(dev), mi, `${ma}:${mi}`);
  }
  assert.throws(() => sys.makedev(-1, 0), InvalidArgument);
  assert.throws(() => sys.makedev(0xffffffff, 0), InvalidArgument);
});

Deno.test("readDirFd() lists entries with their d_type, without . and .., from the start each time", () => {
  using dir = tempDir();
  const p = dir.path;
  Deno.writeTextFileSync(`${p}/file`, "x");
  Deno.mkdirSync(`${p}/dir`);
  Deno.symlinkSync("file", `${p}/link`);
  sys.mknodat(AT_FDCWD, `${p}/fifo`, sys.S_IFIFO | 0o644, 0);
  sys.mknodat(AT_FDCWD, `${p}/chr`, sys.S_IFCHR | 0o644, sys.makedev(1, 3));
  sys.mknodat(AT_FDCWD, `${p}/blk`, sys.S_IFBLK | 0o644, sys.makedev(7, 0));
  sys.mknodat(AT_FDCWD, `${p}/sock`, sys.S_IFSOCK | 0o644, 0);
  Deno.writeTextFileSync(`${p}/..dots`, "");
  Deno.writeTextFileSync(`${p}/ünï`, "");
  for (let i = 0; i < 2000; i++) Deno.writeTextFileSync(`${p}/many-${i}`, "");
  const fd = sys.open(p, sys.O_RDONLY | sys.O_DIRECTORY);
  try {
    for (let round = 0; round < 2; round++) {
      const entries = sys.readDirFd(fd);
      assert.equal(entries.length, 2009);
      const types = Object.fromEntries(
        entries.filter((e) => !e.name.startsWith("many-")).map((e) => [e.name, e.type]),
      );
      assert.deepEqual(types, {
        "file": "file",
        "dir": "dir",
        "link": "symlink",
        "fifo": "fifo",
        "chr": "char",
        "blk": "block",
        "sock": "socket",
        "..dots": "file",
        "ünï": "file",
      });
      const link = entries.find((e) => e.name === "link")!;
      assert.equal(link.ino, sys.lstat(`${p}/link`).ino);
    }
  } finally {
    sys.close(fd);
  }
  assert.throws(() => sys.readDirFd(NEVER_OPEN_FD), sysErr("EBADF"));
});

Deno.test("readDirAt() lists a directory by path, relative to a descriptor, without following a symlink", () => {
  using dir = tempDir();
  const p = dir.path;
  Deno.mkdirSync(`${p}/d`);
  Deno.writeTextFileSync(`${p}/d/f`, "x");
  Deno.symlinkSync("d", `${p}/link`);
  const names = (entries: sys.DirEntry[]) => entries.map((e) => `${e.name}:${e.type}`).sort();
  assert.deepEqual(names(sys.readDirAt(AT_FDCWD, p)), ["d:dir", "link:symlink"]);
  const fd = sys.open(p, sys.O_RDONLY | sys.O_DIRECTORY);
  try {
    assert.deepEqual(names(sys.readDirAt(fd, "d")), ["f:file"]);
    // O_NOFOLLOW with O_DIRECTORY: a symlink is "not a directory".
    assert.throws(() => sys.readDirAt(fd, "link"), sysErr("ENOTDIR"));
    assert.throws(() => sys.readDirAt(fd, "d/f"), sysErr("ENOTDIR"));
    assert.throws(() => sys.readDirAt(fd, "missing"), sysErr("ENOENT"));
  } finally {
    sys.close(fd);
  }
});
