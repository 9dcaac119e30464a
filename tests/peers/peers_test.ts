import assert from "node:assert/strict";
import { join } from "node:path";
import { NotFound } from "../../errors.ts";
import {
  CommandError,
  findOnPath,
  makeTempDir,
  makeUmociImage,
  missingPeers,
  peerTest,
  run,
  runOk,
  skopeoCopy,
  skopeoInspect,
  startContainerd,
  UMOCI_IMAGE_LAYERS,
  umociUnpack,
} from "../_peers.ts";
import { startRegistry } from "../_registry.ts";
import { diffTrees, snapshotTree } from "../_tree.ts";

const PEERS_URL = new URL("../_peers.ts", import.meta.url).href;

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** True while `pid` is a live (not zombie) process. */
async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return !stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return false;
  }
}

Deno.test("run() returns exit code, stdout and stderr and feeds stdin", async () => {
  const result = await run(["sh", "-c", "cat; echo oops >&2; exit 3"], {
    stdin: new TextEncoder().encode("hello"),
  });
  assert.deepEqual(result, { code: 3, stdout: "hello", stderr: "oops\n" });
});

Deno.test("run() honours cwd and env", async () => {
  await using tmp = await makeTempDir();
  const result = await run(["sh", "-c", 'pwd; echo "$STRATA_X"'], {
    cwd: tmp.path,
    env: { STRATA_X: "y" },
  });
  assert.equal(result.stdout, `${await Deno.realPath(tmp.path)}\ny\n`);
});

Deno.test("run() throws NotFound for a program that is not on PATH", async () => {
  await assert.rejects(run(["strata-no-such-tool"]), NotFound);
});

Deno.test("runOk() throws CommandError with command line, exit code and stderr", async () => {
  const err = await runOk(["sh", "-c", "echo broken >&2; exit 7", "arg one"]).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(err instanceof CommandError);
  assert.equal(err.code, 7);
  assert.equal(err.stderr, "broken\n");
  assert.match(err.message, /sh -c 'echo broken >&2; exit 7' 'arg one'/);
  assert.match(err.message, /exit code 7: broken$/);
});

Deno.test("missingPeers() names missing tools and root", () => {
  const missing = missingPeers({ tools: ["sh", "strata-no-such-tool"], root: true });
  assert.deepEqual(
    missing,
    Deno.uid() === 0 ? ["strata-no-such-tool"] : [
      "strata-no-such-tool",
      "root",
    ],
  );
  assert.equal(findOnPath("strata-no-such-tool"), undefined);
  assert.ok(findOnPath("sh")?.endsWith("/sh"));
});

Deno.test("makeTempDir() removes the directory on dispose", async () => {
  let path: string;
  {
    await using tmp = await makeTempDir();
    path = tmp.path;
    await Deno.mkdir(join(path, "a/b"), { recursive: true });
    assert.ok(await exists(path));
  }
  assert.equal(await exists(path), false);
});

async function runSubTest(source: string, env: Record<string, string>): Promise<
  { code: number; output: string }
> {
  await using tmp = await makeTempDir();
  const file = join(tmp.path, "sub_test.ts");
  await Deno.writeTextFile(file, source);
  const result = await run(
    [Deno.execPath(), "test", "-A", "--no-check", "--no-config", file],
    { env: { NO_COLOR: "1", ...env } },
  );
  return { code: result.code, output: result.stdout + result.stderr };
}

const SKIPPING_TEST = `import { peerTest } from ${JSON.stringify(PEERS_URL)};
peerTest("needs a tool", { tools: ["strata-no-such-tool"] }, async () => {});
`;

Deno.test("peerTest() skips with a visible reason when a tool is missing", async () => {
  const { code, output } = await runSubTest(SKIPPING_TEST, { STRATA_REQUIRE_ALL: "0" });
  assert.equal(code, 0, output);
  assert.match(output, /needs a tool \(skipped: needs strata-no-such-tool\) \.\.\. ignored/);
  assert.match(output, /0 passed \| 0 failed \| 1 ignored/);
});

Deno.test("peerTest() fails instead of skipping under STRATA_REQUIRE_ALL=1", async () => {
  const { code, output } = await runSubTest(SKIPPING_TEST, { STRATA_REQUIRE_ALL: "1" });
  assert.notEqual(code, 0);
  assert.match(output, /needs a tool \.\.\. FAILED/);
  assert.match(output, /STRATA_REQUIRE_ALL=1 is set but it needs "strata-no-such-tool"/);
});

