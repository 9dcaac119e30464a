/**
 * `deno task demo`: builds the built-in sample image, imports it with `strata import` into a
 * fresh root, lists it with `strata images ls`, prints what each layer holds, then unpacks it
 * with `strata unpack` into the native snapshotter and (as root) the overlayfs one and prints
 * the resulting root filesystem.
 *
 * Usage: deno task demo [--root DIR] [--keep]
 */
import { createGunzip } from "node:zlib";
import { Readable } from "node:stream";
import { parseArgs } from "node:util";
import { join } from "node:path";
import { main } from "../cli.ts";
import { Client } from "../client.ts";
import { readTar } from "../diff/tar/mod.ts";
import { resolveManifest } from "../images/manifest.ts";
import { buildSample } from "./build.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { root: { type: "string" }, keep: { type: "boolean" } },
});
const work = await Deno.makeTempDir({ prefix: "strata-demo-" });
const root = values.root ?? join(work, "root");
const step = (s: string) => console.log(`\n$ ${s}`);

async function printTree(dir: string, prefix = ""): Promise<void> {
  const entries = [];
  for await (const e of Deno.readDir(join(dir, prefix))) entries.push(e.name);
  for (const name of entries.sort()) {
    const rel = prefix ? `${prefix}/${name}` : name;
    const st = await Deno.lstat(join(dir, rel));
    const mode = ((st.mode ?? 0) & 0o7777).toString(8).padStart(4, "0");
    const kind = st.isSymlink ? "symlink" : st.isDirectory ? "directory" : "file";
    const link = st.isSymlink ? ` -> ${await Deno.readLink(join(dir, rel))}` : "";
    const nlink = !st.isDirectory && (st.nlink ?? 1) > 1 ? ` (${st.nlink} links)` : "";
    console.log(
      `  ${kind.padEnd(9)} ${mode} ${String(st.size).padStart(5)}  ${rel}${link}${nlink}`,
    );
    if (st.isDirectory) await printTree(dir, rel);
  }
}
try {
  const sample = await buildSample(join(work, "layout"));
  console.log(`Built the sample image ${sample.name} as an OCI layout in ${sample.layout}`);
  step(`strata --root ${root} import ${sample.layout}`);
  let code = await main(["--root", root, "import", sample.layout]);
  if (code !== 0) Deno.exit(code);
  step(`strata --root ${root} images ls`);
  code = await main(["--root", root, "images", "ls"]);
  if (code !== 0) Deno.exit(code);

  const client = Client.open({ root });
  try {
    const image = client.getImage(sample.name);
    const { manifest } = await resolveManifest(client.content, image.target, {
      platform: image.platform,
    });
    const diffIds = await image.rootFS();
    for (const [i, layer] of manifest.layers.entries()) {
      console.log(`\nlayer ${i + 1}: ${layer.digest} (${layer.size} bytes, diff ID ${diffIds[i]})`);
      const gunzip = Readable.from(client.content.stream(layer.digest)).pipe(createGunzip());
      for await (const { header: h } of readTar(gunzip)) {
        const mode = h.mode.toString(8).padStart(4, "0");
        const what = h.type === "symlink"
          ? ` -> ${h.linkname}`
          : h.type === "hardlink"
          ? ` (hardlink to ${h.linkname})`
          : h.name.split("/").pop()!.startsWith(".wh.")
          ? "  (whiteout: deletes " + h.name.replace(/\.wh\./, "") + ")"
          : "";
        console.log(
          `  ${h.type.padEnd(9)} ${mode} ${String(h.size).padStart(5)}  ${h.name}${what}`,
        );
      }
    }
    console.log(`\nimage size: ${await image.size()} bytes; chain of ${diffIds.length} layers`);
  } finally {
    client.close();
  }

  const snapshotters = Deno.uid() === 0 ? ["native", "overlayfs"] : ["native"];
  if (Deno.uid() !== 0) console.log("\n(not root: overlayfs needs mount privileges, skipped)");
  for (const sn of snapshotters) {
    step(`strata --root ${root} unpack --snapshotter ${sn} ${sample.name}`);
    code = await main(["--root", root, "unpack", "--snapshotter", sn, sample.name]);
    if (code !== 0) Deno.exit(code);
  }
  const top = snapshotters.at(-1)!;
  step(`strata --root ${root} snapshots --snapshotter ${top} tree`);
  await main(["--root", root, "snapshots", "--snapshotter", top, "tree"]);
  const target = join(work, "mnt");
  const checkout = Deno.uid() === 0
    ? ["images", "mount", "--snapshotter", top, sample.name, target]
    : ["rootfs", sample.name, target];
  step(`strata --root ${root} ${checkout.join(" ")}`);
  code = await main(["--root", root, ...checkout]);
  if (code !== 0) Deno.exit(code);
  try {
    console.log(`\nthe image's root filesystem (${target}):`);
    await printTree(target);
  } finally {
    if (Deno.uid() === 0) {
      step(`strata --root ${root} images unmount --rm ${target}`);
      await main(["--root", root, "images", "unmount", "--rm", "--snapshotter", top, target]);
    }
  }
} finally {
  if (!values.keep) await Deno.remove(work, { recursive: true });
  else console.log(`\nkept ${work}`);
}
