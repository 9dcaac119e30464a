// Child process of the two-process contract test:
//   deno run -A _contract_child.ts <snapshotter> <strata root> <prefix> <count>
// Prepares and commits a chain of its own snapshots; every fifth step it also races the other
// process for a shared key (`shared-<i>`, kept active) and a shared committed name
// (`shared-c-<i>`). Prints a ChildResult as JSON.
import { join } from "node:path";
import { MetadataDb } from "../../metadata/db.ts";
import { openSnapshotter } from "../../snapshotters/registry.ts";
import { AlreadyExists } from "../../errors.ts";
import { type ChildResult, snapshotId } from "./contract_test.ts";

const [name, root, prefix, countText] = Deno.args;
if (name === undefined || root === undefined || prefix === undefined || countText === undefined) {
  throw new Error("Cannot run child: usage: <snapshotter> <root> <prefix> <count>");
}
const db = MetadataDb.open(root);
const sn = await openSnapshotter(name, { root, db });
const result: ChildResult = {
  ids: [],
  committed: [],
  sharedKeys: [],
  preparedShared: [],
  existsShared: [],
  sharedNames: [],
  committedShared: [],
  existsSharedName: [],
};
let parent: string | undefined;
for (let i = 0; i < Number(countText); i++) {
  if (i % 5 === 0) {
    const key = `shared-${i}`;
    result.sharedKeys.push(key);
    try {
      result.ids.push(snapshotId(await sn.prepare(key)));
      result.preparedShared.push(key);
    } catch (err) {
      if (!(err instanceof AlreadyExists)) throw err;
      result.existsShared.push(key);
    }
    const own = `${prefix}-s-${i}`;
    const shared = `shared-c-${i}`;
    result.sharedNames.push(shared);
    result.ids.push(snapshotId(await sn.prepare(own)));
    try {
      await sn.commit(shared, own);
      result.committedShared.push(shared);
    } catch (err) {
      if (!(err instanceof AlreadyExists)) throw err;
      result.existsSharedName.push(shared);
      await sn.remove(own);
    }
    continue;
  }
  const key = `${prefix}-${i}`;
  const mounts = await sn.prepare(key, parent === undefined ? {} : { parent });
  result.ids.push(snapshotId(mounts));
  const [first] = mounts;
  if (mounts.length === 1 && first?.type === "bind") {
    await Deno.writeTextFile(join(first.source, `${prefix}-${i}`), String(i));
  }
  const committed = `${prefix}-c-${i}`;
  await sn.commit(committed, key);
  result.committed.push(committed);
  parent = committed;
}
await sn.close();
db.close();
console.log(JSON.stringify(result));