Deno.test("peerTest() runs the test when everything is there", async () => {
  const source = `import { peerTest } from ${JSON.stringify(PEERS_URL)};
peerTest("has sh", { tools: ["sh"] }, async () => { console.log("RAN"); });
`;
  const { code, output } = await runSubTest(source, { STRATA_REQUIRE_ALL: "1" });
  assert.equal(code, 0, output);
  assert.match(output, /RAN/);
  assert.match(output, /1 passed \| 0 failed/);
});

peerTest(
  "makeUmociImage() builds an image skopeo and umoci read back",
  { tools: ["umoci", "skopeo", "getfattr"], root: true },
  async () => {
    await using tmp = await makeTempDir();
    const { layout, tag } = await makeUmociImage(tmp.path, { tag: "v1" });
    assert.equal(layout, join(tmp.path, "layout"));
    assert.equal(tag, "v1");

    const info = await skopeoInspect(`oci:${layout}:${tag}`) as { Layers: string[] };
    assert.equal(info.Layers.length, UMOCI_IMAGE_LAYERS);
    const manifest = await skopeoInspect(`oci:${layout}:${tag}`, { raw: true }) as {
      mediaType?: string;
      layers: { mediaType: string }[];
    };
    assert.equal(manifest.layers.length, 2);
    assert.ok(manifest.layers.every((l) => l.mediaType.endsWith(".tar+gzip")));
    const config = await skopeoInspect(`oci:${layout}:${tag}`, { config: true }) as {
      config: { Entrypoint: string[]; Env: string[] };
      rootfs: { diff_ids: string[] };
    };
    assert.deepEqual(config.config.Entrypoint, ["/bin/sh"]);
    assert.ok(config.config.Env.includes("STRATA_TEST=1"));
    assert.equal(config.rootfs.diff_ids.length, 2);

    // The umoci gc left only reachable blobs: index -> manifest -> config + 2 layers.
    const blobs = [...Deno.readDirSync(join(layout, "blobs/sha256"))];
    assert.equal(blobs.length, 4);

    const rootfs = await umociUnpack(`${layout}:${tag}`, join(tmp.path, "check"));
    const tree = await snapshotTree(rootfs);
    assert.equal(tree.has("to-delete.txt"), false);
    assert.equal(
      await Deno.readTextFile(join(rootfs, "etc/motd")),
      "Welcome to layer 2 of a Strata test image.\n",
    );
    assert.equal(tree.get("etc/layer2.txt")?.type, "file");
    assert.equal(tree.get("data/random.bin")?.size, 200 * 1024);
    assert.equal(tree.get("data/random.bin")?.hardlinkGroup, "data/random.bin");
    assert.equal(tree.get("data/random.hardlink")?.hardlinkGroup, "data/random.bin");
    assert.equal(tree.get("data/motd.symlink")?.linkTarget, "../etc/motd");
    assert.equal(tree.get("data/hostname.abs-symlink")?.linkTarget, "/etc/hostname");
    assert.equal(tree.get("usr/share/doc/strata/deep/nested")?.type, "dir");
    assert.equal(tree.get("var/empty")?.type, "dir");
    assert.equal(tree.get("usr/bin/hello")?.mode, 0o755);
    const secret = tree.get("home/user/secret");
    assert.deepEqual([secret?.mode, secret?.uid, secret?.gid], [0o600, 1000, 1000]);
  },
);

peerTest(
  "startContainerd() answers ctr and stop() removes its process and directory",
  { tools: ["containerd", "ctr"], root: true },
  async () => {
    const containerd = await startContainerd();
    try {
      assert.ok(containerd.socket.startsWith(containerd.dir + "/"));
      assert.equal(containerd.namespace, "strata-test");
      const version = await containerd.ctrOk(["version"]);
      assert.match(version.stdout, /Server:\s*\n\s*Version:/);
      const images = await containerd.ctrOk(["images", "ls", "-q"]);
      assert.equal(images.stdout, "");
      assert.ok(await alive(containerd.pid));
    } finally {
      await containerd.stop();
    }
    assert.equal(await exists(containerd.dir), false);
    assert.equal(await alive(containerd.pid), false);
    await containerd.stop();
  },
);

peerTest(
  "startContainerd() imports a umoci image and is stopped by await using",
  { tools: ["containerd", "ctr", "umoci", "skopeo"], root: true },
  async () => {
    await using tmp = await makeTempDir();
    const { layout, tag } = await makeUmociImage(tmp.path);
    const archive = join(tmp.path, "image.tar");
    await skopeoCopy(`oci:${layout}:${tag}`, `oci-archive:${archive}:strata.test/umoci:${tag}`);
    let dir: string;
    let pid: number;
    {
      await using containerd = await startContainerd();
      dir = containerd.dir;
      pid = containerd.pid;
      await containerd.ctrOk(["images", "import", "--all-platforms", archive]);
      const images = await containerd.ctrOk(["images", "ls", "-q"]);
      assert.equal(images.stdout.trim(), `strata.test/umoci:${tag}`);
    }
    assert.equal(await exists(dir), false);
    assert.equal(await alive(pid), false);
  },
);

