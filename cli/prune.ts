import { collectGarbage, type GcReport } from "../gc/mod.ts";
import { type Command, humanSize, table } from "./_command.ts";

/** One row per removed object: type, id, size. */
function rows(report: GcReport): string[][] {
  return [
    ...report.leases.map((l) => ["lease", l.id, "-"]),
    ...report.images.map((name) => ["image", name, "-"]),
    ...report.snapshots.map((s) => [
      "snapshot",
      `${s.snapshotter}/${s.name}`,
      s.kind === "committed" ? humanSize(s.size) : "-",
    ]),
    ...report.content.map((b) => ["content", b.digest, humanSize(b.size)]),
    ...report.ingests.map((i) => ["ingest", i.ref, humanSize(i.size)]),
  ];
}

/** `strata prune`: garbage collection (containerd's mark and sweep). */
export const pruneCommand: Command = {
  name: "prune",
  summary: "Remove unreferenced blobs and snapshots, stale ingests and expired leases",
  usage: "prune [--dry-run] [--json]",
  options: {
    "dry-run": { type: "boolean", short: "n", help: "Only list what would be removed" },
    json: { type: "boolean", help: "Print the report as JSON" },
  },
  args: [0, 0],
  async run(ctx, values) {
    const client = await ctx.client();
    const report = await collectGarbage(client, { dryRun: Boolean(values["dry-run"]) });
    if (ctx.json || values.json) {
      ctx.out(JSON.stringify(report, null, 2));
      return;
    }
    const found = rows(report);
    if (found.length > 0) {
      for (const line of table(["TYPE", "ID", "SIZE"], found)) {
        ctx.out(line);
      }
    }
    const counts = [
      [report.content.length, "blob"],
      [report.snapshots.length, "snapshot"],
      [report.ingests.length, "ingest"],
      [report.leases.length, "lease"],
      [report.images.length, "image"],
    ].filter(([n]) => n !== 0).map(([n, what]) => `${n} ${what}${n === 1 ? "" : "s"}`);
    const verb = report.dryRun ? "Would remove" : "Removed";
    ctx.out(
      counts.length === 0
        ? "Nothing to remove"
        : `${verb} ${counts.join(", ")} (${humanSize(report.bytes)})`,
    );
    for (const warning of report.warnings) ctx.err(`strata: warning: ${warning}`);
  },
};
