import assert from "node:assert/strict";
import { join } from "node:path";
import { InvalidArgument, NotImplemented } from "../../errors.ts";
import {
  isReadOnly,
  type Mount,
  mountAll,
  parseMountOptions,
  readOnlyMounts,
  singleBindSource,
  unmount,
  unmountAll,
  unmountMounts,
  withTempMount,
} from "../../mount/mod.ts";
import * as sys from "../../sys/mod.ts";
import { makeTempDir, peerTest } from "../_peers.ts";

/** Mount points at or below `dir` with their super options, from /proc/self/mountinfo. */
function mountsUnder(dir: string): { point: string; type: string; options: string[] }[] {
  const found = [];
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    const fields = line.split(" ");
    const separator = fields.indexOf("-");
    if (separator < 0) continue;
    const point = fields[4]!.replace(
      /\\([0-7]{3})/g,
      (_, octal: string) => String.fromCharCode(parseInt(octal, 8)),
    );
    if (point !== dir && !point.startsWith(dir + "/")) continue;
    const options = [...fields[5]!.split(","), ...(fields[separator + 3] ?? "").split(",")];
    found.push({ point, type: fields[separator + 1]!, options });
  }
  return found;
}

function assertNoMountsUnder(dir: string): void {
  assert.deepEqual(mountsUnder(dir).map((m) => m.point), [], `mounts left under ${dir}`);
}

function writeFails(path: string, code: string): void {
  assert.throws(() => Deno.writeTextFileSync(path, "x"), (err: Error) => {
    assert.match(String((err as { code?: string }).code ?? err.message), new RegExp(code));
    return true;
  });
}

Deno.test("parseMountOptions() maps flag options to MS_* flags", () => {
  const cases: [string[], number][] = [
    [["ro"], sys.MS_RDONLY],
    [["ro", "rw"], 0],
    [["bind"], sys.MS_BIND],
    [["rbind"], sys.MS_BIND | sys.MS_REC],
    [["nosuid", "nodev", "noexec"], sys.MS_NOSUID | sys.MS_NODEV | sys.MS_NOEXEC],
    [["nosuid", "suid"], 0],
    [["nodev", "dev"], 0],
    [["noexec", "exec"], 0],
    [["noatime"], sys.MS_NOATIME],
    [["noatime", "atime"], 0],
    [["nodiratime"], sys.MS_NODIRATIME],
    [["nodiratime", "diratime"], 0],
    [["relatime"], sys.MS_RELATIME],
    [["relatime", "norelatime"], 0],
    [["strictatime"], sys.MS_STRICTATIME],
    [["strictatime", "nostrictatime"], 0],
    [["sync"], sys.MS_SYNCHRONOUS],
    [["sync", "async"], 0],
    [["dirsync"], sys.MS_DIRSYNC],
    [["remount", "ro"], sys.MS_REMOUNT | sys.MS_RDONLY],
    [["mand"], sys.MS_MANDLOCK],
    [["mand", "nomand"], 0],
    [["defaults"], 0],
  ];
  for (const [options, flags] of cases) {
    const parsed = parseMountOptions(options);
    assert.equal(parsed.flags, flags, options.join(","));
    assert.deepEqual(parsed.data, [], options.join(","));
  }
});

Deno.test("parseMountOptions() keeps other options as data and collects special requests", () => {
  const parsed = parseMountOptions([
    "lowerdir=/a:/b",
    "ro",
    "mode=755",
    "rprivate",
    "loop",
    "uidmap=0:1000:1",
    "gidmap=0:2000:1",
    "index=off",
  ]);
  assert.deepEqual(parsed, {
    flags: sys.MS_RDONLY,
    data: ["lowerdir=/a:/b", "mode=755", "index=off"],
    propagation: sys.MS_PRIVATE | sys.MS_REC,
    loop: true,
    uidmap: "0:1000:1",
    gidmap: "0:2000:1",
  });
  assert.equal(parseMountOptions(["shared"]).propagation, sys.MS_SHARED);
  assert.equal(parseMountOptions(["rslave"]).propagation, sys.MS_SLAVE | sys.MS_REC);
  assert.equal(parseMountOptions(["unbindable"]).propagation, sys.MS_UNBINDABLE);
});

