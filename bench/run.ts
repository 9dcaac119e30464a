/**
 * Import and export throughput of `strata` side by side with its peers (containerd's `ctr` and
 * `skopeo`) on a real multi-layer image. Run with `deno task bench --help`.
 *
 * Every case runs its contenders alternately, each run with a fresh destination and (as root) a
 * dropped page cache, and times the whole command with a wall clock, process start included.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { FailedPrecondition, InvalidArgument, StrataError } from "../errors.ts";
import {
  type Fixture,
  FIXTURE_TAG,
  layoutFixture,
  makeFixturesFixture,
  umociFixture,
} from "./_fixture.ts";
import { Containerd, dropCaches, have, mustRun, run, tail } from "./_proc.ts";
import { replaceResults, resultsTable, type Series } from "./_report.ts";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const BASE_NAME = "bench.local/strata-bench";
const MAKE_FIXTURES = resolve(REPO, "..", "shared", "tools", "make-fixtures.sh");
const IMAGE_NAME = `${BASE_NAME}:${FIXTURE_TAG}`;
const CASES = ["startup", "import-archive", "import-layout", "export"] as const;
type CaseName = typeof CASES[number];

const HELP = `Usage: deno task bench [OPTIONS]
       (= deno run --allow-all bench/run.ts [OPTIONS])

Times strata's import and export against ctr and skopeo on a real multi-layer image, alternating
the tools, with a fresh destination and a dropped page cache (root only) before every run.

Options:
  --runs N            Runs per tool and case (default 5)
  --cases LIST        Comma-separated cases (default all): ${CASES.join(", ")}
  --fixtures DIR      Fixture cache (default /tmp/strata-bench-fixtures); scratch space goes here too
  --fixture KIND      umoci (default): a two-layer image built with umoci from local directories;
                      make-fixtures: shared/tools/make-fixtures.sh output, either given with
                      --layout DIR:TAG or, with --layout TAG (default app), the copy cached under
                      --fixtures (built when missing: debootstrap from the Debian mirror, slow)
  --layout DIR:TAG    Use this OCI layout's image instead of the umoci fixture
  --layer1 PATHS      umoci fixture, layer 1 (comma-separated directories; default
                      /usr/lib/python3,/usr/lib/python3.11,/usr/lib/node_modules,/usr/lib/gcc)
  --layer2 PATHS      umoci fixture, layer 2 (default /usr/include)
  --strata CMD        The strata command (default: deno run --allow-all --no-lock <repo>/cli.ts)
  --no-drop-caches    Do not drop the page cache between runs
  --keep              Keep the scratch directory
  --write             Replace the results section of BENCHMARKS.md
  -h, --help          Show this help`;

/** One tool in one case: what to run, given the run's index and scratch directory. */
interface Contender {
  tool: string;
  /** Prepares a run (untimed) and returns the command plus a check and a cleanup. */
  prepare(scratch: string): Promise<Prepared>;
}

interface Prepared {
  argv: string[];
  cwd?: string;
  /** Checks the result of the first run (untimed). */
  check?: () => Promise<void>;
  cleanup: () => Promise<void>;
}

interface Options {
  runs: number;
  cases: CaseName[];
  fixtures: string;
  fixture: string;
  layout: string | undefined;
  layer1: string[];
  layer2: string[];
  strata: string[];
  drop: boolean;
  keep: boolean;
  write: boolean;
}

function log(line: string): void {
  console.error(line);
}

