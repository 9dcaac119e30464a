/**
 * Import, export, layer apply and unpack times of `strata` side by side with its peers
 * (containerd's `ctr`, `skopeo`, GNU `tar` and `umoci`) on real multi-layer images. Run with
 * `deno task bench --help`.
 *
 * Every case runs its contenders alternately, each run with a fresh destination and (as root) a
 * dropped page cache, and times the whole command with a wall clock, process start included.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { dirname, join, resolve } from "node:path";
import { FailedPrecondition, InvalidArgument } from "../errors.ts";
import {
  BASE_NAME,
  type Fixture,
  FIXTURE_TAG,
  IMAGE_NAME,
  layoutFixture,
  makeFixturesSpec,
  umociFixture,
  withDoubles,
} from "./_fixture.ts";
import {
  Containerd,
  dropCaches,
  have,
  mustRun,
  Registry,
  run,
  type RunResult,
  tail,
} from "./_proc.ts";
import { replaceResults, resultsTable, type Series } from "./_report.ts";
import { machine, peerVersions, quote, reportHead } from "./_machine.ts";
import {
  cacheNotes,
  checkCommitted,
  checkNotEmpty,
  Daemons,
  intOption,
  loadAverageRow,
  log,
  MAKE_FIXTURES,
  mb,
  REPO,
  rmrf,
  runMain,
  strataCommand,
} from "./_util.ts";

const CASES = ["startup", "import-archive", "import-layout", "export", "apply", "unpack"] as const;
const SNAPSHOTTERS = ["overlayfs", "native"] as const;
type CaseName = typeof CASES[number];

const HELP = `Usage: deno task bench [OPTIONS]
       (= deno run --allow-all bench/run.ts [OPTIONS])

Times strata's import, export, layer apply and unpack against ctr, skopeo, tar and umoci on real
multi-layer images, alternating the tools, with a fresh destination and a dropped page cache (root
only) before every run.

Options:
  --runs N            Runs per tool and case (default 5)
  --cases LIST        Comma-separated cases (default all): ${CASES.join(", ")}
  --fixtures DIR      Fixture cache (default /tmp/strata-bench-fixtures); scratch space goes here too
  --fixture KIND      umoci (default): a two-layer image built with umoci from local directories;
                      make-fixtures: shared/tools/make-fixtures.sh output, either given with
                      --layout DIR:TAG or, with --layout TAG (default app), the copy cached under
                      --fixtures (built when missing: debootstrap from the Debian mirror, slow)
  --layout DIR:TAG    Use this OCI layout's image instead of the umoci fixture; a comma-separated
                      list runs the apply and unpack cases on each image (the other cases use the
                      first)
  --layer1 PATHS      umoci fixture, layer 1 (comma-separated directories; default
                      /usr/lib/python3,/usr/lib/python3.11,/usr/lib/node_modules,/usr/lib/gcc)
  --layer2 PATHS      umoci fixture, layer 2 (default /usr/include)
  --double NAMES      Also run apply and unpack on these fixtures with their layers listed twice
                      (an image twice the size, named NAME-x2; comma-separated); NAME:N lists
                      them N times (NAME-xN)
  --strata CMD        The strata command (default: deno run --allow-all --no-lock <repo>/cli.ts)
  --no-drop-caches    Do not drop the page cache between runs
  --keep              Keep the scratch directory
  --write             Replace the results section of BENCHMARKS.md
  -h, --help          Show this help`;

/** One tool in one case: what to run, given the run's index and scratch directory. */
interface Contender {
  tool: string;
  /**
   * Whether the command's own peak memory means something (it does the work itself; `ctr` is
   * only a client of containerd): then it runs under `/usr/bin/time` and its VmHWM is reported.
   */
  rss?: boolean;
  /** Prepares a run (untimed) and returns the command plus a check and a cleanup. */
  prepare(scratch: string): Promise<Prepared>;
}

interface Prepared {
  argv: string[];
  cwd?: string;
  /** Checks the result of the first run (untimed), given what the command printed. */
  check?: (result: RunResult) => Promise<void>;
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
  double: string[];
  drop: boolean;
  keep: boolean;
  write: boolean;
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
      double: { type: "string", default: "" },
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
  const runs = intOption("runs", values.runs, 1);
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
    strata: strataCommand(values.strata),
    double: list(values.double),
    drop: !values["no-drop-caches"],
    keep: values.keep,
    write: values.write,
  };
}

