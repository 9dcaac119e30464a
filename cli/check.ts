import {
  AlreadyExists,
  FailedPrecondition,
  InvalidArgument,
  isNotFound,
  StrataError,
} from "../errors.ts";
import { chainIds, checkImage } from "../images/mod.ts";
import { mountAll, unmountAll } from "../mount/mod.ts";
import type { Mount } from "../mount/types.ts";
import { type CheckDifference, checkUnpacked } from "../unpack/check.ts";
import {
  type Command,
  humanSize,
  type OptionSpec,
  printableName,
  table,
  type Values,
} from "./_command.ts";
import { findImage, platformOption } from "./_images.ts";
import { syncFsOption } from "./unpack.ts";

const SNAPSHOTTER: OptionSpec = {
  type: "string",
  arg: "NAME",
  help: "overlayfs or native (default: overlayfs on Linux; env STRATA_SNAPSHOTTER)",
};
const PLATFORM: OptionSpec = { type: "string", multiple: true, arg: "P", help: "Platform to use" };

function snapshotterName(values: Values): string | undefined {
  return typeof values.snapshotter === "string" ? values.snapshotter : undefined;
}

/** One line for a difference: what, where, expected and found, and in which snapshot. */
function formatDifference(d: CheckDifference): string {
  const where = d.path === "" ? "(layer)" : printableName(d.path);
  const expected = printableName(d.expected);
  const actual = printableName(d.actual);
  return `${d.problem} ${where}: expected ${expected}, found ${actual} (snapshot ${d.chainId}, layer ${d.layer})`;
}

/** `strata check`: verify that an unpacked image's snapshots still hold what its layers say. */
export const checkCommand: Command = {
  name: "check",
  summary: "Verify an unpacked image's snapshots against its layers (sizes, digests, types, links)",
  usage: "check [--snapshotter NAME] [--platform P] [--json] IMAGE",
  options: {
    snapshotter: SNAPSHOTTER,
    platform: PLATFORM,
    json: { type: "boolean", help: "Print the report as JSON (like the global --json)" },
  },
  args: [1, 1],
  async run(ctx, values, [name]) {
    const json = ctx.json || Boolean(values.json);
    const client = await ctx.client();
    const record = findImage(client, name!);
    const platform = platformOption(values);
    const report = await checkUnpacked(client, record, {
      ...(snapshotterName(values) !== undefined ? { snapshotter: snapshotterName(values)! } : {}),
      ...(platform ? { platform } : {}),
    });
    const n = report.differences.length;
    if (json) {
      ctx.out(JSON.stringify(report, null, 2));
    } else {
      for (const d of report.differences) ctx.out(formatDifference(d));
    }
    const paths = report.layers.reduce((sum, l) => sum + l.checked, 0);
    if (n === 0) {
      if (!json) {
        ctx.out(
          `ok: ${report.image} in ${report.snapshotter}: ${report.layers.length} layers, ${paths} paths match`,
        );
      }
      return 0;
    }
    const err = new FailedPrecondition(
      `Image "${report.image}" in snapshotter "${report.snapshotter}" differs from its layers: ${n} difference(s)`,
    );
    ctx.err(`strata: ${err.message}`);
    return err.exitCode;
  },
};

/** `strata images check`: ctr's completeness check (blobs present) and whether it is unpacked. */
export const imagesCheckCommand: Command = {
  name: "check",
  summary: "Check that images' blobs are present and whether they are unpacked",
  usage: "images check [--quiet] [--snapshotter NAME] [FILTER...]",
  options: {
    quiet: { type: "boolean", short: "q", help: "Print only complete, unpacked images' names" },
    snapshotter: SNAPSHOTTER,
  },
  args: [0, Infinity],
  async run(ctx, values, filters) {
    const client = await ctx.client();
    const rows: {
      name: string;
      mediaType: string;
      digest: string;
      status: string;
      size: string;
      unpacked: boolean;
      complete: boolean;
    }[] = [];
    let code = 0;
    for (const image of client.images.list(filters)) {
      let status: string;
      let size: string;
      let complete = true;
      try {
        const r = await checkImage(client.content, image.target, client.platform);
        const sum = (ds: { size: number }[]) => ds.reduce((s, d) => s + d.size, 0);
        status = r.missing.length > 0 ? "incomplete" : "complete";
        if (r.missing.length > 0) complete = false;
        if (r.available) {
          status += ` (${r.present.length}/${r.required.length})`;
          size = `${humanSize(sum(r.present))}/${humanSize(sum(r.required))}`;
        } else {
          status = `unavailable (${r.present.length}/?)`;
          size = `${humanSize(sum(r.present))}/?`;
          complete = false;
        }
      } catch (err) {
        if (!(err instanceof StrataError)) throw err;
        ctx.err(`strata: cannot check image "${image.name}": ${err.message}`);
        code ||= err.exitCode;
        status = "error";
        size = "-";
        complete = false;
      }
      let unpacked = false;
      try {
        unpacked = await client.getImage(image.name).isUnpacked(snapshotterName(values));
      } catch (err) {
        if (!(err instanceof StrataError)) throw err;
        ctx.err(`strata: cannot tell whether "${image.name}" is unpacked: ${err.message}`);
        code ||= err.exitCode;
      }
      rows.push({
        name: image.name,
        mediaType: image.target.mediaType,
        digest: image.target.digest,
        status,
        size,
        unpacked,
        complete,
      });
    }
    if (ctx.json) {
      ctx.out(JSON.stringify(rows, null, 2));
    } else if (values.quiet) {
      for (const r of rows) if (r.complete && r.unpacked) ctx.out(r.name);
    } else {
      for (
        const l of table(
          ["REF", "TYPE", "DIGEST", "STATUS", "SIZE", "UNPACKED"],
          rows.map((r) => [r.name, r.mediaType, r.digest, r.status, r.size, String(r.unpacked)]),
        )
      ) ctx.out(l);
    }
    return code;
  },
};

