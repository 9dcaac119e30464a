import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "../../cli.ts";
import { buildSample } from "../../sample/build.ts";
import { makeTempDir } from "../_peers.ts";
import { rawEntry, rawTar } from "../diff/_helpers.ts";

interface Ran {
  code: number;
  out: string;
  err: string;
}

async function strata(args: string[]): Promise<Ran> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { stdout: (l) => out.push(l), stderr: (l) => err.push(l) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** Runs the real command in a child process (for stdin, stdout bytes and exit codes). */
async function strataProcess(
  args: string[],
  stdin?: Uint8Array,
): Promise<Ran & { bytes: Uint8Array }> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../../cli.ts", import.meta.url).pathname, ...args],
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  });
  const child = cmd.spawn();
  if (stdin) {
    const w = child.stdin.getWriter();
    await w.write(stdin);
    await w.close();
  }
  const o = await child.output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout), err: dec.decode(o.stderr), bytes: o.stdout };
}

Deno.test("strata --help lists the commands and every command has --help", async () => {
  const help = await strata(["--help"]);
  assert.equal(help.code, 0);
  for (const c of ["import", "images", "content"]) assert.match(help.out, new RegExp(`\\b${c}\\b`));
  for (
    const args of [
      ["import", "--help"],
      ["images", "--help"],
      ["images", "ls", "--help"],
      ["images", "inspect", "--help"],
      ["images", "rm", "--help"],
      ["images", "tag", "--help"],
      ["images", "export", "--help"],
      ["content", "ls", "--help"],
      ["content", "get", "--help"],
      ["content", "rm", "--help"],
      ["content", "ingests", "--help"],
    ]
  ) {
    const r = await strata(args);
    assert.equal(r.code, 0, args.join(" "));
    assert.match(r.out, /Usage: strata/, args.join(" "));
  }
});

Deno.test("strata reports usage errors with exit code 2 and one line", async () => {
  for (
    const args of [["nope"], ["images", "nope"], ["images", "ls", "--bogus"], [
      "images",
      "tag",
      "x",
    ]]
  ) {
    const r = await strata(args);
    assert.equal(r.code, 2, args.join(" "));
    assert.equal(r.err.split("\n").length, 1, r.err);
  }
});

Deno.test("strata import, images ls/inspect/tag/rm, content ls/get/rm work on the sample", async () => {
  await using tmp = await makeTempDir();
  const root = join(tmp.path, "root");
  const sample = await buildSample(join(tmp.path, "layout"));
  const imp = await strata(["--root", root, "import", sample.layout]);
  assert.equal(imp.code, 0, imp.err);
  assert.match(imp.out, /localhost\/strata\/sample:latest/);

  const ls = await strata(["--root", root, "images", "ls"]);
  assert.equal(ls.code, 0, ls.err);
  assert.match(ls.out, /^REF\s+TYPE\s+DIGEST\s+SIZE\s+PLATFORMS\s+LABELS/);
  assert.ok(ls.out.includes(sample.manifest.digest));

  const json = await strata(["--root", root, "--json", "images", "ls"]);
  const parsed = JSON.parse(json.out) as { name: string }[];
  assert.deepEqual(parsed.map((i) => i.name), [sample.name]);

  const inspect = await strata(["--root", root, "images", "inspect", sample.name]);
  assert.equal(inspect.code, 0, inspect.err);
  assert.deepEqual(JSON.parse(inspect.out).config.rootfs.diff_ids, sample.diffIds);

  const tag = await strata(["--root", root, "images", "tag", sample.name, "example.com/copy:1"]);
  assert.equal(tag.code, 0, tag.err);
  assert.equal(tag.out, "example.com/copy:1");
  const again = await strata(["--root", root, "images", "tag", sample.name, "example.com/copy:1"]);
  assert.equal(again.code, 4, "tagging onto an existing name is AlreadyExists");
  const short = await strata(["--root", root, "images", "tag", sample.name, "busybox"]);
  assert.equal(short.out, "docker.io/library/busybox:latest");
  const q = await strata(["--root", root, "images", "ls", "-q", "name~=copy"]);
  assert.equal(q.out, "example.com/copy:1");

  const rm = await strata(["--root", root, "images", "rm", "busybox", "example.com/copy:1"]);
  assert.equal(rm.code, 0, rm.err);
  const missing = await strata(["--root", root, "images", "rm", "example.com/copy:1"]);
  assert.equal(missing.code, 3);
  assert.match(missing.err, /^strata: .*example\.com\/copy:1/);

  const blobs = await strata(["--root", root, "content", "ls", "-q"]);
  assert.ok(blobs.out.split("\n").includes(sample.manifest.digest));
  const label = await strata([
    "--root",
    root,
    "content",
    "label",
    sample.manifest.digest,
    "team=a",
  ]);
  assert.equal(label.code, 0, label.err);
  assert.match(label.out, /team=a/);
  const filtered = await strata(["--root", root, "content", "ls", "-q", "labels.team==a"]);
  assert.equal(filtered.out, sample.manifest.digest);

  const get = await strataProcess(["--root", root, "content", "get", sample.manifest.digest]);
  assert.equal(get.code, 0, get.err);
  const onDisk = await Deno.readFile(
    join(sample.layout, "blobs", "sha256", sample.manifest.digest.slice(7)),
  );
  assert.deepEqual(get.bytes, onDisk);

  const bad = await strata(["--root", root, "content", "get", "sha256:nothex"]);
  assert.equal(bad.code, 2);
  const absent = await strata(["--root", root, "content", "get", "sha256:" + "0".repeat(64)]);
  assert.equal(absent.code, 3);
});

