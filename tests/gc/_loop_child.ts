// Spawned by gc_test.ts while the test prunes the same root in a loop. Arguments:
//   unpack <root> <image> <iterations>: unpack into native and overlayfs, check, remove the chain.
//   import <root> <layout> <iterations>: import the layout, check every blob, delete the image.
// Prints "done <iterations>" when every iteration succeeded; any error fails the process.
import { Client } from "../../client.ts";
import { isNotFound } from "../../errors.ts";
import { importArchive } from "../../images/archive/import.ts";
import { chainIds, resolveManifest } from "../../images/manifest.ts";

const [mode, root, what, count] = Deno.args;
const iterations = Number(count);
const client = Client.open({ root: root! });

for (let i = 0; i < iterations; i++) {
  if (mode === "unpack") {
    for (const name of ["native", "overlayfs"]) {
      const image = client.getImage(what!);
      const result = await image.unpack(name, { syncFs: false });
      if (!result.layers.every((l) => l.applied)) {
        throw new Error(`iteration ${i}: ${name} reused snapshots it should have made`);
      }
      if (!(await image.isUnpacked(name))) throw new Error(`iteration ${i}: ${name} not unpacked`);
      // Remove the chain again so the next iteration applies every layer anew.
      const sn = await client.snapshotter(name);
      for (const id of chainIds(await image.rootFS()).reverse()) {
        try {
          await sn.remove(id);
        } catch (err) {
          if (!isNotFound(err)) throw err; // a prune took it first
        }
      }
    }
  } else if (mode === "import") {
    const { images } = await importArchive(client, what!);
    for (const record of images) {
      const { manifest } = await resolveManifest(client.content, record.target);
      for (const d of [record.target, manifest.config, ...manifest.layers]) {
        const info = await client.content.info(d.digest);
        const st = await Deno.stat(client.content.blobPath(d.digest));
        if (st.size !== info.size) throw new Error(`iteration ${i}: blob ${d.digest} damaged`);
      }
      client.images.delete(record.name);
    }
  } else {
    throw new Error(`unknown mode "${mode}"`);
  }
}
console.log(`done ${iterations}`);
client.close();
