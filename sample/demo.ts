/**
 * `deno task demo`: builds the built-in sample image, imports it with `strata import` into a
 * fresh root, lists it with `strata images ls`, and prints what each layer holds.
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
} finally {
  if (!values.keep) await Deno.remove(work, { recursive: true });
  else console.log(`\nkept ${work}`);
}
