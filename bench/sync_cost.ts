/**
 * What `strata unpack --sync-fs` costs over `--no-sync-fs`, measured precisely enough to check a
 * 5% target on a noisy machine. Run with `deno task bench:sync --help`.
 *
 * Medians of a few runs per variant (as `bench/run.ts` takes them) cannot resolve 5% when runs
 * spread by ±15%. So this benchmark pairs the runs: every round runs both variants back to back,
 * each on an identical fresh copy of a template root where the image was imported once, and the
 * statistic is the median over the rounds of the per-round ratio sync-fs / no-sync. Slow drift of
 * the machine (other processes, the disk's write-back state) hits both runs of a round alike and
 * cancels in the ratio; the order alternates (no-sync first on even rounds, sync-fs first on odd
 * ones: A B B A ...), so whatever the first or second run of a pair gains cancels over the rounds.
 * Rounds iterate over all cases, so drift also hits all cases alike.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join, resolve } from "node:path";
import { FailedPrecondition, InvalidArgument } from "../errors.ts";
import { BASE_NAME, type Fixture, IMAGE_NAME, makeFixturesSpec, withDoubles } from "./_fixture.ts";
import { dropCaches, mustRun, run, tail } from "./_proc.ts";
import { secs, summarise } from "./_report.ts";
import { machine, quote, reportHead } from "./_machine.ts";
import {
  cacheNotes,
  checkCommitted,
  intOption,
  loadAverageRow,
  log,
  MAKE_FIXTURES,
  mb,
  REPO,
  rmrf,
  runMain,
  strataCommand,
  writeReport,
} from "./_util.ts";

const SNAPSHOTTERS = ["overlayfs", "native"] as const;
const MODES = ["parallel", "sequential"] as const;
const DEFAULT_LAYOUT = "/var/tmp/strata-fixtures/layout:app,/var/tmp/strata-fixtures/layout:many";
/** The performance target: sync-fs at most 5% slower than no-sync. */
const TARGET = 1.05;

type Snapshotter = typeof SNAPSHOTTERS[number];
type Mode = typeof MODES[number];

const HELP = `Usage: deno task bench:sync [OPTIONS]
       (= deno run --allow-all bench/sync_cost.ts [OPTIONS])

Measures what strata unpack --sync-fs costs over --no-sync-fs in paired rounds: every round runs
both variants back to back (alternating which goes first) on fresh copies of a root where the
image was imported once, after sync and a dropped page cache (root only); the result is the
median of the per-round ratios sync-fs / no-sync.

Options:
  --runs N            Rounds (default 10); each round runs both variants of every case once
  --layout DIR:TAG    The images (default ${DEFAULT_LAYOUT}),
                      comma-separated; a bare TAG uses (or builds) shared/tools/make-fixtures.sh
                      output cached under --fixtures (debootstrap from the Debian mirror, slow)
  --double NAMES      Also run these fixtures with their layers listed twice (an image twice the
                      size, named NAME-x2; comma-separated); NAME:N lists them N times (NAME-xN)
  --snapshotters LIST Comma-separated snapshotters (default overlayfs,native)
  --modes LIST        overlayfs modes, comma-separated (default parallel,sequential);
                      sequential = --no-parallel; native runs once, without a mode flag
  --strata CMD        The strata command (default: deno run --allow-all --no-lock <repo>/cli.ts)
  --fixtures DIR      Fixture cache (default /tmp/strata-bench-fixtures); scratch space goes here too
  --out FILE          Where the Markdown report goes (default /tmp/sync_cost_bench.md)
  --no-drop-caches    Do not drop the page cache between runs
  -h, --help          Show this help`;

interface Options {
  runs: number;
  layout: string[];
  double: string[];
  snapshotters: Snapshotter[];
  modes: Mode[];
  strata: string[];
  fixtures: string;
  out: string;
  drop: boolean;
}

/** One fixture, snapshotter and mode: a row of the report. */
interface Case {
  name: string;
  fixture: Fixture;
  snapshotter: Snapshotter;
  /** `undefined` for native, which has no mode flag. */
  mode: Mode | undefined;
  /** The root the image was imported into, copied for every run. */
  template: string;
  /** Per round: the no-sync run's seconds. */
  nosync: number[];
  /** Per round: seconds of the `sync` right after the no-sync run. */
  nosyncAfter: number[];
  /** Per round: the sync-fs run's seconds. */
  sync: number[];
  /** Per round: seconds of the `sync` right after the sync-fs run. */
  syncAfter: number[];
  /** The exact command of the last sync-fs run, for the record. */
  command: string;
}

