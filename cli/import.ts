import { importArchive } from "../images/mod.ts";
import { allPlatforms } from "../images/mod.ts";
import { type Command, table } from "./_command.ts";
import { platformOption } from "./_images.ts";

/** `strata import`: OCI layouts (directory or tar) and `docker save` archives. */
export const importCommand: Command = {
  name: "import",
  summary: "Import images from an OCI layout (directory or tar) or a docker-archive tar",
  usage: "import [OPTIONS] PATH|-",
  options: {
    "base-name": {
      type: "string",
      arg: "NAME",
      help: "Name tag-only images NAME:TAG, and import only full names starting with NAME",
    },
    "index-name": { type: "string", arg: "NAME", help: "Also name the whole imported index" },
    digests: { type: "boolean", help: "Also name each image NAME@DIGEST" },
    platform: {
      type: "string",
      multiple: true,
      arg: "P",
      help: "Keep only this platform's content referenced (default: every platform)",
    },
    "all-platforms": { type: "boolean", help: "Keep every platform (the default)" },
  },
  args: [1, 1],
  async run(ctx, values, [path]) {
    const client = await ctx.client();
    const platform = platformOption(values) ?? allPlatforms;
    const result = await importArchive(client, path === "-" ? Deno.stdin.readable : path!, {
      platform,
      ...(values["base-name"] ? { baseName: String(values["base-name"]) } : {}),
      ...(values["index-name"] ? { indexName: String(values["index-name"]) } : {}),
      digests: Boolean(values.digests),
    });
    if (ctx.json) return ctx.out(JSON.stringify(result, null, 2));
    for (
      const l of table(
        ["REF", "TYPE", "DIGEST"],
        result.images.map((i) => [i.name, i.target.mediaType, i.target.digest]),
      )
    ) ctx.out(l);
  },
};
