// Child of the non-root native snapshotter test, run as an unprivileged user:
//   deno run --no-config -A _native_nonroot_child.ts <strata root>
// Prepares, writes, commits, prepares a child (a copy), views it, removes everything, and prints
// what it saw as JSON.
import { join } from "node:path";
import { MetadataDb } from "../../metadata/db.ts";
import { NativeSnapshotter } from "../../snapshotters/native.ts";
import { AT_FDCWD, mknodat, S_IFIFO } from "../../sys/mod.ts";

const root = Deno.args[0];
if (root === undefined) throw new Error("Cannot run child: usage: <strata root>");
const warnings: string[] = [];
const db = MetadataDb.open(root);
const sn = new NativeSnapshotter(join(root, "snapshots", "native"), db, {
  onWarning: (message) => warnings.push(message),
});

function list(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (
    const entry of [...Deno.readDirSync(join(dir, prefix))].sort((a, b) => a.name < b.name ? -1 : 1)
  ) {
    const rel = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isFile) out.push(`${rel}=${Deno.readTextFileSync(join(dir, rel))}`);
    else if (entry.isSymlink) out.push(`${rel}->${Deno.readLinkSync(join(dir, rel))}`);
    else if (entry.isDirectory) out.push(`${rel}/`, ...list(dir, rel));
    else out.push(`${rel}?`);
  }
  return out;
}

const [base] = await sn.prepare("base-active");
Deno.writeTextFileSync(join(base!.source, "hello.txt"), "hello");
Deno.mkdirSync(join(base!.source, "ro/inner"), { recursive: true });
Deno.writeTextFileSync(join(base!.source, "ro/inner/file"), "inner");
Deno.chmodSync(join(base!.source, "ro/inner"), 0o555);
Deno.chmodSync(join(base!.source, "ro"), 0o555);
Deno.symlinkSync("hello.txt", join(base!.source, "link"));
mknodat(AT_FDCWD, join(base!.source, "fifo"), S_IFIFO | 0o644, 0);
await sn.commit("base", "base-active");

const [child] = await sn.prepare("child", { parent: "base" });
const copied = list(child!.source);
Deno.writeTextFileSync(join(child!.source, "extra.txt"), "extra");
await sn.commit("top", "child");
const [view] = await sn.view("look", { parent: "top" });
const viewed = list(view!.source);
const usage = await sn.usage("top");

await sn.remove("look");
await sn.remove("top");
await sn.remove("base");
const left = [...Deno.readDirSync(join(root, "snapshots", "native", "snapshots"))].map((e) =>
  e.name
);
await sn.close();
db.close();
console.log(JSON.stringify({ uid: Deno.uid(), copied, viewed, usage, warnings, left }));