Deno.test("strata content ingest stores standard input and verifies the expected digest", async () => {
  await using tmp = await makeTempDir();
  const root = join(tmp.path, "root");
  const data = new TextEncoder().encode("hello strata\n");
  const digest = "sha256:" +
    Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", data)))
      .map((b) => b.toString(16).padStart(2, "0")).join("");
  const wrong = await strataProcess(
    ["--root", root, "content", "ingest", "--expected-digest", "sha256:" + "1".repeat(64), "r1"],
    data,
  );
  assert.equal(wrong.code, 5, wrong.err);
  const ok = await strataProcess(
    ["--root", root, "content", "ingest", "--expected-digest", digest, "r1"],
    data,
  );
  assert.equal(ok.code, 0, ok.err);
  assert.equal(ok.out.trim(), digest);
  const dup = await strataProcess([
    "--root",
    root,
    "content",
    "ingest",
    "--expected-digest",
    digest,
    "r2",
  ], data);
  assert.equal(dup.code, 4, dup.err);
});

Deno.test("strata reads --config and reports a broken one", async () => {
  await using tmp = await makeTempDir();
  const cfg = join(tmp.path, "config.toml");
  await Deno.writeTextFile(cfg, `root = "${join(tmp.path, "from-config")}"\n`);
  const r = await strata(["--config", cfg, "images", "ls", "-q"]);
  assert.equal(r.code, 0, r.err);
  await Deno.stat(join(tmp.path, "from-config", "metadata.db"));
  await Deno.writeTextFile(cfg, "root = [\n");
  const broken = await strata(["--config", cfg, "images", "ls"]);
  assert.equal(broken.code, 2);
  assert.match(broken.err, /Cannot parse config file/);
  const missing = await strata(["--config", join(tmp.path, "nope.toml"), "images", "ls"]);
  assert.equal(missing.code, 3);
});

Deno.test("strata apply prints skipped names with bytes that are not UTF-8 and control characters escaped", async () => {
  await using tmp = await makeTempDir();
  const name = (...parts: (string | number[])[]) =>
    new Uint8Array(
      parts.flatMap((p) => typeof p === "string" ? [...new TextEncoder().encode(p)] : p),
    );
  // AUFS hardlink metadata is never applied: it is reported as skipped, under its own name.
  const layer = rawTar(
    rawEntry({ name: name(".wh..wh.plnk/caf", [0xe9]), typeflag: "0" }, new Uint8Array(1)),
    rawEntry({ name: name(".wh..wh.plnk/new\nline"), typeflag: "0" }, new Uint8Array(1)),
    rawEntry({ name: "kept", typeflag: "0" }, new Uint8Array(1)),
  );
  const file = join(tmp.path, "layer.tar");
  await Deno.writeFile(file, layer);
  const dir = join(tmp.path, "root");
  await Deno.mkdir(dir);
  const r = await strata(["apply", file, dir]);
  assert.equal(r.code, 0, r.err);
  const lines = r.err.split("\n");
  assert.ok(lines.some((l) => l.startsWith("skipped .wh..wh.plnk/caf\\xe9: AUFS")), r.err);
  assert.ok(lines.some((l) => l.startsWith("skipped .wh..wh.plnk/new\\x0aline: AUFS")), r.err);
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["kept"]);
});
