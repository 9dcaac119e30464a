import assert from "node:assert/strict";
import * as sys from "../../sys/mod.ts";
import { str, tempDir } from "./_helpers.ts";

function readAll(fd: number): string {
  const buf = new Uint8Array(4096);
  const n = sys.pread(fd, buf, 0);
  return str(buf.subarray(0, n));
}

Deno.test("openat2() with RESOLVE_IN_ROOT resolves absolute symlinks and .. inside the root", () => {
  using dir = tempDir();
  const root = `${dir.path}/root`;
  Deno.mkdirSync(`${root}/a/b`, { recursive: true });
  Deno.symlinkSync("/etc/passwd", `${root}/evil`);
  Deno.symlinkSync("../../../../../../x", `${root}/a/b/up`);
  Deno.writeTextFileSync(`${root}/x`, "inside x");
  const rootfd = sys.open(root, sys.O_PATH | sys.O_DIRECTORY | sys.O_CLOEXEC);
  try {
    const how = { flags: sys.O_RDONLY | sys.O_CLOEXEC, resolve: sys.RESOLVE_IN_ROOT };
    assert.throws(() => sys.openat2(rootfd, "evil", how), (err: unknown) => {
      assert.ok(sys.isErrno(err, "ENOENT"));
      assert.equal(err.call, "openat2");
      return true;
    });
    Deno.mkdirSync(`${root}/etc`);
    Deno.writeTextFileSync(`${root}/etc/passwd`, "in-root passwd");
    let fd = sys.openat2(rootfd, "evil", how);
    assert.equal(readAll(fd), "in-root passwd");
    sys.close(fd);
    for (const path of ["../../x", "a/b/../../../../x", "/x", "a/b/up"]) {
      fd = sys.openat2(rootfd, path, how);
      assert.equal(readAll(fd), "inside x", path);
      sys.close(fd);
    }
  } finally {
    sys.close(rootfd);
  }
});

Deno.test("openat2() with RESOLVE_BENEATH gives EXDEV for .., absolute paths and escaping symlinks", () => {
  using dir = tempDir();
  const root = `${dir.path}/root`;
  Deno.mkdirSync(`${root}/a`, { recursive: true });
  Deno.writeTextFileSync(`${dir.path}/outside`, "outside");
  Deno.writeTextFileSync(`${root}/a/in`, "in");
  Deno.symlinkSync("../../outside", `${root}/a/esc`);
  const rootfd = sys.open(root, sys.O_PATH | sys.O_DIRECTORY);
  try {
    const how = { flags: sys.O_RDONLY, resolve: sys.RESOLVE_BENEATH };
    for (const path of ["../outside", "/etc/passwd", "a/esc"]) {
      assert.throws(() => sys.openat2(rootfd, path, how), (err: unknown) => {
        assert.ok(sys.isErrno(err, "EXDEV"), `${path}: ${err}`);
        return true;
      });
    }
    const fd = sys.openat2(rootfd, "a/../a/in", how);
    assert.equal(readAll(fd), "in");
    sys.close(fd);
    assert.throws(
      () => sys.openat2(rootfd, "a/esc", { flags: sys.O_RDONLY, resolve: sys.RESOLVE_NO_SYMLINKS }),
      (err: unknown) => sys.isErrno(err, "ELOOP"),
    );
  } finally {
    sys.close(rootfd);
  }
});

Deno.test("openat2() creates files with a mode and rejects a mode without O_CREAT", () => {
  using dir = tempDir();
  const dirfd = sys.open(dir.path, sys.O_RDONLY | sys.O_DIRECTORY);
  try {
    const fd = sys.openat2(dirfd, "new", {
      flags: sys.O_WRONLY | sys.O_CREAT | sys.O_EXCL,
      mode: 0o600,
      resolve: sys.RESOLVE_BENEATH,
    });
    sys.writeAll(fd, new TextEncoder().encode("made"));
    sys.close(fd);
    assert.equal(Deno.readTextFileSync(`${dir.path}/new`), "made");
    assert.equal(sys.lstat(`${dir.path}/new`).mode & 0o777, 0o600);
    assert.throws(
      () => sys.openat2(dirfd, "new", { flags: sys.O_RDONLY, mode: 0o600 }),
      (err: unknown) => sys.isErrno(err, "EINVAL"),
    );
  } finally {
    sys.close(dirfd);
  }
});
