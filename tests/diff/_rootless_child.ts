// Applies a layer file to a directory and prints the result as JSON; the rootless test runs it
// as an unprivileged user.

import { applyLayer } from "../../diff/apply.ts";
import { readFileChunks } from "./_helpers.ts";

const [layerPath, root] = Deno.args;
if (layerPath === undefined || root === undefined) {
  throw new Error("Usage: _rootless_child.ts LAYER ROOT");
}
const result = await applyLayer(readFileChunks(layerPath), root);
console.log(JSON.stringify(result));
