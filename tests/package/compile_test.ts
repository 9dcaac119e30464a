// `deno compile` embeds only the modules reachable by static imports: a worker's module must be
// named with `--include`, or the single binary fails when it starts the worker. The compile task
// cannot run offline (it downloads denort), so this checks that it names every worker module.

import assert from "node:assert/strict";
import { join, relative } from "node:path";

const REPO = join(import.meta.dirname!, "..", "..");

async function* sources(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) {
      if (["tests", "bench", "node_modules", ".git"].includes(entry.name)) continue;
      yield* sources(path);
    } else if (entry.name.endsWith(".ts")) {
      yield path;
    }
  }
}

Deno.test("the compile task includes every worker module the library starts", async () => {
  const config = JSON.parse(await Deno.readTextFile(join(REPO, "deno.json"))) as {
    tasks: Record<string, string>;
  };
  const task = config.tasks.compile ?? "";
  const included = [...task.matchAll(/--include[= ](\S+)/g)].map((m) => m[1]!);
  const workers: string[] = [];
  for await (const file of sources(REPO)) {
    const text = await Deno.readTextFile(file);
    for (
      const m of text.matchAll(/new Worker\(\s*new URL\(\s*"([^"]+)"\s*,\s*import\.meta\.url/g)
    ) {
      workers.push(relative(REPO, join(file, "..", m[1]!)));
    }
  }
  assert.ok(workers.length > 0, "the unpack worker is found");
  for (const w of workers) assert.ok(included.includes(w), `compile task lacks --include ${w}`);
});