peerTest(
  "startContainerd() does not leak when a test forgets to stop it",
  { tools: ["containerd", "ctr"], root: true },
  async () => {
    const source = `import { startContainerd } from ${JSON.stringify(PEERS_URL)};
Deno.test("forgets to stop", async () => {
  const containerd = await startContainerd();
  console.log("STARTED " + JSON.stringify({ pid: containerd.pid, dir: containerd.dir }));
  throw new Error("test failed on purpose");
});
`;
    const { code, output } = await runSubTest(source, {});
    assert.notEqual(code, 0);
    const started = output.match(/STARTED (\{.*\})/)?.[1];
    assert.ok(started !== undefined, output);
    const { pid, dir } = JSON.parse(started) as { pid: number; dir: string };
    assert.equal(await alive(pid), false);
    assert.equal(await exists(dir), false);
  },
);

peerTest(
  "startRegistry() serves images that skopeoCopy() pushes",
  { tools: ["docker-registry", "umoci", "skopeo"], root: true },
  async () => {
    await using tmp = await makeTempDir();
    const { layout, tag } = await makeUmociImage(tmp.path);
    let dir: string;
    {
      await using registry = await startRegistry();
      dir = registry.dir;
      const ref = `docker://${registry.host}/strata/umoci:${tag}`;
      await skopeoCopy(`oci:${layout}:${tag}`, ref, ["--dest-tls-verify=false"]);
      const info = await skopeoInspect(ref, { args: ["--tls-verify=false"] }) as {
        Layers: string[];
      };
      assert.equal(info.Layers.length, UMOCI_IMAGE_LAYERS);
      const tags = await fetch(`http://${registry.host}/v2/strata/umoci/tags/list`);
      assert.deepEqual(await tags.json(), { name: "strata/umoci", tags: [tag] });
    }
    assert.equal(await exists(dir), false);
  },
);

async function makeSampleTree(root: string): Promise<void> {
  await Deno.mkdir(join(root, "d/e"), { recursive: true });
  await Deno.writeTextFile(join(root, "d/file"), "content\n");
  await Deno.chmod(join(root, "d/file"), 0o644);
  await Deno.writeTextFile(join(root, "d/e/other"), "other\n");
  await Deno.link(join(root, "d/file"), join(root, "a-link"));
  await Deno.symlink("d/file", join(root, "sym"));
  await Deno.symlink("/nowhere", join(root, "dangling"));
}

Deno.test("snapshotTree() records types, modes, link targets and hardlink groups", async () => {
  await using tmp = await makeTempDir();
  await makeSampleTree(tmp.path);
  await Deno.chmod(join(tmp.path, "d/e"), 0o1777);
  const tree = await snapshotTree(tmp.path, { xattrs: false });
  assert.deepEqual([...tree.keys()], [
    ".",
    "a-link",
    "d",
    "d/e",
    "d/e/other",
    "d/file",
    "dangling",
    "sym",
  ]);
  const file = tree.get("d/file");
  assert.equal(file?.type, "file");
  assert.equal(file?.mode, 0o644);
  assert.equal(file?.size, 8);
  assert.equal(file?.sha256, await sha256("content\n"));
  assert.equal(file?.hardlinkGroup, "a-link");
  assert.equal(tree.get("a-link")?.hardlinkGroup, "a-link");
  assert.equal(tree.get("d/e/other")?.hardlinkGroup, undefined);
  assert.equal(tree.get("d/e")?.mode, 0o1777);
  assert.equal(tree.get("sym")?.type, "symlink");
  assert.equal(tree.get("sym")?.linkTarget, "d/file");
  assert.equal(tree.get("dangling")?.linkTarget, "/nowhere");
  assert.equal(tree.get(".")?.type, "dir");
});

Deno.test("diffTrees() finds nothing between identical copies", async () => {
  await using tmp = await makeTempDir();
  await makeSampleTree(join(tmp.path, "a"));
  await makeSampleTree(join(tmp.path, "b"));
  const a = await snapshotTree(join(tmp.path, "a"), { xattrs: false });
  const b = await snapshotTree(join(tmp.path, "b"), { xattrs: false });
  assert.deepEqual(diffTrees(a, b, { ignore: ["mtime"] }), []);
});