Deno.test("parseMountOptions() rejects X-containerd options", () => {
  assert.throws(
    () => parseMountOptions(["ro", "X-containerd.mkdir.path=/x"]),
    (err: unknown) =>
      err instanceof InvalidArgument && err.message.includes('"X-containerd.mkdir.path=/x"'),
  );
});

Deno.test("isReadOnly() follows containerd's rules per mount type", () => {
  const cases: [Mount, boolean][] = [
    [{ type: "bind", source: "/a", options: ["rbind", "ro"] }, true],
    [{ type: "bind", source: "/a", options: ["rbind", "rw"] }, false],
    [{ type: "bind", source: "/a", options: ["rbind,ro"] }, true],
    [{ type: "erofs", source: "/a.img", options: [] }, true],
    [{ type: "format/erofs", source: "/a.img", options: ["rw"] }, true],
    [{ type: "overlay", source: "overlay", options: ["lowerdir=/a:/b"] }, true],
    [{
      type: "overlay",
      source: "overlay",
      options: ["workdir=/w", "upperdir=/u", "lowerdir=/a"],
    }, false],
    [{ type: "overlay", source: "overlay", options: ["upperdir=/u,ro", "lowerdir=/a"] }, true],
    [{ type: "mkdir/overlay", source: "overlay", options: ["lowerdir=/a:/b"] }, true],
    [{ type: "tmpfs", source: "tmpfs", options: ["mode=755"] }, false],
  ];
  for (const [mount, expected] of cases) {
    assert.equal(isReadOnly(mount), expected, JSON.stringify(mount));
  }
});

Deno.test("readOnlyMounts() folds the upperdir into lowerdir and marks other mounts ro", () => {
  const input: Mount[] = [
    {
      type: "overlay",
      source: "overlay",
      options: [
        "uidmap=0:1000:65536",
        "workdir=/s/3/work",
        "upperdir=/s/3/fs",
        "lowerdir=/s/2/fs:/s/1/fs",
        "gidmap=0:1000:65536",
        "index=off",
      ],
    },
    { type: "overlay", source: "overlay", options: ["lowerdir=/s/2/fs:/s/1/fs"] },
    { type: "bind", source: "/s/1/fs", target: "sub", options: ["rw", "rbind", "ro", "nosuid"] },
  ];
  const copy = structuredClone(input);
  assert.deepEqual(readOnlyMounts(input), [
    {
      type: "overlay",
      source: "overlay",
      options: ["lowerdir=/s/3/fs:/s/2/fs:/s/1/fs", "index=off"],
    },
    { type: "overlay", source: "overlay", options: ["lowerdir=/s/2/fs:/s/1/fs"] },
    { type: "bind", source: "/s/1/fs", target: "sub", options: ["rbind", "nosuid", "ro"] },
  ]);
  assert.deepEqual(input, copy, "the input is not changed");
  for (const mount of readOnlyMounts(input)) assert.equal(isReadOnly(mount), true);
});

Deno.test("singleBindSource() returns the source of a lone bind mount only", () => {
  const bind: Mount = { type: "bind", source: "/s/1/fs", options: ["rw", "rbind"] };
  assert.equal(singleBindSource([bind]), "/s/1/fs");
  assert.equal(singleBindSource([{ ...bind, options: ["ro", "rbind"] }]), "/s/1/fs");
  assert.equal(singleBindSource([{ ...bind, target: "/" }]), "/s/1/fs");
  assert.equal(singleBindSource([{ ...bind, target: "sub" }]), undefined);
  assert.equal(singleBindSource([bind, bind]), undefined);
  assert.equal(singleBindSource([]), undefined);
  assert.equal(
    singleBindSource([{ type: "overlay", source: "overlay", options: ["lowerdir=/a:/b"] }]),
    undefined,
  );
});

