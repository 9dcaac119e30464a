// kill -9 during unpack: a child process runs `strata unpack` on a many-file image and is killed
// with SIGKILL after a random (seeded, printed) delay; then the image is unpacked again in this
// process. The second unpack must complete, and every committed snapshot must equal the same
// snapshot of a clean unpack in another root (tree comparison: types, modes, owners, sizes,
// content, links, xattrs, times) and pass checkUnpacked().
//
// Leftovers: like containerd, an unpack that dies leaves its active `extract-...` snapshot (and
// possibly a half-created snapshot directory) behind; nothing in the unpack path may remove
// another process's active snapshot, since that process may still be running. containerd's
// garbage collector removes such snapshots once the lease of the dead process expires; in Strata
// that is `strata prune` with expiring leases. The test asserts that such leftovers are only
// `extract-*` active snapshots (at most one per kill, never committed), that they do not disturb
// the next unpack, and that removing them and running the snapshotter's cleanup leaves no
// directory behind.
//
// Seed: STRATA_CRASH_SEED=<n> repeats a run (the seed is printed).

import assert from "node:assert/strict";
import { join } from "node:path";
import { Client } from "../../client.ts";
import { importArchive } from "../../images/archive/import.ts";
import { chainIds } from "../../images/manifest.ts";
import type { Snapshotter } from "../../snapshotters/types.ts";
import { checkUnpacked, snapshotDirs } from "../../unpack/check.ts";
import { makeTempDir, peerTest } from "../_peers.ts";
import { diffTrees, snapshotTree, type TreeEntry } from "../_tree.ts";
import { manyFileLayers, seededRandom, writeLayout } from "./_build_image.ts";

const ITERATIONS = 5;
/** Layers a parallel unpack applies at once (one per CPU). */
const PARALLEL = navigator.hardwareConcurrency ?? 1;
const CLI = new URL("../../cli.ts", import.meta.url).pathname;
const SEED = Number(Deno.env.get("STRATA_CRASH_SEED") ?? Math.floor(Math.random() * 2 ** 31));

/** When to kill a child: `delay` ms after its `afterLines`-th line of output (0: its start). */
interface KillPoint {
  afterLines: number;
  delay: number;
}

interface ChildRun {
  code: number;
  signal: Deno.Signal | null;
  /** Milliseconds from the start to the exit. */
  ms: number;
  /** Milliseconds from the start to each line of standard output. */
  lines: number[];
  stderr: string;
}

/** Runs the CLI in a child, killing it with SIGKILL at `kill` (if given). */
async function child(args: string[], kill?: KillPoint): Promise<ChildRun> {
  const started = performance.now();
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const arm = (delay: number) => {
    timer = setTimeout(() => {
      try {
        proc.kill("SIGKILL");
      } catch {
        // It has exited already.
      }
    }, delay);
  };
  if (kill?.afterLines === 0) arm(kill.delay);
  const lines: number[] = [];
  const stderr = new Response(proc.stderr).text();
  try {
    let pending = "";
    for await (const text of proc.stdout.pipeThrough(new TextDecoderStream())) {
      pending += text;
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        pending = pending.slice(nl + 1);
        lines.push(performance.now() - started);
        if (kill !== undefined && lines.length === kill.afterLines) arm(kill.delay);
      }
    }
    const status = await proc.status;
    return {
      code: status.code,
      signal: status.signal,
      ms: performance.now() - started,
      lines,
      stderr: await stderr,
    };
  } finally {
    clearTimeout(timer);
  }
}

function unpackArgs(root: string, snapshotter: string, image: string): string[] {
  return ["--root", root, "unpack", "--snapshotter", snapshotter, "--no-sync-fs", image];
}

/**
 * Every committed snapshot of the chain, as trees. The times of directories and of overlay
 * whiteouts are left out: whiteouts are made (and entries deleted) at apply time, so they carry
 * the time of the unpack, not of the layer.
 */
async function chainTrees(
  sn: Snapshotter,
  chain: string[],
): Promise<Map<string, TreeEntry>[]> {
  const trees = [];
  for (const c of chain) {
    const tree = await snapshotTree((await snapshotDirs(sn, c)).dir);
    for (const entry of tree.values()) {
      if (entry.type === "dir" || entry.type === "char") entry.mtime = 0;
    }
    trees.push(tree);
  }
  return trees;
}

/** Removes every snapshot (actives first, then children before parents) and cleans up. */
async function removeAll(sn: Snapshotter): Promise<void> {
  for (const info of await sn.list()) {
    if (info.kind !== "committed") await sn.remove(info.name);
  }
  for (;;) {
    const infos = await sn.list();
    if (infos.length === 0) break;
    const parents = new Set(infos.map((i) => i.parent));
    for (const info of infos) if (!parents.has(info.name)) await sn.remove(info.name);
  }
  await sn.cleanup();
}

