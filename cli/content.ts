import { InvalidArgument } from "../errors.ts";
import {
  age,
  type CommandGroup,
  formatLabels,
  humanSize,
  parseLabelArgs,
  table,
} from "./_command.ts";

/** `strata content ...`: the content store. */
export const contentGroup: CommandGroup = {
  name: "content",
  summary: "Manage blobs in the content store",
  commands: [
    {
      name: "ls",
      aliases: ["list"],
      summary: "List blobs (filters: digest, labels.KEY with ==, !=, ~=)",
      usage: "content ls [--quiet] [FILTER...]",
      options: { quiet: { type: "boolean", short: "q", help: "Print only digests" } },
      args: [0, Infinity],
      async run(ctx, values, filters) {
        const client = await ctx.client();
        const infos = await client.content.list(filters);
        if (ctx.json) return ctx.out(JSON.stringify(infos, null, 2));
        if (values.quiet) return infos.forEach((i) => ctx.out(i.digest));
        for (
          const l of table(
            ["DIGEST", "SIZE", "AGE", "LABELS"],
            infos.map((
              i,
            ) => [i.digest, humanSize(i.size), age(i.createdAt), formatLabels(i.labels)]),
          )
        ) ctx.out(l);
      },
    },
    {
      name: "get",
      summary: "Write blobs' bytes to standard output",
      usage: "content get DIGEST...",
      args: [1, Infinity],
      async run(ctx, _values, digests) {
        const client = await ctx.client();
        for (const d of digests) await client.content.info(d);
        for (const d of digests) {
          for await (const chunk of client.content.stream(d)) await ctx.write(chunk);
        }
      },
    },
    {
      name: "rm",
      aliases: ["delete", "del", "remove"],
      summary: "Delete blobs",
      usage: "content rm DIGEST...",
      args: [1, Infinity],
      async run(ctx, _values, digests) {
        const client = await ctx.client();
        let code = 0;
        for (const d of digests) {
          try {
            await client.content.delete(d);
            ctx.out(d);
          } catch (err) {
            if (!(err instanceof Error) || !("exitCode" in err)) throw err;
            ctx.err(`strata: ${err.message}`);
            code = Number(err.exitCode);
          }
        }
        return code;
      },
    },
    {
      name: "label",
      summary: "Set labels on a blob (KEY= removes KEY); prints the resulting labels",
      usage: "content label DIGEST [KEY=VALUE...]",
      args: [1, Infinity],
      async run(ctx, _values, [digest, ...pairs]) {
        const client = await ctx.client();
        const labels = parseLabelArgs(pairs);
        const info = pairs.length === 0
          ? await client.content.info(digest!)
          : await client.content.update(digest!, labels, {
            fieldpaths: Object.keys(labels).map((k) => `labels.${k}`),
          });
        ctx.out(ctx.json ? JSON.stringify(info.labels) : formatLabels(info.labels));
      },
    },
    {
      name: "ingest",
      summary: "Write standard input into the store under REF (resumes an interrupted ingest)",
      usage: "content ingest [--expected-size N] [--expected-digest D] REF",
      options: {
        "expected-size": { type: "string", arg: "N", help: "Size the blob must have" },
        "expected-digest": { type: "string", arg: "D", help: "Digest the blob must have" },
      },
      args: [1, 1],
      async run(ctx, values, [ref]) {
        const client = await ctx.client();
        const expected: { digest?: string; size?: number } = {};
        if (values["expected-digest"]) expected.digest = String(values["expected-digest"]);
        if (values["expected-size"] !== undefined) {
          const n = Number(values["expected-size"]);
          if (!Number.isSafeInteger(n) || n < 0) {
            throw new InvalidArgument(
              `Cannot ingest "${ref}": --expected-size "${values["expected-size"]}" is not a size`,
            );
          }
          expected.size = n;
        }
        const w = await client.content.writer({ ref: ref!, expected });
        try {
          if (w.offset > 0) ctx.err(`resuming "${ref}" at offset ${w.offset}`);
          let skip = w.offset;
          for await (const chunk of Deno.stdin.readable) {
            if (skip >= chunk.length) {
              skip -= chunk.length;
              continue;
            }
            await w.write(skip > 0 ? chunk.subarray(skip) : chunk);
            skip = 0;
          }
          const info = await w.commit({
            ...(expected.size !== undefined ? { size: expected.size } : {}),
            ...(expected.digest !== undefined ? { expected: expected.digest } : {}),
          });
          ctx.out(ctx.json ? JSON.stringify(info) : info.digest);
        } finally {
          await w.close();
        }
      },
    },
    {
      name: "ingests",
      aliases: ["active"],
      summary: "List ingests in progress (filter: ref)",
      usage: "content ingests [FILTER...]",
      args: [0, Infinity],
      async run(ctx, _values, filters) {
        const client = await ctx.client();
        const statuses = await client.content.listIngests(filters);
        if (ctx.json) return ctx.out(JSON.stringify(statuses, null, 2));
        for (
          const l of table(
            ["REF", "SIZE", "TOTAL", "AGE"],
            statuses.map((
              s,
            ) => [
              s.ref,
              humanSize(s.offset),
              s.total ? humanSize(s.total) : "-",
              age(s.startedAt),
            ]),
          )
        ) ctx.out(l);
      },
    },
    {
      name: "abort",
      summary: "Abort ingests in progress, discarding their data",
      usage: "content abort REF...",
      args: [1, Infinity],
      async run(ctx, _values, refs) {
        const client = await ctx.client();
        for (const r of refs) {
          await client.content.abort(r);
          ctx.out(r);
        }
      },
    },
  ],
};
