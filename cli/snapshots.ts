import { InvalidArgument } from "../errors.ts";
import { compareSnapshot } from "../diff/compare.ts";
import { mountAll, unmountAll } from "../mount/mod.ts";
import type { SnapshotInfo, Snapshotter } from "../snapshotters/mod.ts";
import {
  type Command,
  type CommandContext,
  type CommandGroup,
  formatLabels,
  humanSize,
  parseLabelArgs,
  table,
  type Values,
} from "./_command.ts";

const SNAPSHOTTER_OPTION = {
  snapshotter: {
    type: "string" as const,
    arg: "NAME",
    help:
      "Snapshotter to use: overlayfs or native (default: overlayfs on Linux; env STRATA_SNAPSHOTTER)",
  },
};

/** Opens the snapshotter a command names. */
export async function snapshotterFor(ctx: CommandContext, values: Values): Promise<Snapshotter> {
  const client = await ctx.client();
  const name = typeof values.snapshotter === "string" ? values.snapshotter : undefined;
  return await client.snapshotter(name);
}

function kindName(k: SnapshotInfo["kind"]): string {
  return k[0]!.toUpperCase() + k.slice(1);
}

function printMounts(ctx: CommandContext, mounts: unknown, target: string | undefined): void {
  const list = mounts as { type: string; source: string; options: string[] }[];
  if (ctx.json || target === undefined) {
    ctx.out(JSON.stringify(list, null, 2));
    return;
  }
  for (const m of list) {
    ctx.out(`mount -t ${m.type} ${m.source} ${target} -o ${m.options.join(",")}`);
  }
}

function leaf(
  name: string,
  summary: string,
  usage: string,
  args: [number, number],
  run: Command["run"],
  options: Command["options"] = {},
  aliases?: string[],
): Command {
  return {
    name,
    summary,
    usage: `snapshots ${usage}`,
    args,
    options: { ...SNAPSHOTTER_OPTION, ...options },
    run,
    ...(aliases ? { aliases } : {}),
  };
}

