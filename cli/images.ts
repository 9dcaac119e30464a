import { InvalidArgument, StrataError } from "../errors.ts";
import {
  allPlatforms,
  exportArchive,
  formatPlatform,
  imagePlatforms,
  normalizeReference,
  readImageConfig,
  resolveManifest,
} from "../images/mod.ts";
import { type CommandGroup, formatLabels, humanSize, parseLabelArgs, table } from "./_command.ts";
import { findImage, platformOption } from "./_images.ts";
import {
  imagesCheckCommand,
  imagesMountCommand,
  imagesUnmountCommand,
  imagesUsageCommand,
} from "./check.ts";

/** `strata images ...`: the image store. */
export const imagesGroup: CommandGroup = {
  name: "images",
  aliases: ["image", "i"],
  summary: "Manage images (list, inspect, tag, remove, export, check, usage, mount, unmount)",
  commands: [
    {
      name: "ls",
      aliases: ["list"],
      summary: "List images (filters: name, target.digest, target.mediatype, labels.KEY)",
      usage: "images ls [--quiet] [FILTER...]",
      options: { quiet: { type: "boolean", short: "q", help: "Print only names" } },
      args: [0, Infinity],
      async run(ctx, values, filters) {
        const client = await ctx.client();
        const images = client.images.list(filters);
        if (values.quiet && !ctx.json) return images.forEach((i) => ctx.out(i.name));
        const rows = [];
        for (const image of images) {
          let size = "-";
          let platforms: string[] = [];
          try {
            size = humanSize(await client.getImage(image.name).size());
          } catch (err) {
            if (!(err instanceof StrataError)) throw err;
          }
          try {
            platforms = [
              ...new Set((await imagePlatforms(client.content, image.target)).map(formatPlatform)),
            ].sort();
          } catch (err) {
            if (!(err instanceof StrataError)) throw err;
          }
          rows.push({ image, size, platforms });
        }
        if (ctx.json) {
          return ctx.out(JSON.stringify(
            rows.map((r) => ({ ...r.image, size: r.size, platforms: r.platforms })),
            null,
            2,
          ));
        }
        for (
          const l of table(
            ["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"],
            rows.map((r) => [
              r.image.name,
              r.image.target.mediaType,
              r.image.target.digest,
              r.size,
              r.platforms.join(",") || "-",
              formatLabels(r.image.labels),
            ]),
          )
        ) ctx.out(l);
      },
    },
    {
      name: "inspect",
      summary: "Print an image's record, manifest and config as JSON",
      usage: "images inspect [--platform P] NAME",
      options: {
        platform: { type: "string", multiple: true, arg: "P", help: "Platform to show" },
      },
      args: [1, 1],
      async run(ctx, values, [name]) {
        const client = await ctx.client();
        const record = findImage(client, name!);
        const platform = platformOption(values) ?? client.platform;
        const { descriptor, manifest } = await resolveManifest(client.content, record.target, {
          platform,
        });
        const config = await readImageConfig(client.content, manifest.config);
        ctx.out(
          JSON.stringify({ ...record, manifestDescriptor: descriptor, manifest, config }, null, 2),
        );
      },
    },
    {
      name: "rm",
      aliases: ["delete", "del", "remove"],
      summary: "Remove image records (content stays until pruned)",
      usage: "images rm NAME...",
      args: [1, Infinity],
      async run(ctx, _values, names) {
        const client = await ctx.client();
        let code = 0;
        for (const n of names) {
          try {
            const record = findImage(client, n);
            client.images.delete(record.name);
            ctx.out(record.name);
          } catch (err) {
            if (!(err instanceof StrataError)) throw err;
            ctx.err(`strata: ${err.message}`);
            code = err.exitCode;
          }
        }
        return code;
      },
    },
    {
      name: "tag",
      summary: "Make new names for an image",
      usage: "images tag [--force] SOURCE TARGET...",
      options: { force: { type: "boolean", short: "f", help: "Replace an existing target" } },
      args: [2, Infinity],
      async run(ctx, values, [source, ...targets]) {
        const client = await ctx.client();
        const record = findImage(client, source!);
        for (const t of targets) {
          const name = normalizeReference(t);
          const image = { name, target: record.target, labels: record.labels };
          if (values.force) client.images.upsert(image);
          else client.images.create(image);
          ctx.out(name);
        }
      },
    },
    {
      name: "label",
      summary: "Set labels on an image (KEY= removes KEY); prints the resulting labels",
      usage: "images label NAME [KEY=VALUE...]",
      args: [1, Infinity],
      async run(ctx, _values, [name, ...pairs]) {
        const client = await ctx.client();
        const record = findImage(client, name!);
        const labels = parseLabelArgs(pairs);
        const updated = pairs.length === 0 ? record : client.images.update(
          { name: record.name, target: record.target, labels },
          { fieldpaths: Object.keys(labels).map((k) => `labels.${k}`) },
        );
        ctx.out(ctx.json ? JSON.stringify(updated.labels) : formatLabels(updated.labels));
      },
    },
    {
      name: "export",
      summary: "Write images as an OCI image layout tar (with a Docker manifest.json)",
      usage: "images export [OPTIONS] OUTPUT|- NAME...",
      options: {
        platform: {
          type: "string",
          multiple: true,
          arg: "P",
          help: "Export only this platform (default: the host's)",
        },
        "all-platforms": { type: "boolean", help: "Export every platform of each image" },
        "skip-manifest-json": { type: "boolean", help: "Do not write a Docker manifest.json" },
        "skip-non-distributable": {
          type: "boolean",
          help: "Leave out non-distributable (foreign) layers",
        },
      },
      args: [2, Infinity],
      async run(ctx, values, [output, ...names]) {
        const client = await ctx.client();
        const records = names.map((n) => findImage(client, n));
        const platform = values["all-platforms"]
          ? allPlatforms
          : (platformOption(values) ?? client.platform);
        if (output === "-" && Deno.stdout.isTerminal()) {
          throw new InvalidArgument("Cannot export to a terminal: give a file name or redirect");
        }
        const opts = {
          platform,
          allPlatforms: Boolean(values["all-platforms"]),
          skipManifestJson: Boolean(values["skip-manifest-json"]),
          skipNonDistributable: Boolean(values["skip-non-distributable"]),
        };
        if (output === "-") {
          await exportArchive(client, records, (chunk) => ctx.write(chunk), opts);
          return;
        }
        const tmp = `${output}.strata-tmp-${Deno.pid}`;
        const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
        try {
          await exportArchive(client, records, async (chunk) => {
            let off = 0;
            while (off < chunk.length) off += await file.write(chunk.subarray(off));
          }, opts);
          await file.sync();
          file.close();
          await Deno.rename(tmp, output!);
        } catch (err) {
          try {
            file.close();
          } catch { /* already closed */ }
          await Deno.remove(tmp).catch(() => {});
          throw err;
        }
        ctx.err(`exported ${records.map((r) => r.name).join(", ")} to ${output}`);
      },
    },
    imagesCheckCommand,
    imagesUsageCommand,
    imagesMountCommand,
    imagesUnmountCommand,
  ],
};
