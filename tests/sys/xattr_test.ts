import assert from "node:assert/strict";
import * as sys from "../../sys/mod.ts";
import { str, tempDir, text } from "./_helpers.ts";

function errno(code: string, call: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(sys.isErrno(err, code), `expected ${code}, got ${err}`);
    assert.equal(err.call, call);
    return true;
  };
}

// Tests run in parallel workers that share one fd table: closing an fd twice, or using a
// closed one, could hit another test's file. This number is above any fd limit.
const NEVER_OPEN_FD = 2 ** 30;

Deno.test("lsetxattr(), lgetxattr(), llistxattr() and lremovexattr() manage user.* attributes", () => {
  using dir = tempDir();
  const f = `${dir.path}/f`;
  Deno.writeTextFileSync(f, "x");
  assert.deepEqual(sys.llistxattr(f), []);
  sys.lsetxattr(f, "user.a", text("one"));
  sys.lsetxattr(f, "user.empty", new Uint8Array(0));
  // Larger than the internal first-try buffer: sized and retried.
  const big = new Uint8Array(3000).map((_, i) => i % 251);
  sys.lsetxattr(f, "user.big", big);
  assert.equal(str(sys.lgetxattr(f, "user.a")), "one");
  assert.deepEqual(sys.lgetxattr(f, "user.empty"), new Uint8Array(0));
  assert.deepEqual(sys.lgetxattr(f, "user.big"), big);
  assert.deepEqual(sys.llistxattr(f).sort(), ["user.a", "user.big", "user.empty"]);
  assert.throws(
    () => sys.lsetxattr(f, "user.a", text("2"), sys.XATTR_CREATE),
    errno("EEXIST", "lsetxattr"),
  );
  assert.throws(
    () => sys.lsetxattr(f, "user.b", text("2"), sys.XATTR_REPLACE),
    errno("ENODATA", "lsetxattr"),
  );
  sys.lsetxattr(f, "user.a", text("two"), sys.XATTR_REPLACE);
  assert.equal(str(sys.lgetxattr(f, "user.a")), "two");
  sys.lremovexattr(f, "user.a");
  assert.throws(() => sys.lgetxattr(f, "user.a"), (err: unknown) => {
    assert.ok(sys.isErrno(err, "ENODATA"));
    assert.equal(err.message, `ENODATA: lgetxattr "${f}" "user.a": No data available`);
    return true;
  });
  assert.throws(() => sys.lremovexattr(f, "user.a"), errno("ENODATA", "lremovexattr"));
  assert.deepEqual(sys.llistxattr(f).sort(), ["user.big", "user.empty"]);
  assert.throws(() => sys.lgetxattr(`${dir.path}/missing`, "user.a"), errno("ENOENT", "lgetxattr"));
});

Deno.test("llistxattr() returns long name lists", () => {
  using dir = tempDir();
  const f = `${dir.path}/f`;
  Deno.writeTextFileSync(f, "x");
  const names = Array.from({ length: 60 }, (_, i) => `user.${"n".repeat(30)}${i}`);
  for (const name of names) sys.lsetxattr(f, name, new Uint8Array([1]));
  assert.deepEqual(sys.llistxattr(f).sort(), names.sort());
});

Deno.test("lsetxattr() and friends act on a symlink itself, not its target", () => {
  using dir = tempDir();
  const p = dir.path;
  Deno.writeTextFileSync(`${p}/target`, "x");
  sys.symlinkat("target", sys.AT_FDCWD, `${p}/link`);
  sys.lsetxattr(`${p}/link`, "trusted.note", text("on link"));
  assert.equal(str(sys.lgetxattr(`${p}/link`, "trusted.note")), "on link");
  assert.throws(() => sys.lgetxattr(`${p}/target`, "trusted.note"), errno("ENODATA", "lgetxattr"));
  // The kernel refuses user.* on symlinks.
  assert.throws(() => sys.lsetxattr(`${p}/link`, "user.x", text("1")), errno("EPERM", "lsetxattr"));
});

Deno.test(
  "trusted.overlay.opaque can be set on a directory as root",
  { ignore: Deno.uid() !== 0 },
  () => {
    using dir = tempDir();
    const d = `${dir.path}/d`;
    sys.mkdirat(sys.AT_FDCWD, d, 0o755);
    sys.lsetxattr(d, "trusted.overlay.opaque", text("y"));
    assert.equal(str(sys.lgetxattr(d, "trusted.overlay.opaque")), "y");
    assert.ok(sys.llistxattr(d).includes("trusted.overlay.opaque"));
    sys.lremovexattr(d, "trusted.overlay.opaque");
    assert.throws(() => sys.lgetxattr(d, "trusted.overlay.opaque"), errno("ENODATA", "lgetxattr"));
  },
);

Deno.test("fsetxattr(), fgetxattr(), flistxattr() and fremovexattr() work on an open fd", () => {
  using dir = tempDir();
  const fd = sys.open(`${dir.path}/f`, sys.O_RDWR | sys.O_CREAT, 0o644);
  try {
    sys.fsetxattr(fd, "user.k", text("v"));
    sys.fsetxattr(fd, "user.big", new Uint8Array(2000).fill(9));
    assert.equal(str(sys.fgetxattr(fd, "user.k")), "v");
    assert.deepEqual(sys.fgetxattr(fd, "user.big"), new Uint8Array(2000).fill(9));
    assert.deepEqual(sys.flistxattr(fd).sort(), ["user.big", "user.k"]);
    assert.equal(str(sys.lgetxattr(`${dir.path}/f`, "user.k")), "v");
    sys.fremovexattr(fd, "user.k");
    assert.throws(() => sys.fgetxattr(fd, "user.k"), errno("ENODATA", "fgetxattr"));
    assert.throws(
      () => sys.fsetxattr(fd, "user.big", text("1"), sys.XATTR_CREATE),
      errno("EEXIST", "fsetxattr"),
    );
  } finally {
    sys.close(fd);
  }
  assert.throws(() => sys.flistxattr(NEVER_OPEN_FD), errno("EBADF", "flistxattr"));
});