/** `strata snapshots ...`: a snapshotter's snapshots. */
export const snapshotsGroup: CommandGroup = {
  name: "snapshots",
  aliases: ["snapshot"],
  summary:
    "Manage snapshots (ls, tree, info, mounts, prepare, view, commit, rm, usage, label, diff)",
  sharedOptions: ["snapshotter"],
  commands: [
    leaf(
      "ls",
      "List snapshots (filters: kind, name, parent, labels.KEY)",
      "ls [--snapshotter NAME] [FILTER...]",
      [0, Infinity],
      async (ctx, values, filters) => {
        const sn = await snapshotterFor(ctx, values);
        const infos = await sn.list(filters);
        if (ctx.json) return ctx.out(JSON.stringify(infos, null, 2));
        for (
          const l of table(
            ["KEY", "PARENT", "KIND"],
            infos.map((i) => [i.name, i.parent ?? "", kindName(i.kind)]),
          )
        ) ctx.out(l);
      },
      {},
      ["list"],
    ),
    leaf(
      "tree",
      "Show snapshots as a tree, parents first",
      "tree [--snapshotter NAME]",
      [0, 0],
      async (ctx, values) => {
        const sn = await snapshotterFor(ctx, values);
        const infos = await sn.list();
        const kids = new Map<string, SnapshotInfo[]>();
        for (const i of infos) {
          const p = i.parent ?? "";
          kids.set(p, [...(kids.get(p) ?? []), i]);
        }
        const print = (parent: string, depth: number) => {
          for (const i of kids.get(parent) ?? []) {
            ctx.out(`${depth === 0 ? "" : " ".repeat(depth * 2 - 2) + "\\_ "}${i.name}`);
            print(i.name, depth + 1);
          }
        };
        print("", 0);
      },
    ),
    leaf(
      "info",
      "Print a snapshot's information as JSON",
      "info [--snapshotter NAME] KEY",
      [1, 1],
      async (ctx, values, [key]) => {
        const sn = await snapshotterFor(ctx, values);
        ctx.out(JSON.stringify(await sn.stat(key!), null, 2));
      },
    ),
    leaf(
      "mounts",
      "Print the mount commands of an active or view snapshot",
      "mounts [--snapshotter NAME] TARGET KEY",
      [2, 2],
      async (ctx, values, [target, key]) => {
        const sn = await snapshotterFor(ctx, values);
        printMounts(ctx, await sn.mounts(key!), target);
      },
    ),
    ...(["prepare", "view"] as const).map((kind) =>
      leaf(
        kind,
        kind === "prepare"
          ? "Create an active (writable) snapshot; prints its mounts"
          : "Create a read-only view; prints its mounts",
        `${kind} [--snapshotter NAME] [--target DIR] [--label K=V] KEY [PARENT]`,
        [1, 2],
        async (ctx, values, [key, parent]) => {
          const sn = await snapshotterFor(ctx, values);
          const labels = {
            "containerd.io/gc.root": new Date().toISOString(),
            ...parseLabelArgs(labelValues(values)),
          };
          const opts = { labels, ...(parent ? { parent } : {}) };
          const mounts = kind === "prepare"
            ? await sn.prepare(key!, opts)
            : await sn.view(key!, opts);
          const target = typeof values.target === "string" ? values.target : undefined;
          printMounts(ctx, mounts, target);
        },
        {
          target: { type: "string", arg: "DIR", help: "Print mount commands for DIR" },
          label: { type: "string", arg: "K=V", multiple: true, help: "Label the snapshot" },
        },
      )
    ),
    leaf(
      "commit",
      "Commit an active snapshot under a new name",
      "commit [--snapshotter NAME] [--label K=V] NAME KEY",
      [2, 2],
      async (ctx, values, [name, key]) => {
        const sn = await snapshotterFor(ctx, values);
        const labels = {
          "containerd.io/gc.root": new Date().toISOString(),
          ...parseLabelArgs(labelValues(values)),
        };
        await sn.commit(name!, key!, { labels });
        ctx.out(name!);
      },
      { label: { type: "string", arg: "K=V", multiple: true, help: "Label the snapshot" } },
    ),
    leaf(
      "rm",
      "Remove snapshots (children first)",
      "rm [--snapshotter NAME] KEY...",
      [1, Infinity],
      async (ctx, values, keys) => {
        const sn = await snapshotterFor(ctx, values);
        for (const k of keys) {
          await sn.remove(k);
          ctx.out(k);
        }
      },
      {},
      ["delete", "del", "remove"],
    ),
    leaf(
      "usage",
      "Show disk usage of snapshots (all when no keys)",
      "usage [--snapshotter NAME] [--bytes] [KEY...]",
      [0, Infinity],
      async (ctx, values, keys) => {
        const sn = await snapshotterFor(ctx, values);
        const names = keys.length > 0 ? keys : (await sn.list()).map((i) => i.name);
        const rows = [];
        for (const k of names) rows.push({ key: k, ...(await sn.usage(k)) });
        if (ctx.json) return ctx.out(JSON.stringify(rows, null, 2));
        for (
          const l of table(
            ["KEY", "SIZE", "INODES"],
            rows.map((r) => [
              r.key,
              values.bytes ? String(r.size) : humanSize(r.size),
              String(r.inodes),
            ]),
          )
        ) ctx.out(l);
      },
      { bytes: { type: "boolean", short: "b", help: "Show sizes in bytes" } },
    ),
    leaf(
      "diff",
      "Write the changes of a snapshot against its parent as a layer blob; prints its descriptor",
      "diff [--snapshotter NAME] [--media-type TYPE] [--ref REF] KEY",
      [1, 1],
      async (ctx, values, [key]) => {
        const sn = await snapshotterFor(ctx, values);
        const client = await ctx.client();
        const result = await compareSnapshot(client.content, sn, key!, {
          ...(typeof values["media-type"] === "string" ? { mediaType: values["media-type"] } : {}),
          ...(typeof values.ref === "string" ? { ref: values.ref } : {}),
        });
        ctx.out(JSON.stringify({ ...result.descriptor, diffId: result.diffId }, null, 2));
      },
      {
        "media-type": {
          type: "string",
          arg: "TYPE",
          help: "application/vnd.oci.image.layer.v1.tar[+gzip|+zstd] (default +gzip)",
        },
        ref: { type: "string", arg: "REF", help: "Ingest reference for the blob" },
      },
    ),
    leaf(
      "label",
      "Set labels on a snapshot (KEY= removes KEY); prints the resulting labels",
      "label [--snapshotter NAME] KEY [K=V...]",
      [1, Infinity],
      async (ctx, values, [key, ...pairs]) => {
        const sn = await snapshotterFor(ctx, values);
        const labels = parseLabelArgs(pairs);
        const info = pairs.length === 0 ? await sn.stat(key!) : await sn.update(
          { name: key!, labels },
          { fieldpaths: Object.keys(labels).map((k) => `labels.${k}`) },
        );
        ctx.out(ctx.json ? JSON.stringify(info.labels) : formatLabels(info.labels));
      },
    ),
  ],
};

function labelValues(values: Values): string[] {
  const v = values.label;
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

/** `strata mount`: mount a snapshot key at a directory. */
export const mountCommand: Command = {
  name: "mount",
  summary: "Mount an active or view snapshot at a directory",
  usage: "mount [--snapshotter NAME] KEY DIR",
  options: SNAPSHOTTER_OPTION,
  args: [2, 2],
  async run(ctx, values, [key, dir]) {
    const sn = await snapshotterFor(ctx, values);
    const mounts = await sn.mounts(key!);
    try {
      await Deno.mkdir(dir!, { recursive: true });
    } catch (err) {
      throw new InvalidArgument(`Cannot mount "${key}" at "${dir}": ${(err as Error).message}`);
    }
    await mountAll(mounts, dir!);
    ctx.out(dir!);
  },
};

/** `strata unmount`: unmount a directory. */
export const unmountCommand: Command = {
  name: "unmount",
  aliases: ["umount"],
  summary: "Unmount what is mounted at a directory",
  usage: "unmount DIR",
  args: [1, 1],
  async run(ctx, _values, [dir]) {
    await unmountAll(dir!);
    ctx.out(dir!);
  },
};