Deno.test("diffTrees() reports mode, content, missing files and broken hardlinks", async () => {
  await using tmp = await makeTempDir();
  const a = join(tmp.path, "a");
  const b = join(tmp.path, "b");
  await makeSampleTree(a);
  await makeSampleTree(b);
  await Deno.chmod(join(b, "d/e"), 0o700);
  await Deno.writeTextFile(join(b, "d/e/other"), "OTHER\n");
  await Deno.remove(join(b, "dangling"));
  await Deno.remove(join(b, "a-link"));
  await Deno.copyFile(join(b, "d/file"), join(b, "a-link"));
  await Deno.mkdir(join(b, "new"));
  const diffs = diffTrees(
    await snapshotTree(a, { xattrs: false }),
    await snapshotTree(b, { xattrs: false }),
    { ignore: ["mtime"] },
  );
  assert.deepEqual(diffs, [
    `"a-link": hardlink group "a-link" != (none)`,
    `"d/e": mode 0755 != 0700`,
    `"d/e/other": sha256 ${await sha256("other\n")} != ${await sha256("OTHER\n")}`,
    `"d/file": hardlink group "a-link" != (none)`,
    `"dangling": only in a (symlink)`,
    `"new": only in b (dir)`,
  ]);
});

Deno.test("diffTrees() reports mtime, uid and type unless ignored", async () => {
  await using tmp = await makeTempDir();
  const a = join(tmp.path, "a");
  const b = join(tmp.path, "b");
  await makeSampleTree(a);
  await makeSampleTree(b);
  await Deno.utime(join(a, "d/e/other"), 1_700_000_000, 1_700_000_000.5);
  await Deno.utime(join(b, "d/e/other"), 1_700_000_000, 1_700_000_000.25);
  await Deno.remove(join(b, "sym"));
  await Deno.writeTextFile(join(b, "sym"), "d/file");
  const ta = await snapshotTree(a, { xattrs: false });
  const tb = await snapshotTree(b, { xattrs: false });
  const mtimes = diffTrees(ta, tb).filter((line) => line.startsWith(`"d/e/other"`));
  assert.deepEqual(mtimes, [
    `"d/e/other": mtime 2023-11-14T22:13:20.500Z != 2023-11-14T22:13:20.250Z`,
  ]);
  const other = ta.get("d/e/other");
  assert.ok(other !== undefined);
  ta.set("d/e/other", { ...other, uid: 4242 });
  const expected = [
    `"d/e/other": uid 4242 != ${tb.get("d/e/other")?.uid}`,
    `"sym": type symlink != file`,
  ];
  assert.deepEqual(diffTrees(ta, tb, { ignore: ["mtime"] }), expected);
  assert.deepEqual(diffTrees(ta, tb, { ignore: ["mtime"], ignorePaths: ["."] }), expected);
  assert.deepEqual(diffTrees(ta, tb, { ignore: ["mtime", "uid"], ignorePaths: ["sym"] }), []);
  assert.deepEqual(diffTrees(ta, tb, { ignore: ["mtime", "uid"], ignorePaths: ["d", "sym"] }), []);
});

peerTest("snapshotTree() reads xattrs and diffTrees() compares them", {
  tools: ["getfattr", "setfattr"],
}, async () => {
  await using tmp = await makeTempDir();
  const a = join(tmp.path, "a");
  const b = join(tmp.path, "b");
  await makeSampleTree(a);
  await makeSampleTree(b);
  await Deno.writeTextFile(join(a, "we=ird\nné"), "x");
  await Deno.writeTextFile(join(b, "we=ird\nné"), "x");
  await runOk(["setfattr", "-n", "user.strata", "-v", "0x00ff", join(a, "we=ird\nné")]);
  await runOk(["setfattr", "-n", "user.strata", "-v", "0x0001", join(b, "we=ird\nné")]);
  await runOk(["setfattr", "-n", "user.only-a", "-v", "v", join(a, "d")]);
  await runOk(["setfattr", "-n", "user.root", "-v", "", a]);
  const ta = await snapshotTree(a);
  const tb = await snapshotTree(b);
  assert.deepEqual(ta.get("we=ird\nné")?.xattrs, { "user.strata": "00ff" });
  assert.deepEqual(ta.get("d")?.xattrs, { "user.only-a": "76" });
  assert.deepEqual(ta.get(".")?.xattrs, { "user.root": "" });
  assert.equal(ta.get("d/file")?.xattrs, undefined);
  assert.deepEqual(diffTrees(ta, tb, { ignore: ["mtime"] }), [
    `".": xattr "user.root" 0x != (none)`,
    `"d": xattr "user.only-a" 0x76 != (none)`,
    `"we=ird\\nné": xattr "user.strata" 0x00ff != 0x0001`,
  ]);
  assert.deepEqual(diffTrees(ta, tb, { ignore: ["mtime", "xattrs"] }), []);
});

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}