Deno.test("mountAll() refuses loop devices, idmapped mounts and FUSE with NotImplemented", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (
      const mount of [
        { type: "ext4", source: "/img", options: ["loop"] },
        { type: "bind", source: "/src", options: ["rbind", "uidmap=0:1000:1"] },
        { type: "fuse.sshfs", source: "host:/", options: [] },
      ]
    ) {
      await assert.rejects(mountAll([mount], dir), NotImplemented, mount.type);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

peerTest(
  "mountAll() bind-mounts read-write; unmountMounts() undoes it",
  { root: true },
  async () => {
    await using tmp = await makeTempDir();
    const src = join(tmp.path, "src");
    const dst = join(tmp.path, "dst");
    await Deno.mkdir(src);
    await Deno.mkdir(dst);
    await Deno.writeTextFile(join(src, "a"), "a");
    const mounts: Mount[] = [{ type: "bind", source: src, options: ["rw", "rbind"] }];
    await mountAll(mounts, dst);
    try {
      assert.equal(await Deno.readTextFile(join(dst, "a")), "a");
      await Deno.writeTextFile(join(dst, "b"), "b");
      assert.equal(await Deno.readTextFile(join(src, "b")), "b");
      assert.ok(!mountsUnder(dst)[0]!.options.slice(0, 1).includes("ro"));
    } finally {
      await unmountMounts(mounts, dst);
    }
    assertNoMountsUnder(tmp.path);
    await assert.rejects(Deno.stat(join(dst, "a")), Deno.errors.NotFound);
  },
);

peerTest("mountAll() makes a bind with ro read-only (EROFS)", { root: true }, async () => {
  await using tmp = await makeTempDir();
  const src = join(tmp.path, "src");
  const dst = join(tmp.path, "dst");
  await Deno.mkdir(src);
  await Deno.mkdir(dst);
  await Deno.writeTextFile(join(src, "a"), "a");
  const mounts: Mount[] = [{ type: "bind", source: src, options: ["ro", "rbind", "nosuid"] }];
  await mountAll(mounts, dst);
  try {
    assert.equal(await Deno.readTextFile(join(dst, "a")), "a");
    writeFails(join(dst, "b"), "EROFS|Read-only");
    const [info] = mountsUnder(dst);
    assert.equal(info?.options[0], "ro");
    assert.ok(info?.options.includes("nosuid"));
    await Deno.writeTextFile(join(src, "c"), "c");
  } finally {
    await unmountMounts(mounts, dst);
  }
  assertNoMountsUnder(tmp.path);
});

peerTest(
  "mountAll() stacks overlay lowers newest first and writes to the upperdir",
  { root: true },
  async () => {
    await using tmp = await makeTempDir();
    const at = (p: string): string => join(tmp.path, p);
    for (const d of ["l1", "l2", "upper", "work", "merged"]) await Deno.mkdir(at(d));
    await Deno.writeTextFile(at("l1/shared"), "old");
    await Deno.writeTextFile(at("l1/only1"), "1");
    await Deno.writeTextFile(at("l2/shared"), "new");
    await Deno.writeTextFile(at("l2/only2"), "2");
    const mounts: Mount[] = [{
      type: "overlay",
      source: "overlay",
      options: [
        `workdir=${at("work")}`,
        `upperdir=${at("upper")}`,
        `lowerdir=${at("l2")}:${at("l1")}`,
      ],
    }];
    await mountAll(mounts, at("merged"));
    try {
      assert.equal(await Deno.readTextFile(at("merged/shared")), "new");
      assert.equal(await Deno.readTextFile(at("merged/only1")), "1");
      assert.equal(await Deno.readTextFile(at("merged/only2")), "2");
      await Deno.writeTextFile(at("merged/written"), "w");
      assert.equal(await Deno.readTextFile(at("upper/written")), "w");
      await assert.rejects(Deno.stat(at("l2/written")), Deno.errors.NotFound);
      assert.equal(mountsUnder(at("merged"))[0]?.type, "overlay");
    } finally {
      await unmountMounts(mounts, at("merged"));
    }
    assertNoMountsUnder(tmp.path);
  },
);

peerTest("mountAll() keeps a mount's target inside the mount point", { root: true }, async () => {
  await using tmp = await makeTempDir();
  const at = (p: string): string => join(tmp.path, p);
  for (const d of ["src", "root/sub", "root/inside"]) await Deno.mkdir(at(d), { recursive: true });
  await Deno.writeTextFile(at("src/marker"), "m");
  // An absolute symlink inside the mount point is resolved inside it, not on the host.
  await Deno.symlink("/inside", at("root/link"));
  const mounts: Mount[] = [
    { type: "bind", source: at("src"), target: "../../../sub", options: ["rbind"] },
    { type: "bind", source: at("src"), target: "link", options: ["rbind"] },
  ];
  await mountAll(mounts, at("root"));
  try {
    assert.equal(await Deno.readTextFile(at("root/sub/marker")), "m");
    assert.equal(await Deno.readTextFile(at("root/inside/marker")), "m");
    assert.deepEqual(mountsUnder(tmp.path).map((m) => m.point).sort(), [
      at("root/inside"),
      at("root/sub"),
    ]);
  } finally {
    await unmountMounts(mounts, at("root"));
  }
  assertNoMountsUnder(tmp.path);
});

peerTest(
  "unmountAll() peels stacked mounts and ignores missing paths",
  { root: true },
  async () => {
    await using tmp = await makeTempDir();
    const at = (p: string): string => join(tmp.path, p);
    for (const d of ["a", "b", "dst"]) await Deno.mkdir(at(d));
    await Deno.writeTextFile(at("a/x"), "a");
    await Deno.writeTextFile(at("b/x"), "b");
    await mountAll([{ type: "bind", source: at("a"), options: ["rbind"] }], at("dst"));
    await mountAll([{ type: "bind", source: at("b"), options: ["rbind"] }], at("dst"));
    assert.equal(await Deno.readTextFile(at("dst/x")), "b");
    assert.equal(mountsUnder(at("dst")).length, 2);
    await unmountAll(at("dst"));
    assertNoMountsUnder(tmp.path);
    await unmountAll(at("missing"));
    await unmountAll("");
    await assert.rejects(unmount(at("dst")), InvalidArgument);
  },
);

/** Makes `count` layer directories `<base>/<i>/fs` holding `file<i>`; returns them newest first. */
async function makeLayers(base: string, count: number): Promise<string[]> {
  const lowers: string[] = [];
  for (let i = 1; i <= count; i++) {
    const fs = join(base, String(i), "fs");
    await Deno.mkdir(fs, { recursive: true });
    await Deno.writeTextFile(join(fs, `file${i}`), String(i));
    lowers.unshift(fs);
  }
  return lowers;
}

/**
 * Mounts an overlay of `count` layers under a 200-character root, checks that every layer's file
 * shows and writes land in the upper dir, and returns the `lowerdir=` option the kernel reports.
 */
async function mountManyLayers(count: number): Promise<string> {
  await using tmp = await makeTempDir();
  const base = join(tmp.path, "d".repeat(200), "snapshots", "overlayfs", "snapshots");
  const lowers = await makeLayers(base, count);
  const top = String(count + 1);
  for (const d of [`${top}/fs`, `${top}/work`]) {
    await Deno.mkdir(join(base, d), { recursive: true });
  }
  const merged = join(tmp.path, "merged");
  await Deno.mkdir(merged);
  const options = [
    `workdir=${join(base, top, "work")}`,
    `upperdir=${join(base, top, "fs")}`,
    `lowerdir=${lowers.join(":")}`,
  ];
  assert.ok(options.join(",").length > 4096 * 7);
  const cwd = Deno.cwd();
  const mounts: Mount[] = [{ type: "overlay", source: "overlay", options }];
  await mountAll(mounts, merged);
  let lowerdir: string | undefined;
  try {
    assert.equal(Deno.cwd(), cwd, "the working directory is unchanged");
    const names = [...Deno.readDirSync(merged)].map((e) => e.name);
    assert.equal(names.length, count);
    for (let i = 1; i <= count; i++) {
      assert.equal(await Deno.readTextFile(join(merged, `file${i}`)), String(i));
    }
    await Deno.writeTextFile(join(merged, "new"), "n");
    assert.equal(await Deno.readTextFile(join(base, top, "fs", "new")), "n");
    lowerdir = mountsUnder(merged)[0]?.options.find((o) => o.startsWith("lowerdir="));
  } finally {
    await unmountMounts(mounts, merged);
  }
  assertNoMountsUnder(tmp.path);
  assert.ok(lowerdir !== undefined);
  return lowerdir;
}

peerTest(
  "mountAll() compacts a lowerdir option longer than a page to /proc/self/fd paths",
  { root: true },
  async () => {
    const lowerdir = await mountManyLayers(128);
    assert.match(
      lowerdir,
      /^lowerdir=\/proc\/self\/fd\/\d+\/128\/fs:\/proc\/self\/fd\/\d+\/127\/fs:/,
    );
  },
);

peerTest(
  "mountAll() mounts from the common directory when /proc/self/fd paths are too long",
  { root: true },
  async () => {
    const lowerdir = await mountManyLayers(300);
    assert.ok(lowerdir.startsWith("lowerdir=300/fs:299/fs:"), lowerdir.slice(0, 60));
  },
);

peerTest(
  "mountAll() fails clearly when overlay options stay too long after compaction",
  { root: true },
  async () => {
    await using tmp = await makeTempDir();
    const base = join(tmp.path, "layers");
    const lowers: string[] = [];
    for (let i = 0; i < 128; i++) {
      const dir = join(base, `${String(i).padStart(3, "0")}-${"n".repeat(40)}`);
      await Deno.mkdir(dir, { recursive: true });
      lowers.push(dir);
    }
    const merged = join(tmp.path, "merged");
    await Deno.mkdir(merged);
    const mounts: Mount[] = [{
      type: "overlay",
      source: "overlay",
      options: [`lowerdir=${lowers.join(":")}`],
    }];
    await assert.rejects(
      mountAll(mounts, merged),
      (err: unknown) =>
        err instanceof InvalidArgument &&
        err.message.startsWith(`Cannot mount overlay at "${merged}": mount options are too long`),
    );
    assertNoMountsUnder(tmp.path);
  },
);

peerTest(
  "withTempMount() mounts, calls fn, then unmounts and removes the mount point",
  { root: true },
  async () => {
    await using tmp = await makeTempDir();
    const src = join(tmp.path, "src");
    const location = join(tmp.path, "mounts");
    await Deno.mkdir(src);
    await Deno.mkdir(location);
    await Deno.writeTextFile(join(src, "a"), "a");
    let seen = "";
    const result = await withTempMount(
      [{ type: "bind", source: src, options: ["ro", "rbind"] }],
      async (root) => {
        seen = root;
        assert.ok(root.startsWith(location + "/"));
        assert.equal(mountsUnder(root).length, 1);
        writeFails(join(root, "b"), "EROFS|Read-only");
        return await Deno.readTextFile(join(root, "a"));
      },
      { location },
    );
    assert.equal(result, "a");
    await assert.rejects(Deno.stat(seen), Deno.errors.NotFound);
    assertNoMountsUnder(tmp.path);
    assert.equal(await Deno.readTextFile(join(src, "a")), "a");
  },
);

peerTest("withTempMount() unmounts and rethrows when fn throws", { root: true }, async () => {
  await using tmp = await makeTempDir();
  const src = join(tmp.path, "src");
  await Deno.mkdir(src);
  await Deno.writeTextFile(join(src, "keep"), "k");
  const boom = new Error("boom");
  let seen = "";
  await assert.rejects(
    withTempMount([{ type: "bind", source: src, options: ["rbind"] }], (root) => {
      seen = root;
      throw boom;
    }, { location: tmp.path }),
    (err: unknown) => err === boom,
  );
  await assert.rejects(Deno.stat(seen), Deno.errors.NotFound);
  assertNoMountsUnder(tmp.path);
  assert.equal(await Deno.readTextFile(join(src, "keep")), "k", "source data is untouched");
});

peerTest("withTempMount() drops volatile from overlay mounts", { root: true }, async () => {
  await using tmp = await makeTempDir();
  const at = (p: string): string => join(tmp.path, p);
  for (const d of ["l1", "l2", "upper", "work"]) await Deno.mkdir(at(d));
  const mount: Mount = {
    type: "overlay",
    source: "overlay",
    options: [
      `workdir=${at("work")}`,
      `upperdir=${at("upper")}`,
      `lowerdir=${at("l2")}:${at("l1")}`,
      "volatile",
    ],
  };
  await withTempMount([mount], (root) => {
    const [info] = mountsUnder(root);
    assert.equal(info?.type, "overlay");
    assert.ok(!info.options.includes("volatile"), info.options.join(","));
  }, { location: tmp.path });
  assert.ok(mount.options.includes("volatile"), "the input is not changed");
  assertNoMountsUnder(tmp.path);
});