async function loadFixtures(o: Options): Promise<Fixture[]> {
  await Deno.mkdir(o.fixtures, { recursive: true });
  const specs = (o.layout ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
  const fixtures: Fixture[] = [];
  if (o.fixture === "make-fixtures") {
    // DIR:TAG names existing make-fixtures.sh output; a bare TAG uses (or builds) the cached one.
    for (const spec of specs.length > 0 ? specs : ["app"]) {
      fixtures.push(await makeFixturesSpec(o.fixtures, spec, { script: MAKE_FIXTURES, log }));
    }
    return await withDoubles(o.fixtures, fixtures, { double: o.double, log });
  }
  for (const spec of specs) fixtures.push(await layoutFixture(o.fixtures, spec, { log }));
  if (fixtures.length > 0) {
    return await withDoubles(o.fixtures, fixtures, { double: o.double, log });
  }
  return [await umociFixture(o.fixtures, { layer1: o.layer1, layer2: o.layer2, log })];
}

async function machineRows(scratch: string): Promise<[string, string][]> {
  return await machine(scratch, {
    repo: REPO,
    what: "scratch and fixtures",
    peers: await peerVersions(["skopeo", "ctr", "containerd", "umoci"]),
  });
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

/** What must be stopped when the benchmark ends or is interrupted. */
const daemons = new Daemons();

async function startContainerd(dir: string): Promise<Containerd> {
  const c = await Containerd.start(dir);
  daemons.add(c);
  return c;
}

async function startRegistry(dir: string): Promise<Registry> {
  const r = await Registry.start(dir);
  daemons.add(r);
  return r;
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

/** `ctr images import` of the fixture's archive, content only, as every case imports it. */
function ctrImportArgv(c: Containerd, f: Fixture): string[] {
  return [
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
  ];
}

function ctrImport(f: Fixture): Contender {
  return {
    tool: "ctr",
    async prepare(scratch) {
      const c = await startContainerd(join(scratch, "containerd"));
      return {
        argv: ctrImportArgv(c, f),
        check: () => checkCtr(c.socket),
        cleanup: () => daemons.stop(c),
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

// ---------------------------------------------------------------------------------------------
// apply: one layer blob into an empty directory.

function layerBlob(f: Fixture, i: number): string {
  const digest = f.blobs[2 + i] ?? "";
  return join(f.layout, "blobs", ...digest.split(":"));
}

function strataApply(o: Options, f: Fixture, i: number): Contender {
  return {
    tool: "strata",
    async prepare(scratch) {
      const dir = join(scratch, "rootfs");
      await Deno.mkdir(dir);
      return {
        argv: [...o.strata, "apply", layerBlob(f, i), dir],
        cwd: REPO,
        check: async (r) => {
          await checkNotEmpty(dir);
          if (r.stdout.trim() !== f.diffIds[i]) {
            throw new FailedPrecondition(
              `Cannot verify strata apply of layer ${
                i + 1
              }: printed "${r.stdout.trim()}", expected "${f.diffIds[i]}"`,
            );
          }
        },
        cleanup: () => rmrf(dir),
      };
    },
  };
}

function tarApply(f: Fixture, i: number): Contender {
  return {
    tool: "tar",
    async prepare(scratch) {
      const dir = join(scratch, "rootfs");
      await Deno.mkdir(dir);
      return {
        argv: ["tar", "-xf", layerBlob(f, i), "-C", dir],
        check: () => checkNotEmpty(dir),
        cleanup: () => rmrf(dir),
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// unpack: a whole image into a snapshotter, its content already local.

function strataUnpack(
  o: Options,
  f: Fixture,
  sn: string,
  mode: { sync: boolean; parallel: boolean },
): Contender {
  const { sync, parallel } = mode;
  return {
    tool: `strata${sync ? " --sync-fs" : ""}${parallel ? "" : " --no-parallel"}`,
    rss: true,
    async prepare(scratch) {
      const root = join(scratch, "strata-root");
      // The content is imported untimed: only the unpack is measured.
      await mustRun([...o.strata, "--root", root, "import", "--base-name", BASE_NAME, f.layout], {
        cwd: REPO,
      });
      const flags = [sync ? "--sync-fs" : "--no-sync-fs", ...(parallel ? [] : ["--no-parallel"])];
      return {
        argv: [...o.strata, "--root", root, "unpack", "--snapshotter", sn, ...flags, IMAGE_NAME],
        cwd: REPO,
        check: async () => {
          const r = await mustRun([
            ...o.strata,
            "--root",
            root,
            "snapshots",
            "--snapshotter",
            sn,
            "ls",
          ], {
            cwd: REPO,
          });
          checkCommitted(r.stdout, f.layerBytes.length, `strata unpack into ${sn}`);
        },
        cleanup: () => rmrf(root),
      };
    },
  };
}

function ctr(c: Containerd, args: string[]): string[] {
  return ["ctr", "-a", c.socket, "-n", "bench", ...args];
}

/** Removes every snapshot of `sn`, children before parents (as ctr-unpack-time.sh does). */
async function ctrRemoveSnapshots(c: Containerd, sn: string): Promise<void> {
  for (let round = 0; round < 20; round++) {
    const r = await mustRun(ctr(c, ["snapshots", "--snapshotter", sn, "ls"]));
    const keys = r.stdout.trim().split("\n").slice(1).map((l) => l.split(/\s+/)[0] ?? "")
      .filter((k) => k !== "");
    if (keys.length === 0) return;
    for (const k of keys) await run(ctr(c, ["snapshots", "--snapshotter", sn, "rm", k]));
  }
  throw new FailedPrecondition(`Cannot remove containerd's ${sn} snapshots`);
}

/**
 * containerd's unpack timed like `shared/tools/ctr-unpack-time.sh`: the image was pulled once from
 * a local registry; before each run every snapshot is removed, then `ctr images pull` finds the
 * content present and only unpacks.
 */
function ctrUnpack(c: Containerd, f: Fixture, sn: string, ref: string): Contender {
  return {
    tool: "ctr",
    async prepare() {
      await ctrRemoveSnapshots(c, sn);
      return {
        argv: ctr(c, ["images", "pull", "--plain-http", "--snapshotter", sn, ref]),
        check: async () => {
          const r = await mustRun(ctr(c, ["snapshots", "--snapshotter", sn, "ls"]));
          checkCommitted(r.stdout, f.layerBytes.length, `containerd's unpack into ${sn}`);
        },
        cleanup: () => Promise.resolve(),
      };
    },
  };
}

/**
 * GNU tar extracting every layer blob (`tar -xzf`, its own `gzip -d`) into its own directory, one
 * after the other: the work of an overlay unpack without whiteouts, xattrs or verification.
 */
function tarLayers(f: Fixture): Contender {
  return {
    tool: "tar",
    rss: true,
    prepare(scratch) {
      const out = join(scratch, "layers");
      const script = f.layerBytes.map((_, i) =>
        `mkdir -p ${quote(join(out, String(i + 1)))} && tar -xzf ${quote(layerBlob(f, i))} -C ${
          quote(join(out, String(i + 1)))
        }`
      ).join(" && ");
      return Promise.resolve({
        argv: ["sh", "-c", script],
        check: () => checkNotEmpty(join(out, "1")),
        cleanup: () => rmrf(out),
      });
    },
  };
}

function umociUnpack(f: Fixture): Contender {
  return {
    tool: "umoci",
    rss: true,
    prepare(scratch) {
      const bundle = join(scratch, "bundle");
      return Promise.resolve({
        argv: ["umoci", "unpack", "--image", `${f.layout}:${FIXTURE_TAG}`, bundle],
        check: () => checkNotEmpty(join(bundle, "rootfs")),
        cleanup: () => rmrf(bundle),
      });
    },
  };
}

async function unpackCases(
  o: Options,
  f: Fixture,
  scratch: string,
  state: { dropped: boolean; dropFailed: boolean },
): Promise<Series[]> {
  const bytes = f.layerBytes.reduce((a, b) => a + b, 0);
  const registry = await startRegistry(join(scratch, `registry-${f.name}`));
  const out: Series[] = [];
  try {
    const ref = `${registry.host}/strata-bench:${FIXTURE_TAG}`;
    await mustRun([
      "skopeo",
      "--insecure-policy",
      "copy",
      "-q",
      "--dest-tls-verify=false",
      `oci:${f.layout}:${FIXTURE_TAG}`,
      `docker://${ref}`,
    ]);
    for (const sn of SNAPSHOTTERS) {
      const c = await startContainerd(join(scratch, `containerd-${f.name}-${sn}`));
      try {
        await mustRun(ctr(c, ["images", "pull", "--plain-http", "--snapshotter", sn, ref]));
        // On native (no `rebase`) strata is always sequential: no --no-parallel rows there.
        const overlay = sn === "overlayfs";
        const contenders = [
          strataUnpack(o, f, sn, { sync: false, parallel: true }),
          strataUnpack(o, f, sn, { sync: true, parallel: true }),
          ...(overlay
            ? [
              strataUnpack(o, f, sn, { sync: false, parallel: false }),
              strataUnpack(o, f, sn, { sync: true, parallel: false }),
            ]
            : []),
          ctrUnpack(c, f, sn, ref),
          ...(overlay ? [umociUnpack(f), tarLayers(f)] : []),
        ];
        out.push(
          ...(await runCase(o, `unpack ${f.name} ${sn}`, contenders, scratch, bytes, state)),
        );
      } finally {
        await daemons.stop(c);
      }
    }
  } finally {
    await daemons.stop(registry);
  }
  return out;
}

async function runCase(
  o: Options,
  name: string,
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
    peakKiB: [],
    bytes,
  }));
  for (let i = 0; i < o.runs; i++) {
    for (const [k, c] of contenders.entries()) {
      const s = series[k]!;
      const dir = join(scratch, `${name}-${c.tool}-${i}`.replace(/[^\w.-]+/g, "_"));
      await Deno.mkdir(dir, { recursive: true });
      const p = await c.prepare(dir);
      try {
        if (o.drop) {
          if (await dropCaches()) state.dropped = true;
          else state.dropFailed = true;
        } else {
          await mustRun(["sync"]);
        }
        // Peak memory (VmHWM) from GNU time, whose own start is a millisecond or two.
        const rssFile = join(dir, "peak-rss");
        const argv = c.rss && TIME !== undefined
          ? [TIME, "-f", "%M", "-o", rssFile, ...p.argv]
          : p.argv;
        const r = await run(argv, p.cwd ? { cwd: p.cwd } : {});
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
        if (i === 0 && p.check) await p.check(r);
        if (argv !== p.argv) {
          const kib = Number((await Deno.readTextFile(rssFile)).trim().split("\n").at(-1));
          if (Number.isFinite(kib)) s.peakKiB.push(kib);
        }
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

/** GNU time, for peak memory; without it no memory is reported. */
const TIME: string | undefined = (() => {
  try {
    return Deno.statSync("/usr/bin/time").isFile ? "/usr/bin/time" : undefined;
  } catch {
    return undefined;
  }
})();

async function main(args: string[]): Promise<number> {
  const o = parseOptions(args);
  if (!o) return 0;
  const notes: string[] = [];
  const tools = ["skopeo", "ctr", "containerd"];
  if (o.cases.includes("apply")) tools.push("tar");
  if (o.cases.includes("unpack")) tools.push("umoci", "docker-registry");
  for (const tool of tools) {
    if (!(await have(tool))) {
      throw new FailedPrecondition(`Cannot run the benchmark: "${tool}" is not installed`);
    }
  }
  if (Deno.uid() !== 0) notes.push("Not run as root: containerd cannot start and caches stay.");
  const fixtures = await loadFixtures(o);
  const fixture = fixtures[0]!;
  const scratch = join(o.fixtures, `scratch-${Deno.pid}`);
  await Deno.mkdir(scratch, { recursive: true });
  const onSignal = () => {
    log("interrupted: stopping containerd and removing scratch space");
    daemons.stopAllNow()
      .then(() => (o.keep ? undefined : rmrf(scratch)))
      .finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  const env = await machineRows(scratch);
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
      } else if (name === "apply") {
        for (const fx of fixtures) {
          for (const [i, layerBytes] of fx.layerBytes.entries()) {
            all.push(
              ...(await runCase(
                o,
                `apply ${fx.name} L${i + 1}`,
                [strataApply(o, fx, i), tarApply(fx, i)],
                scratch,
                layerBytes,
                state,
              )),
            );
          }
        }
      } else if (name === "unpack") {
        for (const fx of fixtures) all.push(...(await unpackCases(o, fx, scratch, state)));
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
          await mustRun(ctrImportArgv(c, f));
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
          await daemons.stop(c);
          await rmrf(root);
        }
      }
    }
  } finally {
    await daemons.stopAll();
    if (!o.keep) await rmrf(scratch);
    Deno.removeSignalListener("SIGINT", onSignal);
  }

  env.push(loadAverageRow());
  notes.push(...cacheNotes(o.drop, state));
  const body = report(o, args, fixtures, env, all, notes, scratch);
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

function describeFixture(f: Fixture): string {
  return `${f.source}. ${f.layerBytes.length} layers (${
    f.layerMediaType.replace("application/vnd.oci.image.layer.v1.", "")
  }) of ${f.layerBytes.map(mb).join(" + ")}; blob bytes ${mb(f.blobBytes)} (manifest, config, ` +
    `layers), archive ${mb(f.archiveBytes)}${
      f.entries !== undefined && f.treeBytes !== undefined
        ? `; ${f.entries.toLocaleString("en-US")} files, directories and links, ${
          mb(f.treeBytes)
        } uncompressed`
        : ""
    }.`;
}

const APPLY_METHOD = `apply: each layer blob applied alone into a fresh empty directory, ` +
  `\`strata apply BLOB DIR\` (decompress, verify the diff ID, root-confined writes, owners, ` +
  `xattrs, modes, nanosecond times) next to GNU \`tar -xf BLOB -C DIR\` (as root: owners, modes ` +
  `and times, no xattrs); neither syncs; MB/s is the layer's compressed size over the median.`;

const UNPACK_METHOD = `unpack: the whole image into a snapshotter, the content already local. ` +
  `strata: \`strata unpack --no-sync-fs\` and \`--sync-fs\` (syncfs(2) before each commit, off ` +
  `the event loop), each in the default mode (overlayfs on several CPUs: layers applied in ` +
  `parallel, committed in order) and, on overlayfs, with \`--no-parallel\`, in a fresh root where ` +
  `the image was imported untimed before the cache drop. ctr: timed like ` +
  `\`shared/tools/ctr-unpack-time.sh\`: the image was pushed to a local \`docker-registry\` and ` +
  `pulled once (untimed); before each run every snapshot is removed, then \`ctr images pull ` +
  `--plain-http --snapshotter SN\` finds the content present and only resolves the manifest and ` +
  `unpacks (containerd does not sync). umoci and tar (listed with overlayfs): \`umoci unpack\` into ` +
  `a new bundle, a flattened rootfs plus an mtree manifest that hashes every file; GNU ` +
  `\`tar -xzf\` of each layer blob into its own directory, one after the other. MB/s is the ` +
  `image's compressed layer bytes over the median; "strata/peer" on the other strata rows ` +
  `compares strata's default row with that variant. Peak RSS is the largest VmHWM of the runs ` +
  "(GNU time's %M; for ctr it would be the client's only, so it is not given).";

function report(
  o: Options,
  args: string[],
  fixtures: Fixture[],
  env: [string, string][],
  series: Series[],
  notes: string[],
  scratch: string,
): string {
  const f = fixtures[0]!;
  const fixtureDirs = fixtures.map((x) => [
    dirname(x.layout),
    fixtures.length === 1 ? "$FIXTURE" : `$FIXTURE_${x.name}`,
  ]);
  const lines = [
    ...reportHead(["deno", "task", "bench", ...args], {
      alias: ["deno", "run", "--allow-all", "bench/run.ts", ...args],
      repo: REPO,
      machine: env,
    }),
    "",
    ...(fixtures.length === 1
      ? [`Fixture: ${describeFixture(f)}`]
      : fixtures.map((x, i) =>
        `${i === 0 ? "Fixtures (the import, export and startup cases use the first)" : ""}` +
        `${i === 0 ? ":\n\n" : ""}- \`${x.name}\`: ${describeFixture(x)}`
      )),
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
    ...(o.cases.includes("apply") ? ["", APPLY_METHOD] : []),
    ...(o.cases.includes("unpack") ? ["", UNPACK_METHOD] : []),
    "",
    ...resultsTable(series),
    "",
    `Commands (last run; ${
      fixtureDirs.map(([dir, v]) => `\`${v}\` = \`${dir}\``).join(", ")
    }, \`$SCRATCH\` = a scratch directory under \`${o.fixtures}\`, removed at the end):`,
    "",
    ...series.map((s) =>
      `- ${s.caseName}, ${s.tool}: \`${
        fixtureDirs.reduce(
          (c, [dir, v]) => c.replaceAll(dir!, v!),
          s.command.replaceAll(Deno.execPath(), "deno").replaceAll(scratch, "$SCRATCH"),
        )
      }\``
    ),
  ];
  if (notes.length) lines.push("", ...notes.map((n) => `Note: ${n}`));
  return lines.join("\n");
}

if (import.meta.main) await runMain("bench", main);