function parseOptions(args: string[]): Options | undefined {
  const { values } = parseArgs({
    args,
    options: {
      runs: { type: "string", default: "5" },
      cases: { type: "string", default: CASES.join(",") },
      fixtures: { type: "string", default: "/tmp/strata-bench-fixtures" },
      fixture: { type: "string", default: "umoci" },
      layout: { type: "string" },
      layer1: {
        type: "string",
        default: "/usr/lib/python3,/usr/lib/python3.11,/usr/lib/node_modules,/usr/lib/gcc",
      },
      layer2: { type: "string", default: "/usr/include" },
      strata: { type: "string" },
      "no-drop-caches": { type: "boolean", default: false },
      keep: { type: "boolean", default: false },
      write: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return undefined;
  }
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) {
    throw new InvalidArgument(`Cannot parse --runs "${values.runs}": expected a positive integer`);
  }
  const cases = values.cases.split(",").map((c) => c.trim()).filter((c) => c !== "");
  for (const c of cases) {
    if (!(CASES as readonly string[]).includes(c)) {
      throw new InvalidArgument(`Cannot run case "${c}": expected one of ${CASES.join(", ")}`);
    }
  }
  if (!["umoci", "make-fixtures"].includes(values.fixture)) {
    throw new InvalidArgument(
      `Cannot use fixture "${values.fixture}": expected "umoci" or "make-fixtures"`,
    );
  }
  const list = (s: string) => s.split(",").map((p) => p.trim()).filter((p) => p !== "");
  return {
    runs,
    cases: cases as CaseName[],
    fixtures: resolve(values.fixtures),
    fixture: values.fixture,
    layout: values.layout,
    layer1: list(values.layer1),
    layer2: list(values.layer2),
    strata: values.strata
      ? values.strata.split(/\s+/).filter((p) => p !== "")
      : [Deno.execPath(), "run", "--allow-all", "--no-lock", join(REPO, "cli.ts")],
    drop: !values["no-drop-caches"],
    keep: values.keep,
    write: values.write,
  };
}

async function loadFixture(o: Options): Promise<Fixture> {
  await Deno.mkdir(o.fixtures, { recursive: true });
  if (o.fixture === "make-fixtures") {
    // DIR:TAG names existing make-fixtures.sh output; a bare TAG uses (or builds) the cached one.
    const spec = o.layout ?? "app";
    if (spec.includes(":")) return await layoutFixture(o.fixtures, spec, { log });
    return await makeFixturesFixture(o.fixtures, spec, { script: MAKE_FIXTURES, log });
  }
  if (o.layout) return await layoutFixture(o.fixtures, o.layout, { log });
  return await umociFixture(o.fixtures, { layer1: o.layer1, layer2: o.layer2, log });
}

async function firstLine(argv: string[]): Promise<string> {
  try {
    const r = await run(argv);
    return (r.stdout || r.stderr).trim().split("\n")[0] ?? "?";
  } catch {
    return "not installed";
  }
}

async function machine(scratch: string): Promise<[string, string][]> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const cpu = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? "?";
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const memKb = Number(/MemTotal:\s*(\d+)/.exec(meminfo)?.[1] ?? NaN);
  const fs = (await firstLine(["findmnt", "-no", "FSTYPE,SOURCE", "-T", scratch])).replace(
    /\s+/,
    " on ",
  );
  const rev = await firstLine(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]);
  const dirty = (await run(["git", "-C", REPO, "status", "--porcelain"])).stdout.trim() !== "";
  const [l1, l5, l15] = Deno.loadavg();
  return [
    ["nproc", `${(await firstLine(["nproc"]))} (${cpu})`],
    ["memory", `${(memKb / 1024 / 1024).toFixed(1)} GiB`],
    ["kernel", Deno.osRelease()],
    ["disk fs", `${fs} (scratch and fixtures in ${dirname(scratch)})`],
    ["deno", (await firstLine([Deno.execPath(), "--version"])).replace(/^deno /, "")],
    ["skopeo", (await firstLine(["skopeo", "--version"])).replace(/^skopeo version /, "")],
    ["ctr", (await firstLine(["ctr", "--version"])).replace(/^ctr \S+ /, "")],
    ["containerd", (await firstLine(["containerd", "--version"])).replace(/^containerd \S+ /, "")],
    ["umoci", (await firstLine(["umoci", "--version"])).replace(/^umoci version /, "")],
    ["strata", `git ${rev}${dirty ? " + uncommitted changes" : ""}`],
    ["date", new Date().toISOString().replace(/\.\d+Z$/, "Z")],
    ["load average at start", `${l1?.toFixed(2)} ${l5?.toFixed(2)} ${l15?.toFixed(2)}`],
  ];
}

function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

async function blobCount(dir: string): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(dir)) if (e.isFile) n++;
  return n;
}