/** `strata images usage`: disk usage of an unpacked image's snapshots, top to root. */
export const imagesUsageCommand: Command = {
  name: "usage",
  summary: "Show the disk usage of an unpacked image's snapshots, from its top to the root",
  usage: "images usage [--snapshotter NAME] [--platform P] IMAGE",
  options: { snapshotter: SNAPSHOTTER, platform: PLATFORM },
  args: [1, 1],
  async run(ctx, values, [name]) {
    const client = await ctx.client();
    const record = findImage(client, name!);
    const platform = platformOption(values);
    const image = client.getImage(record.name, platform ? { platform } : {});
    const sn = await client.snapshotter(snapshotterName(values));
    if (!(await image.isUnpacked(sn.name))) {
      throw new FailedPrecondition(
        `Cannot show the usage of image "${record.name}": it is not unpacked in snapshotter "${sn.name}"`,
      );
    }
    const chain = chainIds(await image.rootFS());
    const rows = [];
    for (let i = chain.length - 1; i >= 0; i--) {
      rows.push({ key: chain[i]!, ...(await sn.usage(chain[i]!)) });
    }
    if (ctx.json) return ctx.out(JSON.stringify(rows, null, 2));
    for (
      const l of table(
        ["KEY", "SIZE", "INODES"],
        rows.map((r) => [r.key, humanSize(r.size), String(r.inodes)]),
      )
    ) ctx.out(l);
  },
};

/** `strata images mount`: unpack an image and mount a view (or a writable snapshot) of it. */
export const imagesMountCommand: Command = {
  name: "mount",
  summary: "Unpack an image and mount it at a directory (read-only unless --rw)",
  usage: "images mount [--rw] [--platform P] [--snapshotter NAME] [--sync-fs] IMAGE TARGET",
  options: {
    rw: { type: "boolean", help: "Mount a writable snapshot instead of a read-only view" },
    platform: PLATFORM,
    snapshotter: SNAPSHOTTER,
    "sync-fs": { type: "boolean", help: "syncfs(2) each layer before committing it" },
    "no-sync-fs": { type: "boolean", help: "Do not syncfs" },
  },
  args: [2, 2],
  async run(ctx, values, [name, target]) {
    const client = await ctx.client();
    const record = findImage(client, name!);
    const platform = platformOption(values);
    const image = client.getImage(record.name, platform ? { platform } : {});
    const result = await image.unpack(snapshotterName(values), {
      syncFs: syncFsOption(ctx, values),
    });
    ctx.out(result.chainId);
    const sn = await client.snapshotter(result.snapshotter);
    // The snapshot's key is the target, as ctr's; the gc.root label keeps prune away from it.
    const key = target!;
    const opts = {
      parent: result.chainId,
      labels: { "containerd.io/gc.root": new Date().toISOString() },
    };
    let mounts: Mount[];
    let created = true;
    try {
      mounts = values.rw ? await sn.prepare(key, opts) : await sn.view(key, opts);
    } catch (err) {
      if (!(err instanceof AlreadyExists)) throw err;
      mounts = await sn.mounts(key);
      created = false;
    }
    try {
      try {
        await Deno.mkdir(target!, { recursive: true });
      } catch (err) {
        throw new InvalidArgument(
          `Cannot mount image "${record.name}" at "${target}": ${(err as Error).message}`,
        );
      }
      await mountAll(mounts, target!);
    } catch (err) {
      await unmountAll(target!).catch(() => {});
      if (created) {
        await sn.remove(key).catch((e) => {
          if (!isNotFound(e)) ctx.err(`strata: cannot remove snapshot "${key}": ${e.message}`);
        });
      }
      throw err;
    }
    ctx.out(target!);
  },
};

/** `strata images unmount`: unmount an image mounted with `images mount`. */
export const imagesUnmountCommand: Command = {
  name: "unmount",
  aliases: ["umount"],
  summary: "Unmount an image mounted with 'images mount' (--rm also removes its snapshot)",
  usage: "images unmount [--rm] [--snapshotter NAME] TARGET",
  options: {
    rm: { type: "boolean", help: "Remove the snapshot named TARGET too" },
    snapshotter: SNAPSHOTTER,
  },
  args: [1, 1],
  async run(ctx, values, [target]) {
    await unmountAll(target!);
    if (values.rm) {
      const client = await ctx.client();
      const sn = await client.snapshotter(snapshotterName(values));
      try {
        await sn.remove(target!);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    ctx.out(target!);
  },
};