interface RunState {
  dropped: boolean;
  dropFailed: boolean;
}

function list(s: string): string[] {
  return s.split(",").map((p) => p.trim()).filter((p) => p !== "");
}

function oneOf<T extends string>(name: string, values: string[], allowed: readonly T[]): T[] {
  if (values.length === 0) {
    throw new InvalidArgument(`Cannot parse --${name}: expected one or more of ${allowed}`);
  }
  for (const v of values) {
    if (!(allowed as readonly string[]).includes(v)) {
      throw new InvalidArgument(
        `Cannot parse --${name} "${v}": expected one of ${allowed.join(", ")}`,
      );
    }
  }
  return [...new Set(values)] as T[];
}

function parseOptions(args: string[]): Options | undefined {
  const { values } = parseArgs({
    args,
    options: {
      runs: { type: "string", default: "10" },
      layout: { type: "string", default: DEFAULT_LAYOUT },
      double: { type: "string", default: "" },
      snapshotters: { type: "string", default: SNAPSHOTTERS.join(",") },
      modes: { type: "string", default: MODES.join(",") },
      strata: { type: "string" },
      fixtures: { type: "string", default: "/tmp/strata-bench-fixtures" },
      out: { type: "string", default: "/tmp/sync_cost_bench.md" },
      "no-drop-caches": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return undefined;
  }
  const layout = list(values.layout);
  if (layout.length === 0) {
    throw new InvalidArgument(`Cannot parse --layout "${values.layout}": no image named`);
  }
  return {
    runs: intOption("runs", values.runs, 1),
    layout,
    double: list(values.double),
    snapshotters: oneOf("snapshotters", list(values.snapshotters), SNAPSHOTTERS),
    modes: oneOf("modes", list(values.modes), MODES),
    strata: strataCommand(values.strata),
    fixtures: resolve(values.fixtures),
    out: resolve(values.out),
    drop: !values["no-drop-caches"],
  };
}

/** The fixtures, as run.ts's `--fixture make-fixtures --layout ...` loads them, plus doubles. */
async function loadFixtures(o: Options): Promise<Fixture[]> {
  await Deno.mkdir(o.fixtures, { recursive: true });
  const fixtures: Fixture[] = [];
  for (const spec of o.layout) {
    fixtures.push(await makeFixturesSpec(o.fixtures, spec, { script: MAKE_FIXTURES, log }));
  }
  return await withDoubles(o.fixtures, fixtures, { double: o.double, log });
}

/** Imports the fixture's image into a new root (untimed), to be copied for every run. */
async function makeTemplate(o: Options, f: Fixture, root: string): Promise<void> {
  log(`importing ${f.name} into the template root ${root}`);
  await rmrf(root);
  await mustRun([...o.strata, "--root", root, "import", "--base-name", BASE_NAME, f.layout], {
    cwd: REPO,
  });
  const r = await mustRun([...o.strata, "--root", root, "images", "ls"], { cwd: REPO });
  if (!r.stdout.includes(IMAGE_NAME)) {
    throw new FailedPrecondition(`Cannot verify "${root}": image "${IMAGE_NAME}" is not listed`);
  }
}

function makeCases(o: Options, fixtures: Fixture[], templates: Map<Fixture, string>): Case[] {
  const cases: Case[] = [];
  for (const f of fixtures) {
    for (const sn of o.snapshotters) {
      // Only overlayfs applies layers in parallel; native runs once, without a mode flag.
      const modes: (Mode | undefined)[] = sn === "overlayfs" ? o.modes : [undefined];
      for (const mode of modes) {
        cases.push({
          name: `${f.name} ${sn}${mode ? ` ${mode}` : ""}`,
          fixture: f,
          snapshotter: sn,
          mode,
          template: templates.get(f)!,
          nosync: [],
          nosyncAfter: [],
          sync: [],
          syncAfter: [],
          command: "",
        });
      }
    }
  }
  return cases;
}

/** Fails when anything is mounted at or under `dir` (removing it would reach into the mount). */
async function checkNothingMounted(dir: string): Promise<void> {
  const mounts = await Deno.readTextFile("/proc/mounts").catch(() => "");
  const under = mounts.split("\n").map((l) => l.split(" ")[1] ?? "")
    .filter((t) => t === dir || t.startsWith(dir + "/"));
  if (under.length > 0) {
    throw new FailedPrecondition(
      `Cannot remove "${dir}": "${under[0]}" is still mounted after the unpack`,
    );
  }
}

/** One timed unpack of a case with or without `--sync-fs` in a fresh copy of its template. */
async function runOnce(
  o: Options,
  c: Case,
  sync: boolean,
  round: number,
  scratch: string,
  state: RunState,
): Promise<{ ms: number; afterMs: number }> {
  const root = join(scratch, "root");
  await rmrf(root);
  await mustRun(["cp", "-a", c.template, root]);
  const argv = [
    ...o.strata,
    "--root",
    root,
    "unpack",
    "--snapshotter",
    c.snapshotter,
    ...(c.mode === "sequential" ? ["--no-parallel"] : []),
    sync ? "--sync-fs" : "--no-sync-fs",
    IMAGE_NAME,
  ];
  const variant = sync ? "sync-fs" : "no-sync";
  try {
    if (o.drop) {
      if (await dropCaches()) state.dropped = true;
      else state.dropFailed = true;
    } else {
      await mustRun(["sync"]);
    }
    const r = await run(argv, { cwd: REPO });
    const t1 = performance.now();
    await mustRun(["sync"]);
    const afterMs = performance.now() - t1;
    if (r.code !== 0) {
      throw new FailedPrecondition(
        `Cannot run the ${variant} unpack of case "${c.name}": exit code ${r.code}: ${
          tail(r.stderr || r.stdout)
        }`,
      );
    }
    const ls = await mustRun(
      [...o.strata, "--root", root, "snapshots", "--snapshotter", c.snapshotter, "ls"],
      { cwd: REPO },
    );
    checkCommitted(
      ls.stdout,
      c.fixture.layerBytes.length,
      `the ${variant} unpack of case "${c.name}" in round ${round + 1}`,
    );
    if (sync) c.command = argv.map(quote).join(" ");
    log(
      `${c.name.padEnd(28)} ${variant} round ${round + 1}/${o.runs}: ${
        (r.ms / 1000).toFixed(3)
      } s (+ sync ${(afterMs / 1000).toFixed(3)} s)`,
    );
    return { ms: r.ms, afterMs };
  } finally {
    await checkNothingMounted(root);
    await rmrf(root);
  }
}

/** The `q` quantile (0..1) of some numbers, interpolating linearly between neighbours. */
function quantile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const at = (s.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return s[lo]! + (s[hi]! - s[lo]!) * (at - lo);
}

/** A ratio with three decimals, bold when it meets the target. */
function ratio(x: number): string {
  if (!Number.isFinite(x)) return "—";
  const text = x.toFixed(3);
  return x <= TARGET ? `**${text}**` : text;
}

function resultsTable(cases: Case[]): string[] {
  const lines = [
    "| case | rounds | median s no-sync | median s sync-fs | median of ratios sync/no-sync | " +
    "ratios p25–p75 | ratio of medians | median of ratios sync / (no-sync + sync) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const c of cases) {
    const ratios = c.sync.map((s, i) => s / c.nosync[i]!);
    const inclSync = c.sync.map((s, i) => s / (c.nosync[i]! + c.nosyncAfter[i]!));
    const nosync = summarise(c.nosync).median;
    const sync = summarise(c.sync).median;
    lines.push(
      `| ${c.name} | ${c.sync.length} | ${secs(nosync)} | ${secs(sync)} | ${
        ratio(summarise(ratios).median)
      } | ${ratio(quantile(ratios, 0.25))}–${ratio(quantile(ratios, 0.75))} | ${
        ratio(sync / nosync)
      } | ${ratio(summarise(inclSync).median)} |`,
    );
  }
  return lines;
}

function describeFixture(f: Fixture): string {
  return `\`${f.name}\`: ${f.source}, ${f.layerBytes.length} layer${
    f.layerBytes.length === 1 ? "" : "s"
  } (${f.layerMediaType.replace("application/vnd.oci.image.layer.v1.", "")}) of ${
    mb(f.layerBytes.reduce((a, b) => a + b, 0))
  } in all.`;
}

function report(
  o: Options,
  args: string[],
  fixtures: Fixture[],
  env: [string, string][],
  cases: Case[],
  notes: string[],
  scratch: string,
): string {
  const method = `Method: ${o.runs} round${o.runs === 1 ? "" : "s"}, each running every case's ` +
    `two variants back to back (no-sync first in rounds 1, 3, 5, …, sync-fs first in rounds ` +
    `2, 4, …), each run in a fresh \`cp -a\` copy of a root where the ` +
    `image was imported once (untimed), after ${
      o.drop && !notes.some((n) => n.includes("could not"))
        ? "`sync` and a dropped page cache, dentries and inodes"
        : "`sync` (page cache NOT dropped)"
    }, timing the whole \`strata unpack\` command with a wall clock (process start included) ` +
    `and then a \`sync\` right after it. The statistic is the median over the rounds of the ` +
    `per-round ratio sync-fs / no-sync (drift between rounds cancels in it), with its 25th–75th ` +
    `percentiles; the last column divides sync-fs by no-sync plus its following \`sync\` ` +
    `(equal durability); ratios ≤ ${TARGET} (the target) are in bold.`;
  const lines = [
    ...reportHead(["deno", "run", "--allow-all", "bench/sync_cost.ts", ...args], {
      alias: ["deno", "task", "bench:sync", ...args],
      repo: REPO,
      machine: env,
    }),
    "",
    "Fixtures:",
    "",
    ...fixtures.map((f) => `- ${describeFixture(f)}`),
    "",
    method,
    "",
    ...resultsTable(cases),
    "",
    `Commands (last sync-fs run; \`$ROOT\` = a fresh copy of the case's template root under ` +
    `\`${o.fixtures}\`; no-sync runs use \`--no-sync-fs\`):`,
    "",
    ...cases.map((c) =>
      `- ${c.name}: \`${
        c.command.replaceAll(Deno.execPath(), "deno").replaceAll(join(scratch, "root"), "$ROOT")
      }\``
    ),
  ];
  if (notes.length) lines.push("", ...notes.map((n) => `Note: ${n}`));
  return lines.join("\n") + "\n";
}

async function main(args: string[]): Promise<number> {
  const o = parseOptions(args);
  if (!o) return 0;
  const notes: string[] = [];
  const fixtures = await loadFixtures(o);
  const scratch = join(o.fixtures, `sync-scratch-${Deno.pid}`);
  await Deno.mkdir(scratch, { recursive: true });
  const onSignal = () => {
    log("interrupted: removing scratch space");
    rmrf(scratch).finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  const env = await machine(scratch, {
    repo: REPO,
    what: "scratch, template roots and fixtures",
    peers: [],
  });
  const state: RunState = { dropped: false, dropFailed: false };
  let cases: Case[] = [];
  try {
    // Fill Deno's module cache once, so that no run pays for transpiling the CLI.
    await mustRun([...o.strata, "--version"], { cwd: REPO });
    const templates = new Map<Fixture, string>();
    for (const f of fixtures) {
      const root = join(scratch, `template-${f.name}`);
      await makeTemplate(o, f, root);
      templates.set(f, root);
    }
    cases = makeCases(o, fixtures, templates);
    for (let round = 0; round < o.runs; round++) {
      for (const c of cases) {
        const order = round % 2 === 0 ? [false, true] : [true, false];
        for (const sync of order) {
          const { ms, afterMs } = await runOnce(o, c, sync, round, scratch, state);
          (sync ? c.sync : c.nosync).push(ms / 1000);
          (sync ? c.syncAfter : c.nosyncAfter).push(afterMs / 1000);
        }
        log(
          `${c.name.padEnd(28)} round ${round + 1}/${o.runs}: sync-fs/no-sync ${
            (c.sync.at(-1)! / c.nosync.at(-1)!).toFixed(3)
          }`,
        );
      }
    }
  } finally {
    await rmrf(scratch);
    Deno.removeSignalListener("SIGINT", onSignal);
  }
  env.push(loadAverageRow());
  notes.push(...cacheNotes(o.drop, state));
  const body = report(o, args, fixtures, env, cases, notes, scratch);
  await writeReport(o.out, body);
  return 0;
}

if (import.meta.main) await runMain("bench/sync_cost", main);