async function checkTar(path: string, f: Fixture): Promise<void> {
  const size = (await Deno.stat(path)).size;
  if (size < f.blobBytes) {
    throw new FailedPrecondition(
      `Cannot verify "${path}": ${size} bytes, less than the image's ${f.blobBytes} blob bytes`,
    );
  }
  const names = new Set(
    (await mustRun(["tar", "-tf", path])).stdout.split("\n").map((n) => n.replace(/^\.\//, "")),
  );
  for (const d of f.blobs) {
    if (!names.has(`blobs/${d.replace(":", "/")}`)) {
      throw new FailedPrecondition(`Cannot verify "${path}": blob "${d}" is missing`);
    }
  }
}

async function checkLayout(dir: string, f: Fixture): Promise<void> {
  const n = await blobCount(join(dir, "blobs", "sha256"));
  if (n < f.blobs.length) {
    throw new FailedPrecondition(`Cannot verify "${dir}": ${n} blobs, expected ${f.blobs.length}`);
  }
}

async function checkStrataRoot(o: Options, root: string, f: Fixture): Promise<void> {
  const r = await mustRun([...o.strata, "--root", root, "images", "ls"], { cwd: REPO });
  if (!r.stdout.includes(IMAGE_NAME)) {
    throw new FailedPrecondition(`Cannot verify "${root}": image "${IMAGE_NAME}" is not listed`);
  }
  await checkLayout(join(root, "content"), f);
}

async function checkCtr(sock: string): Promise<void> {
  const r = await mustRun(["ctr", "-a", sock, "-n", "bench", "images", "ls", "-q"]);
  if (!r.stdout.split("\n").includes(IMAGE_NAME)) {
    throw new FailedPrecondition(`Cannot verify containerd import: "${IMAGE_NAME}" is not listed`);
  }
}

function rmrf(path: string): Promise<void> {
  return Deno.remove(path, { recursive: true }).catch(() => {});
}

/** What must be stopped when the benchmark ends or is interrupted. */
const daemons = new Set<Containerd>();

async function startContainerd(dir: string): Promise<Containerd> {
  const c = await Containerd.start(dir);
  daemons.add(c);
  return c;
}

async function stopContainerd(c: Containerd): Promise<void> {
  daemons.delete(c);
  await c.stop();
}

function strataImport(o: Options, f: Fixture, source: string): Contender {
  return {
    tool: "strata",
    prepare(scratch) {
      const root = join(scratch, "strata-root");
      return Promise.resolve({
        argv: [...o.strata, "--root", root, "import", "--base-name", BASE_NAME, source],
        cwd: REPO,
        check: () => checkStrataRoot(o, root, f),
        cleanup: () => rmrf(root),
      });
    },
  };
}

function ctrImport(f: Fixture): Contender {
  return {
    tool: "ctr",
    async prepare(scratch) {
      const c = await startContainerd(join(scratch, "containerd"));
      return {
        argv: [
          "ctr",
          "-a",
          c.socket,
          "-n",
          "bench",
          "images",
          "import",
          "--no-unpack",
          "--base-name",
          BASE_NAME,
          f.archive,
        ],
        check: () => checkCtr(c.socket),
        cleanup: () => stopContainerd(c),
      };
    },
  };
}

function skopeoCopy(f: Fixture, source: string, dest: (scratch: string) => string): Contender {
  return {
    tool: "skopeo",
    prepare(scratch) {
      const target = dest(scratch);
      const path = target.replace(/^oci(-archive)?:/, "").replace(/:[^:/]*$/, "");
      return Promise.resolve({
        argv: ["skopeo", "--insecure-policy", "copy", "-q", source, target],
        check: () =>
          target.startsWith("oci-archive:") ? checkTar(path, f) : checkLayout(path + "/", f),
        cleanup: () => rmrf(path),
      });
    },
  };
}

async function runCase(
  o: Options,
  name: CaseName,
  contenders: Contender[],
  scratch: string,
  bytes: number,
  state: { dropped: boolean; dropFailed: boolean },
): Promise<Series[]> {
  const series: Series[] = contenders.map((c) => ({
    caseName: name,
    tool: c.tool,
    command: "",
    seconds: [],
    syncedSeconds: [],
    bytes,
  }));
  for (let i = 0; i < o.runs; i++) {
    for (const [k, c] of contenders.entries()) {
      const s = series[k]!;
      const dir = join(scratch, `${name}-${c.tool}-${i}`);
      await Deno.mkdir(dir, { recursive: true });
      const p = await c.prepare(dir);
      try {
        if (o.drop) {
          if (await dropCaches()) state.dropped = true;
          else state.dropFailed = true;
        } else {
          await mustRun(["sync"]);
        }
        const r = await run(p.argv, p.cwd ? { cwd: p.cwd } : {});
        const t1 = performance.now();
        await mustRun(["sync"]);
        const syncMs = performance.now() - t1;
        if (r.code !== 0) {
          throw new FailedPrecondition(
            `Cannot run ${c.tool} in case "${name}": exit code ${r.code}: ${
              tail(r.stderr || r.stdout)
            }`,
          );
        }
        if (i === 0 && p.check) await p.check();
        s.seconds.push(r.ms / 1000);
        s.syncedSeconds.push((r.ms + syncMs) / 1000);
        s.command = p.argv.map(quote).join(" ");
        log(
          `${name.padEnd(15)} ${c.tool.padEnd(7)} run ${i + 1}/${o.runs}: ${
            (r.ms / 1000).toFixed(3)
          } s (+ sync ${(syncMs / 1000).toFixed(3)} s)`,
        );
      } finally {
        await p.cleanup();
        await rmrf(dir);
      }
    }
  }
  return series;
}

async function main(args: string[]): Promise<number> {
  const o = parseOptions(args);
  if (!o) return 0;
  const notes: string[] = [];
  for (const tool of ["skopeo", "ctr", "containerd"]) {
    if (!(await have(tool))) {
      throw new FailedPrecondition(`Cannot run the benchmark: "${tool}" is not installed`);
    }
  }
  if (Deno.uid() !== 0) notes.push("Not run as root: containerd cannot start and caches stay.");
  const fixture = await loadFixture(o);
  const scratch = join(o.fixtures, `scratch-${Deno.pid}`);
  await Deno.mkdir(scratch, { recursive: true });
  const onSignal = () => {
    log("interrupted: stopping containerd and removing scratch space");
    Promise.all([...daemons].map((d) => d.stop()))
      .then(() => (o.keep ? undefined : rmrf(scratch)))
      .finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  const env = await machine(scratch);
  const state = { dropped: false, dropFailed: false };
  const all: Series[] = [];
  try {
    // Fill Deno's module cache once, so that no run pays for transpiling the CLI.
    await mustRun([...o.strata, "--version"], { cwd: REPO });
    const f = fixture;
    for (const name of o.cases) {
      if (name === "startup") {
        const version = (argv: string[], tool: string): Contender => ({
          tool,
          prepare: () => Promise.resolve({ argv, cwd: REPO, cleanup: () => Promise.resolve() }),
        });
        all.push(
          ...(await runCase(
            o,
            name,
            [
              version([...o.strata, "--version"], "strata"),
              version(["ctr", "--version"], "ctr"),
              version(["skopeo", "--version"], "skopeo"),
            ],
            scratch,
            0,
            state,
          )),
        );
      } else if (name === "import-archive") {
        all.push(
          ...(await runCase(
            o,
            name,
            [
              strataImport(o, f, f.archive),
              ctrImport(f),
              skopeoCopy(f, `oci-archive:${f.archive}`, (d) => `oci:${join(d, "skopeo")}:t`),
            ],
            scratch,
            f.blobBytes,
            state,
          )),
        );
      } else if (name === "import-layout") {
        all.push(
          ...(await runCase(
            o,
            name,
            [
              strataImport(o, f, f.layout),
              skopeoCopy(
                f,
                `oci:${f.layout}:${FIXTURE_TAG}`,
                (d) => `oci:${join(d, "skopeo")}:t`,
              ),
            ],
            scratch,
            f.blobBytes,
            state,
          )),
        );
      } else if (name === "export") {
        // The sources, imported once and untimed.
        const root = join(scratch, "export-strata-root");
        await mustRun(
          [...o.strata, "--root", root, "import", "--base-name", BASE_NAME, f.archive],
          {
            cwd: REPO,
          },
        );
        const c = await startContainerd(join(scratch, "export-containerd"));
        try {
          await mustRun([
            "ctr",
            "-a",
            c.socket,
            "-n",
            "bench",
            "images",
            "import",
            "--no-unpack",
            "--base-name",
            BASE_NAME,
            f.archive,
          ]);
          const out = (d: string) => join(d, "out.tar");
          all.push(
            ...(await runCase(
              o,
              name,
              [
                {
                  tool: "strata",
                  prepare: (d) =>
                    Promise.resolve({
                      argv: [...o.strata, "--root", root, "images", "export", out(d), IMAGE_NAME],
                      cwd: REPO,
                      check: () => checkTar(out(d), f),
                      cleanup: () => rmrf(out(d)),
                    }),
                },
                {
                  tool: "ctr",
                  prepare: (d) =>
                    Promise.resolve({
                      argv: [
                        "ctr",
                        "-a",
                        c.socket,
                        "-n",
                        "bench",
                        "images",
                        "export",
                        out(d),
                        IMAGE_NAME,
                      ],
                      check: () => checkTar(out(d), f),
                      cleanup: () => rmrf(out(d)),
                    }),
                },
                skopeoCopy(
                  f,
                  `oci:${f.layout}:${FIXTURE_TAG}`,
                  (d) => `oci-archive:${out(d)}:${FIXTURE_TAG}`,
                ),
              ],
              scratch,
              f.blobBytes,
              state,
            )),
          );
        } finally {
          await stopContainerd(c);
          await rmrf(root);
        }
      }
    }
  } finally {
    for (const d of [...daemons]) await stopContainerd(d);
    if (!o.keep) await rmrf(scratch);
    Deno.removeSignalListener("SIGINT", onSignal);
  }

  const [e1, e5, e15] = Deno.loadavg();
  env.push(["load average at end", `${e1?.toFixed(2)} ${e5?.toFixed(2)} ${e15?.toFixed(2)}`]);
  if (o.drop && state.dropFailed) {
    notes.push(
      state.dropped
        ? "Dropping the page cache failed for some runs."
        : "The page cache could not be dropped (not root?): runs read warm caches.",
    );
  }
  if (!o.drop) notes.push("`--no-drop-caches`: runs read warm caches.");
  const body = report(o, args, fixture, env, all, notes, scratch);
  console.log(body);
  if (o.write) {
    const path = join(REPO, "BENCHMARKS.md");
    const doc = await Deno.readTextFile(path).catch(() => "# Benchmarks\n");
    await Deno.writeTextFile(path, replaceResults(doc, body));
    // Keep the document as `deno fmt` (and so `deno task check`) wants it.
    await mustRun([Deno.execPath(), "fmt", path], { cwd: REPO });
    log(`wrote the results into ${path}`);
  }
  return 0;
}

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

function report(
  o: Options,
  args: string[],
  f: Fixture,
  env: [string, string][],
  series: Series[],
  notes: string[],
  scratch: string,
): string {
  const fixtureDir = dirname(f.layout);
  const cmd = ["deno", "task", "bench", ...args].map(quote).join(" ");
  const lines = [
    `Command: \`${cmd}\` (= \`deno run --allow-all bench/run.ts${
      args.length ? " " + args.map(quote).join(" ") : ""
    }\`), run from \`${REPO}\`.`,
    "",
    "| machine | |",
    "|---|---|",
    ...env.map(([k, v]) => `| ${k} | ${v.replaceAll("|", "\\|")} |`),
    "",
    `Fixture: ${f.source}. ${f.layerBytes.length} layers (${
      f.layerMediaType.replace("application/vnd.oci.image.layer.v1.", "")
    }) of ${f.layerBytes.map(mb).join(" + ")}; blob bytes ${mb(f.blobBytes)} (manifest, config, ` +
    `layers), archive ${mb(f.archiveBytes)}${
      f.entries !== undefined && f.treeBytes !== undefined
        ? `; ${f.entries.toLocaleString("en-US")} files, directories and links, ${
          mb(f.treeBytes)
        } uncompressed`
        : ""
    }.`,
    "",
    `Method: ${o.runs} run${
      o.runs === 1 ? "" : "s"
    } per tool and case, the tools alternating (strata, peer, strata, peer, …); ` +
    `${
      o.drop && !notes.some((n) => n.includes("could not"))
        ? "`sync` and the page cache, dentries and inodes dropped before every run"
        : "page cache NOT dropped"
    }; a fresh destination every run (a new strata root, a new containerd daemon and root, a new ` +
    `skopeo directory or output file). Times are the wall clock of the whole command, process ` +
    `start included (for strata: \`deno run\` starting and loading the CLI from Deno's module ` +
    `cache; for ctr: a gRPC client streaming to an already-running containerd). MB/s = blob ` +
    `bytes / median seconds (1 MB = 10^6 bytes). "incl. sync" adds a \`sync\` right after the ` +
    `command, for equal durability: strata fsyncs each stored blob and its export output, ` +
    `containerd each stored blob, skopeo each blob of an OCI layout destination but not an ` +
    `oci-archive, and \`ctr images export\` does not fsync. strata/peer = strata's ` +
    `median / the peer's median: **< 1 means strata is faster**.`,
    "",
    ...resultsTable(series),
    "",
    `Commands (last run; \`$FIXTURE\` = \`${fixtureDir}\`, \`$SCRATCH\` = a scratch directory ` +
    `under \`${o.fixtures}\`, removed at the end):`,
    "",
    ...series.map((s) =>
      `- ${s.caseName}, ${s.tool}: \`${
        s.command.replaceAll(Deno.execPath(), "deno").replaceAll(scratch, "$SCRATCH")
          .replaceAll(fixtureDir, "$FIXTURE")
      }\``
    ),
  ];
  if (notes.length) lines.push("", ...notes.map((n) => `Note: ${n}`));
  return lines.join("\n");
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`bench: ${e instanceof Error ? e.message : String(e)}`);
    Deno.exit(e instanceof StrataError ? e.exitCode : 1);
  }
}
