import assert from "node:assert/strict";
import * as sys from "../../sys/mod.ts";
import { tempDir } from "./_helpers.ts";

const root = Deno.uid() === 0;

function isMounted(path: string): boolean {
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n").some((line) =>
    line.split(" ")[4] === path
  );
}

Deno.test("mount() with MS_BIND shows the source's files and umount2() removes the mount", {
  ignore: !root,
}, () => {
  using src = tempDir();
  using dst = tempDir();
  Deno.writeTextFileSync(`${src.path}/hello`, "from source");
  sys.mount(src.path, dst.path, null, sys.MS_BIND, null);
  try {
    assert.ok(isMounted(dst.path));
    assert.equal(Deno.readTextFileSync(`${dst.path}/hello`), "from source");
    Deno.writeTextFileSync(`${dst.path}/back`, "through the mount");
    assert.equal(Deno.readTextFileSync(`${src.path}/back`), "through the mount");
  } finally {
    sys.umount2(dst.path, 0);
  }
  assert.ok(!isMounted(dst.path));
  assert.deepEqual([...Deno.readDirSync(dst.path)], []);
  assert.throws(() => sys.umount2(dst.path, 0), (err: unknown) => {
    assert.ok(sys.isErrno(err, "EINVAL"));
    assert.equal(err.call, "umount2");
    return true;
  });
});

Deno.test("a read-only bind remount makes writes fail with EROFS", { ignore: !root }, () => {
  using src = tempDir();
  using dst = tempDir();
  Deno.writeTextFileSync(`${src.path}/f`, "x");
  sys.mount(src.path, dst.path, null, sys.MS_BIND, null);
  try {
    sys.mount(null, dst.path, null, sys.MS_REMOUNT | sys.MS_BIND | sys.MS_RDONLY, null);
    assert.throws(
      () => sys.open(`${dst.path}/new`, sys.O_WRONLY | sys.O_CREAT, 0o644),
      (err: unknown) => sys.isErrno(err, "EROFS"),
    );
    assert.throws(
      () => sys.lsetxattr(`${dst.path}/f`, "user.x", new Uint8Array([1])),
      (err: unknown) => sys.isErrno(err, "EROFS"),
    );
    assert.equal(Deno.readTextFileSync(`${dst.path}/f`), "x");
    // The source stays writable.
    Deno.writeTextFileSync(`${src.path}/g`, "y");
  } finally {
    sys.umount2(dst.path, sys.MNT_DETACH);
  }
  assert.ok(!isMounted(dst.path));
});

Deno.test("mount() reports the errno of a bad mount", { ignore: !root }, () => {
  using dst = tempDir();
  assert.throws(
    () => sys.mount(`${dst.path}/missing`, dst.path, null, sys.MS_BIND, null),
    (err: unknown) => {
      assert.ok(sys.isErrno(err, "ENOENT"));
      assert.equal(err.call, "mount");
      assert.equal(err.path, `${dst.path}/missing`);
      assert.equal(err.dest, dst.path);
      return true;
    },
  );
});