for (const snapshotter of ["native", "overlayfs"]) {
  peerTest(
    `unpack killed with SIGKILL at random points completes on the next run and matches a clean unpack (${snapshotter})`,
    { tools: ["getfattr"], root: snapshotter === "overlayfs" },
    async () => {
      const random = seededRandom(SEED + (snapshotter === "native" ? 0 : 1));
      console.log(`crash test (${snapshotter}): seed ${SEED}`);
      await using tmp = await makeTempDir();
      const tars = await manyFileLayers({ seed: 11, filesPerLayer: 1500, maxSize: 12288 });
      const image = await writeLayout(join(tmp.path, "layout"), tars, { name: "test/crash:1" });
      const chain = chainIds(image.diffIds);

      // The reference: a clean unpack in its own root.
      const reference = Client.open({ root: join(tmp.path, "clean") });
      let expected: Map<string, TreeEntry>[];
      try {
        await importArchive(reference, image.layout);
        await reference.getImage(image.name).unpack(snapshotter);
        expected = await chainTrees(await reference.snapshotter(snapshotter), chain);
      } finally {
        reference.close();
      }

      const root = join(tmp.path, "crash");
      const setup = Client.open({ root });
      try {
        await importArchive(setup, image.layout);
      } finally {
        setup.close();
      }
      // A whole run, for when the CLI starts (measured with --version on a warm module cache)
      // and when each layer is committed (`strata unpack` prints a line per layer).
      await child(["--version"]);
      const startup = (await child(["--version"])).ms;
      const full = await child(unpackArgs(root, snapshotter, image.name));
      assert.equal(full.code, 0, full.stderr);
      assert.equal(full.lines.length, chain.length + 1, "a line per layer and a summary");
      {
        const client = Client.open({ root });
        try {
          await removeAll(await client.snapshotter(snapshotter));
        } finally {
          client.close();
        }
      }
      // The kill points: after a random layer's commit (or from the start), a random part of
      // the time the next layer took.
      const marks = [startup, ...full.lines.slice(0, chain.length)];
      const killPoint = (): KillPoint => {
        const layer = Math.floor(random() * chain.length);
        const span = Math.max(10, marks[layer + 1]! - marks[layer]!);
        const delay = Math.round((layer === 0 ? startup : 0) + span * random());
        return { afterLines: layer, delay };
      };

      // Runs that finish before their kill do not count: up to 3 times as many runs are made
      // to get ITERATIONS kills.
      let kills = 0;
      for (let i = 0; kills < ITERATIONS && i < 3 * ITERATIONS; i++) {
        const point = killPoint();
        const run = await child(unpackArgs(root, snapshotter, image.name), point);
        const killed = run.signal === "SIGKILL";
        if (killed) kills++;
        else assert.equal(run.code, 0, run.stderr);
        const client = Client.open({ root });
        try {
          const sn = await client.snapshotter(snapshotter);
          const before = await sn.list();
          const committed = before.filter((s) => s.kind === "committed").map((s) => s.name);
          assert.ok(committed.every((c) => chain.includes(c)), `unexpected ${committed}`);
          const leftovers = before.filter((s) => s.kind !== "committed");
          // A parallel unpack (overlayfs on several CPUs) has up to one active per CPU in flight,
          // and a view giving a layer its lower directories.
          const inFlight = snapshotter === "overlayfs" ? PARALLEL + 1 : 1;
          assert.ok(
            leftovers.length <= inFlight,
            `at most the killed run's actives (${inFlight}): ${leftovers.length}`,
          );
          console.log(
            `  ${snapshotter} #${i}: kill ${point.delay} ms after ${
              point.afterLines === 0 ? "the start" : `layer ${point.afterLines}`
            }: ${killed ? "killed" : "had finished"}; ${committed.length} of ${chain.length} ` +
              `layers committed, ${leftovers.length} active left`,
          );
          for (const s of leftovers) {
            assert.ok(s.kind === "active" || s.kind === "view", s.kind);
            assert.match(s.name, /^extract-\d+-[\w-]+ sha256:[0-9a-f]{64}$/);
          }

          const result = await client.getImage(image.name).unpack(snapshotter);
          assert.equal(result.chainId, chain.at(-1));
          const trees = await chainTrees(sn, chain);
          for (const [k, tree] of trees.entries()) {
            assert.deepEqual(
              diffTrees(tree, expected[k]!, { ignorePaths: ["."] }),
              [],
              `snapshot ${k + 1} of the chain differs from a clean unpack (seed ${SEED}, #${i})`,
            );
          }
          const report = await checkUnpacked(client, client.images.get(image.name), {
            snapshotter,
          });
          assert.deepEqual(report.differences, [], `seed ${SEED}, #${i}`);
          const after = (await sn.list()).filter((s) => s.kind !== "committed");
          assert.deepEqual(
            after.map((s) => s.name),
            leftovers.map((s) => s.name),
            "the next unpack leaves the dead run's active snapshot to garbage collection",
          );

          await removeAll(sn);
          const dirs = join(root, "snapshots", snapshotter, "snapshots");
          assert.deepEqual([...Deno.readDirSync(dirs)].map((e) => e.name), []);
        } finally {
          client.close();
        }
      }
      console.log(`  ${snapshotter}: ${kills} runs killed`);
    },
  );
}
