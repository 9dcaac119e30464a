/**
 * Pull times of `strata pull` side by side with `ctr pull` (containerd) and `skopeo copy` +
 * `umoci unpack`, from a local `docker-registry`, on the `make-fixtures.sh` images. Run with
 * `deno run --allow-all bench/pull.ts --help`.
 *
 * Every fixture is pushed once to one registry on 127.0.0.1; then the contenders run alternately,
 * each run into a fresh, empty destination (a new strata root, a new containerd daemon and root,
 * a new skopeo layout and umoci bundle) after `sync` and a dropped page cache. Each run is checked
 * (committed snapshots, an image record, a non-empty rootfs), so a broken contender cannot look
 * fast. The strata runs use `--progress json`, whose timestamps give a timeline of each pull
 * (start-up, metadata, download and extraction spans and their overlap).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join, resolve } from "node:path";
import { FailedPrecondition, InvalidArgument } from "../errors.ts";
import { type Fixture, FIXTURE_TAG, layoutFixture, makeFixturesFixture } from "./_fixture.ts";
import { Containerd, dropCaches, have, mustRun, Registry, run, type RunResult } from "./_proc.ts";
import { secs, summarise } from "./_report.ts";
import { machine, peerVersions, quote, reportHead } from "./_machine.ts";
import {
  cacheNotes,
  checkCommitted,
  checkNotEmpty,
  Daemons,
  exists,
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

const DEFAULT_LAYOUT = "/var/tmp/strata-fixtures/layout";
const NAMESPACE = "bench";

const HELP = `Usage: deno run --allow-all bench/pull.ts [OPTIONS]

Times a pull from a local docker-registry: strata pull (overlayfs with and without --sync-fs,
native, --no-unpack) against ctr pull (overlayfs, native) and skopeo copy + umoci unpack, the
contenders alternating, each run into a fresh destination after a dropped page cache (root only).

Options:
  --runs N            Runs per contender and fixture (default 3)
  --fixtures LIST     make-fixtures.sh tags to pull (default app,many)
  --layout DIR        make-fixtures.sh output layout (default ${DEFAULT_LAYOUT} when it
                      exists, else built under --cache with shared/tools/make-fixtures.sh)
  --cache DIR         Fixture cache and scratch space (default /tmp/strata-bench-fixtures)
  --out FILE          Where the Markdown report goes (default /tmp/pull_bench.md)
  --profile           Also time strata's pull unpipelined: pull --no-unpack, then unpack
                      (overlayfs, --sync-fs), into the same fresh root
  --strata CMD        The strata command (default: deno run --allow-all --no-lock <repo>/cli.ts)
  --no-drop-caches    Do not drop the page cache between runs
  --wait-idle         On a shared machine: before each run wait (up to 10 minutes) until the
                      CPUs are under 15% busy, and run again (up to --retries times) a run
                      during which other processes used over 10% of the CPUs
  --retries N         With --wait-idle: how often a noisy run is run again (default 2)
  --rate MBIT         Limit what the registry sends to MBIT Mbit/s (tc htb on the loopback
                      device, filtered on the registry's port; removed at the end), as a
                      registry across a network would: downloads then take longer than the
                      unpack, and what overlaps them shows
  --keep              Keep the scratch directory
  -h, --help          Show this help`;

interface Options {
  runs: number;
  fixtures: string[];
  layout: string | undefined;
  cache: string;
  out: string;
  profile: boolean;
  strata: string[];
  drop: boolean;
  keep: boolean;
  waitIdle: boolean;
  retries: number;
  /** Mbit/s the registry may send, or undefined for no limit. */
  rate: number | undefined;
}

/** One command of a run; a run's time is the sum of its steps. */
interface Step {
  argv: string[];
  cwd?: string;
  /** Measure the command's peak RSS (GNU time's `%M`): it does the work itself. */
  rss?: boolean;
}

/** One prepared run. */
interface Prepared {
  steps: Step[];
  /** Checks the run did the work (untimed), given each step's result. */
  check: (results: RunResult[]) => Promise<void>;
  /** Peak RSS (KiB) of a daemon that did the work, read after the run. */
  daemonPeak?: () => Promise<number | undefined>;
  cleanup: () => Promise<void>;
}

/** One contender for one fixture. */
interface Contender {
  /** The row's name. */
  name: string;
  /** Whether its steps print `--progress json` events to analyse. */
  timeline?: boolean;
  prepare(dir: string): Promise<Prepared>;
}

/** Per-run timeline of a strata pull, in seconds from the spawn. */
interface Timeline {
  /** First progress event (the process has started and loaded the CLI). */
  started: number;
  /** The reference resolved. */
  resolved: number;
  /** First layer download began. */
  downloadStart: number;
  /** Last layer download ended. */
  downloadEnd: number;
  /** Seconds with at least one layer downloading. */
  downloadBusy: number;
  /** First layer extraction began (NaN with --no-unpack). */
  extractStart: number;
  /** Last layer committed. */
  extractEnd: number;
  /** Seconds with at least one layer extracting (NaN with --no-unpack). */
  extractBusy: number;
  /** Seconds with a download and an extraction both in progress. */
  overlap: number;
  /** The image record saved. */
  saved: number;
  /** The process exited. */
  exited: number;
}

interface Series {
  fixture: string;
  contender: string;
  command: string;
  seconds: number[];
  syncedSeconds: number[];
  /** Per step: seconds of each run. */
  stepSeconds: number[][];
  peakKiB: number[];
  daemonPeakKiB: number[];
  timelines: Timeline[];
  bytes: number;
}

function parseOptions(args: string[]): Options | undefined {
  const { values } = parseArgs({
    args,
    options: {
      runs: { type: "string", default: "3" },
      fixtures: { type: "string", default: "app,many" },
      layout: { type: "string" },
      cache: { type: "string", default: "/tmp/strata-bench-fixtures" },
      out: { type: "string", default: "/tmp/pull_bench.md" },
      profile: { type: "boolean", default: false },
      strata: { type: "string" },
      "no-drop-caches": { type: "boolean", default: false },
      keep: { type: "boolean", default: false },
      "wait-idle": { type: "boolean", default: false },
      retries: { type: "string", default: "2" },
      rate: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return undefined;
  }
  const runs = intOption("runs", values.runs, 1);
  const retries = intOption("retries", values.retries, 0);
  const fixtures = values.fixtures.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (fixtures.length === 0) {
    throw new InvalidArgument(`Cannot parse --fixtures "${values.fixtures}": no fixture named`);
  }
  for (const f of fixtures) {
    if (!/^[a-z0-9][a-z0-9._-]*$/.test(f)) {
      throw new InvalidArgument(
        `Cannot use fixture "${f}": expected a make-fixtures.sh tag such as "app"`,
      );
    }
  }
  return {
    runs,
    fixtures,
    layout: values.layout === undefined ? undefined : resolve(values.layout),
    cache: resolve(values.cache),
    out: resolve(values.out),
    profile: values.profile,
    strata: strataCommand(values.strata),
    drop: !values["no-drop-caches"],
    keep: values.keep,
    waitIdle: values["wait-idle"],
    retries,
    rate: values.rate === undefined ? undefined : intOption("rate", values.rate, 1),
  };
}

/**
 * Limits what leaves `port` on the loopback device to `mbit` Mbit/s (an htb class for that
 * source port, everything else unlimited). Returns what removes the limit.
 */
async function throttlePort(port: number, mbit: number): Promise<() => Promise<void>> {
  const tc = (args: string) => mustRun(["tc", ...args.split(" ")]);
  await tc("qdisc add dev lo root handle 1: htb default 10");
  const remove = async () => {
    await run(["tc", "qdisc", "del", "dev", "lo", "root"]);
  };
  try {
    await tc("class add dev lo parent 1: classid 1:10 htb rate 100gbit");
    await tc(
      `class add dev lo parent 1: classid 1:20 htb rate ${mbit}mbit ceil ${mbit}mbit burst 256kb`,
    );
    await tc(
      `filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport ${port} 0xffff flowid 1:20`,
    );
  } catch (err) {
    await remove();
    throw err;
  }
  return remove;
}

/** The fixtures, as run.ts's `--fixture make-fixtures` loads them. */
async function loadFixtures(o: Options): Promise<Fixture[]> {
  await Deno.mkdir(o.cache, { recursive: true });
  let layout = o.layout;
  if (layout === undefined && await exists(join(DEFAULT_LAYOUT, "index.json"))) {
    layout = DEFAULT_LAYOUT;
  }
  const out: Fixture[] = [];
  for (const tag of o.fixtures) {
    out.push(
      layout !== undefined
        ? await layoutFixture(o.cache, `${layout}:${tag}`, { log })
        : await makeFixturesFixture(o.cache, tag, { script: MAKE_FIXTURES, log }),
    );
  }
  return out;
}

/** What must be stopped when the benchmark ends or is interrupted. */
const daemons = new Daemons();

// ---------------------------------------------------------------------------------------------
// Contenders.

function strataPull(
  o: Options,
  f: Fixture,
  ref: string,
  mode: { snapshotter: string; flags: string[] },
): Contender {
  const unpack = !mode.flags.includes("--no-unpack");
  const name = `strata${unpack ? ` ${mode.snapshotter}` : ""}${
    mode.flags.length ? " " + mode.flags.join(" ") : ""
  }`;
  return {
    name,
    timeline: true,
    prepare(dir) {
      const root = join(dir, "strata-root");
      const strata = (...args: string[]) => [...o.strata, "--root", root, ...args];
      return Promise.resolve({
        steps: [{
          argv: strata(
            "pull",
            ...(unpack ? ["--snapshotter", mode.snapshotter] : []),
            ...mode.flags,
            "--progress",
            "json",
            ref,
          ),
          cwd: REPO,
          rss: true,
        }],
        check: async () => {
          const images = await mustRun(strata("images", "ls"), { cwd: REPO });
          if (!images.stdout.includes(ref)) {
            throw new FailedPrecondition(`Cannot verify ${name}: image "${ref}" is not listed`);
          }
          const content = await mustRun(strata("content", "ls"), { cwd: REPO });
          for (const digest of f.blobs) {
            if (!content.stdout.includes(digest)) {
              throw new FailedPrecondition(`Cannot verify ${name}: blob "${digest}" is missing`);
            }
          }
          const snaps = await mustRun(
            strata("snapshots", "--snapshotter", mode.snapshotter, "ls"),
            {
              cwd: REPO,
            },
          );
          checkCommitted(snaps.stdout, unpack ? f.layerBytes.length : 0, name);
        },
        cleanup: () => rmrf(root),
      });
    },
  };
}

/** strata's pull unpipelined: `pull --no-unpack`, then `unpack`, into one fresh root. */
function strataSequential(o: Options, f: Fixture, ref: string): Contender {
  const name = "strata overlayfs: pull --no-unpack; unpack";
  return {
    name,
    prepare(dir) {
      const root = join(dir, "strata-root");
      const strata = (...args: string[]) => [...o.strata, "--root", root, ...args];
      return Promise.resolve({
        steps: [
          { argv: strata("pull", "--no-unpack", "-q", ref), cwd: REPO, rss: true },
          { argv: strata("unpack", "--snapshotter", "overlayfs", ref), cwd: REPO, rss: true },
        ],
        check: async () => {
          const snaps = await mustRun(strata("snapshots", "--snapshotter", "overlayfs", "ls"), {
            cwd: REPO,
          });
          checkCommitted(snaps.stdout, f.layerBytes.length, name);
        },
        cleanup: () => rmrf(root),
      });
    },
  };
}

/** The pid of the containerd started with `dir`'s config, from `/proc`. */
async function containerdPid(dir: string): Promise<number | undefined> {
  const config = join(dir, "config.toml");
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const cmdline = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
    const argv = cmdline.split("\0");
    if (argv[0]?.endsWith("containerd") && argv.includes(config)) return Number(e.name);
  }
  return undefined;
}

async function vmHwm(pid: number): Promise<number | undefined> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`).catch(() => "");
  const kib = Number(/VmHWM:\s*(\d+)\s*kB/.exec(status)?.[1] ?? NaN);
  return Number.isFinite(kib) ? kib : undefined;
}

/**
 * `ctr images pull` into a containerd started fresh (untimed) for the run: a new root, so no
 * content, image or snapshot is left from an earlier run; stopped and removed afterwards.
 */
function ctrPull(f: Fixture, ref: string, snapshotter: string): Contender {
  const name = `ctr ${snapshotter}`;
  return {
    name,
    async prepare(dir) {
      const c = await Containerd.start(join(dir, "containerd"));
      daemons.add(c);
      const pid = await containerdPid(c.dir);
      const ctr = (...args: string[]) => ["ctr", "-a", c.socket, "-n", NAMESPACE, ...args];
      return {
        steps: [{
          argv: ctr("images", "pull", "--plain-http", "--snapshotter", snapshotter, ref),
          rss: true,
        }],
        check: async () => {
          const images = await mustRun(ctr("images", "ls", "-q"));
          if (!images.stdout.split("\n").includes(ref)) {
            throw new FailedPrecondition(`Cannot verify ${name}: image "${ref}" is not listed`);
          }
          const snaps = await mustRun(ctr("snapshots", "--snapshotter", snapshotter, "ls"));
          checkCommitted(snaps.stdout, f.layerBytes.length, name);
        },
        daemonPeak: () => pid === undefined ? Promise.resolve(undefined) : vmHwm(pid),
        cleanup: () => daemons.stop(c),
      };
    },
  };
}

/** `skopeo copy` from the registry into a new OCI layout, then `umoci unpack` of it. */
function skopeoUmoci(f: Fixture, ref: string): Contender {
  const name = "skopeo copy + umoci unpack";
  return {
    name,
    prepare(dir) {
      const layout = join(dir, "oci");
      const bundle = join(dir, "bundle");
      return Promise.resolve({
        steps: [
          {
            argv: [
              "skopeo",
              "--insecure-policy",
              "copy",
              "-q",
              "--src-tls-verify=false",
              `docker://${ref}`,
              `oci:${layout}:${FIXTURE_TAG}`,
            ],
            rss: true,
          },
          { argv: ["umoci", "unpack", "--image", `${layout}:${FIXTURE_TAG}`, bundle], rss: true },
        ],
        check: async () => {
          let blobs = 0;
          for await (const e of Deno.readDir(join(layout, "blobs", "sha256"))) {
            if (e.isFile) blobs++;
          }
          if (blobs < f.blobs.length) {
            throw new FailedPrecondition(
              `Cannot verify ${name}: ${blobs} blobs in "${layout}", expected ${f.blobs.length}`,
            );
          }
          await checkNotEmpty(join(bundle, "rootfs"));
        },
        cleanup: async () => {
          await rmrf(layout);
          await rmrf(bundle);
        },
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Timelines from `--progress json`.

interface JsonEvent {
  kind: string;
  status: string;
  id: string;
  time: string;
}

/** Total length of the union of some intervals. */
function unionLength(intervals: [number, number][]): number {
  const s = [...intervals].filter(([a, b]) => b > a).sort((x, y) => x[0] - y[0]);
  let total = 0;
  let cur: [number, number] | undefined;
  for (const [a, b] of s) {
    if (cur === undefined || a > cur[1]) {
      if (cur) total += cur[1] - cur[0];
      cur = [a, b];
    } else {
      cur[1] = Math.max(cur[1], b);
    }
  }
  if (cur) total += cur[1] - cur[0];
  return total;
}

/** Length of the intersection of two unions of intervals. */
function overlapLength(a: [number, number][], b: [number, number][]): number {
  const pairs: [number, number][] = [];
  for (const [a0, a1] of a) {
    for (const [b0, b1] of b) {
      const lo = Math.max(a0, b0);
      const hi = Math.min(a1, b1);
      if (hi > lo) pairs.push([lo, hi]);
    }
  }
  return unionLength(pairs);
}

/** Builds a run's timeline from its JSON progress lines; times are seconds after `spawnedAt`. */
function timeline(stdout: string, spawnedAt: number, ms: number): Timeline | undefined {
  const events: JsonEvent[] = [];
  for (const line of stdout.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const e = JSON.parse(line) as Partial<JsonEvent>;
      if (typeof e.time === "string" && typeof e.status === "string") events.push(e as JsonEvent);
    } catch {
      // Not an event.
    }
  }
  if (events.length === 0) return undefined;
  const t = (e: JsonEvent) => (Date.parse(e.time) - spawnedAt) / 1000;
  const layer = new Map<string, Record<string, number>>();
  for (const e of events) {
    if (e.kind !== "layer") continue;
    const m = layer.get(e.id) ?? {};
    // The first event of each status (downloading repeats).
    if (m[e.status] === undefined) m[e.status] = t(e);
    layer.set(e.id, m);
  }
  const downloads: [number, number][] = [];
  const extracts: [number, number][] = [];
  for (const m of layer.values()) {
    const start = m.waiting ?? m.downloading;
    if (start !== undefined && m.downloaded !== undefined) downloads.push([start, m.downloaded]);
    if (m.extracting !== undefined && m.extracted !== undefined) {
      extracts.push([m.extracting, m.extracted]);
    }
  }
  const first = (status: string) => {
    const e = events.find((x) => x.kind === "image" && x.status === status);
    return e ? t(e) : NaN;
  };
  const min = (xs: number[]) => xs.length ? Math.min(...xs) : NaN;
  const max = (xs: number[]) => xs.length ? Math.max(...xs) : NaN;
  // Download starts count from the first byte event when one was seen (waiting = queued).
  const byteStarts = [...layer.values()].map((m) => m.downloading ?? m.waiting)
    .filter((x): x is number => x !== undefined);
  return {
    started: t(events[0]!),
    resolved: first("resolved"),
    downloadStart: min(byteStarts),
    downloadEnd: max(downloads.map(([, b]) => b)),
    downloadBusy: unionLength(downloads),
    extractStart: min(extracts.map(([a]) => a)),
    extractEnd: max(extracts.map(([, b]) => b)),
    extractBusy: extracts.length ? unionLength(extracts) : NaN,
    overlap: extracts.length ? overlapLength(downloads, extracts) : NaN,
    saved: first("saved"),
    exited: ms / 1000,
  };
}

// ---------------------------------------------------------------------------------------------
// Running.

/** GNU time, for peak memory; without it no memory is reported. */
const TIME: string | undefined = (() => {
  try {
    return Deno.statSync("/usr/bin/time").isFile ? "/usr/bin/time" : undefined;
  } catch {
    return undefined;
  }
})();

/** What the runs share: cache drops and how busy the machine was before each run. */
interface RunState {
  dropped: boolean;
  dropFailed: boolean;
  /** Per run: the fraction of CPU time busy in the second before it. */
  busy: number[];
  /** Milliseconds `--wait-idle` waited. */
  waited: number;
  /** Per kept run: the share of the CPUs other processes used during it. */
  foreign: number[];
  /** Runs kept although other processes used over {@linkcode FOREIGN_LIMIT} of the CPUs. */
  noisy: number;
  /** Runs discarded and run again (`--wait-idle`) for that reason. */
  discarded: number;
}

/** A run starting above this CPU busy fraction is counted as noisy. */
const BUSY_LIMIT = 0.15;

function pct(x: number): string {
  return Number.isFinite(x) ? `${(x * 100).toFixed(0)}%` : "—";
}

/** The busy fraction of all CPUs over `ms` milliseconds, from `/proc/stat`. */
async function cpuBusy(ms: number): Promise<number> {
  const sample = async () => {
    const line = (await Deno.readTextFile("/proc/stat").catch(() => "")).split("\n")[0] ?? "";
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { total, idle };
  };
  const a = await sample();
  await new Promise((res) => setTimeout(res, ms));
  const b = await sample();
  const total = b.total - a.total;
  return total > 0 ? 1 - (b.idle - a.idle) / total : NaN;
}

/**
 * How busy the CPUs are just before a run (nothing of this benchmark runs then); with
 * `--wait-idle`, first waits (up to 10 minutes) until they are under {@linkcode BUSY_LIMIT}.
 */
async function quiet(o: Options, state: RunState): Promise<number> {
  let busy = await cpuBusy(1000);
  const t0 = performance.now();
  let told = false;
  while (o.waitIdle && busy > BUSY_LIMIT && performance.now() - t0 < 600_000) {
    if (!told) log(`waiting for the machine to go idle (CPU ${pct(busy)} busy)`);
    told = true;
    await new Promise((res) => setTimeout(res, 4000));
    busy = await cpuBusy(1000);
  }
  state.waited += performance.now() - t0;
  return busy;
}

/** One run's measurements. */
interface Done {
  ms: number;
  syncMs: number;
  stepMs: number[];
  peakKiB: number | undefined;
  daemonPeakKiB: number | undefined;
  timeline: Timeline | undefined;
  command: string;
  /** CPU time other processes used during the run, as a fraction of all CPUs' time. */
  foreign: number;
}

/** Prepares, times, checks and cleans up one run of one contender in `dir`. */
async function runOnce(
  o: Options,
  f: Fixture,
  c: Contender,
  dir: string,
  state: RunState,
): Promise<Done> {
  await rmrf(dir);
  await Deno.mkdir(dir, { recursive: true });
  const p = await c.prepare(dir);
  try {
    state.busy.push(await quiet(o, state));
    if (o.drop) {
      if (await dropCaches()) state.dropped = true;
      else state.dropFailed = true;
    } else {
      await mustRun(["sync"]);
    }
    const results: RunResult[] = [];
    let peak: number | undefined;
    let tl: Timeline | undefined;
    const before = await processTicks();
    const t0 = performance.now();
    for (const [j, step] of p.steps.entries()) {
      const rssFile = join(dir, `peak-rss-${j}`);
      const argv = step.rss && TIME !== undefined
        ? [TIME, "-f", "%M", "-o", rssFile, ...step.argv]
        : step.argv;
      const spawnedAt = Date.now();
      const r = await run(argv, step.cwd ? { cwd: step.cwd } : {});
      if (r.code !== 0) {
        throw new FailedPrecondition(
          `Cannot run ${c.name} on "${f.name}": exit code ${r.code}: ${
            (r.stderr || r.stdout).trim().split("\n").slice(-6).join(" | ")
          }`,
        );
      }
      results.push(r);
      if (argv !== step.argv) {
        const kib = Number((await Deno.readTextFile(rssFile)).trim().split("\n").at(-1));
        if (Number.isFinite(kib)) peak = Math.max(peak ?? 0, kib);
      }
      if (c.timeline) tl = timeline(r.stdout, spawnedAt, r.ms);
    }
    const ms = results.reduce((a, r) => a + r.ms, 0);
    const t1 = performance.now();
    await mustRun(["sync"]);
    const syncMs = performance.now() - t1;
    const foreign = foreignShare(before, await processTicks(), performance.now() - t0);
    await p.check(results);
    return {
      ms,
      syncMs,
      stepMs: results.map((r) => r.ms),
      peakKiB: peak,
      daemonPeakKiB: await p.daemonPeak?.(),
      timeline: tl,
      command: p.steps.map((st) => st.argv.map(quote).join(" ")).join(" && "),
      foreign,
    };
  } finally {
    await p.cleanup();
    await rmrf(dir);
  }
}

/** A run using more than this share of all CPUs for other processes is noisy. */
const FOREIGN_LIMIT = 0.1;

/** Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

/** Per process: its parent and CPU ticks (user and system, its reaped children's included). */
async function processTicks(): Promise<Map<number, { ppid: number; ticks: number }>> {
  const out = new Map<number, { ppid: number; ticks: number }>();
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const stat = await Deno.readTextFile(`/proc/${e.name}/stat`).catch(() => "");
    // The fields after the command name (which may hold spaces), from field 3 (state) on.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ppid = Number(rest[1]);
    const ticks = [11, 12, 13, 14].reduce((a, i) => a + Number(rest[i] ?? 0), 0);
    if (Number.isFinite(ppid) && Number.isFinite(ticks)) out.set(Number(e.name), { ppid, ticks });
  }
  return out;
}

/**
 * The share of all CPUs' time that processes other than this benchmark and its descendants (and
 * kernel threads) used between two {@linkcode processTicks} snapshots `ms` apart. A process's
 * ticks include its reaped children's, so the short-lived children of a long-lived process count
 * too; a process gone by the second snapshot had its ticks up to the first passed on to its
 * parent, and they are taken off again.
 */
function foreignShare(
  before: Map<number, { ppid: number; ticks: number }>,
  after: Map<number, { ppid: number; ticks: number }>,
  ms: number,
): number {
  const all = new Map([...before, ...after]);
  const mine = new Set<number>([Deno.pid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const [pid, p] of all) {
      if (!mine.has(pid) && mine.has(p.ppid)) {
        mine.add(pid);
        grew = true;
      }
    }
  }
  const foreign = (pid: number, p: { ppid: number }) => !mine.has(pid) && pid !== 2 && p.ppid !== 2;
  let ticks = 0;
  for (const [pid, p] of after) {
    if (foreign(pid, p)) ticks += p.ticks - (before.get(pid)?.ticks ?? 0);
  }
  for (const [pid, p] of before) {
    if (!after.has(pid) && foreign(pid, p)) ticks -= p.ticks;
  }
  const cpus = navigator.hardwareConcurrency || 1;
  return ms > 0 ? Math.max(0, ticks / USER_HZ / (ms / 1000 * cpus)) : NaN;
}

async function runCase(
  o: Options,
  f: Fixture,
  contenders: Contender[],
  scratch: string,
  state: RunState,
): Promise<Series[]> {
  const bytes = f.blobBytes;
  const series: Series[] = contenders.map((c) => ({
    fixture: f.name,
    contender: c.name,
    command: "",
    seconds: [],
    syncedSeconds: [],
    stepSeconds: [],
    peakKiB: [],
    daemonPeakKiB: [],
    timelines: [],
    bytes,
  }));
  for (let i = 0; i < o.runs; i++) {
    for (const [k, c] of contenders.entries()) {
      const s = series[k]!;
      for (let attempt = 1;; attempt++) {
        const done = await runOnce(o, f, c, join(scratch, `${f.name}-${k}-${i}`), state);
        const noisy = done.foreign > FOREIGN_LIMIT;
        log(
          `${f.name.padEnd(5)} ${c.name.padEnd(44)} run ${i + 1}/${o.runs}: ${
            (done.ms / 1000).toFixed(2)
          } s (+ sync ${(done.syncMs / 1000).toFixed(2)} s)${
            done.stepMs.length > 1
              ? ` [${done.stepMs.map((x) => (x / 1000).toFixed(2)).join(" + ")}]`
              : ""
          }; other processes ${pct(done.foreign)} of the CPUs${
            noisy && o.waitIdle && attempt <= o.retries ? ": discarded, again" : ""
          }`,
        );
        if (noisy && o.waitIdle && attempt <= o.retries) {
          state.discarded++;
          continue;
        }
        if (noisy) state.noisy++;
        state.foreign.push(done.foreign);
        s.seconds.push(done.ms / 1000);
        s.syncedSeconds.push((done.ms + done.syncMs) / 1000);
        done.stepMs.forEach((x, j) => (s.stepSeconds[j] ??= []).push(x / 1000));
        if (done.peakKiB !== undefined) s.peakKiB.push(done.peakKiB);
        if (done.daemonPeakKiB !== undefined) s.daemonPeakKiB.push(done.daemonPeakKiB);
        if (done.timeline) s.timelines.push(done.timeline);
        s.command = done.command;
        break;
      }
    }
  }
  return series;
}

// ---------------------------------------------------------------------------------------------
// Report.

async function machineRows(scratch: string): Promise<[string, string][]> {
  return await machine(scratch, {
    repo: REPO,
    what: "registry, scratch and fixtures",
    peers: await peerVersions(["containerd", "skopeo", "umoci", "docker-registry"]),
  });
}

function mib(kib: number[]): string {
  return kib.length === 0 ? "—" : (Math.max(...kib) / 1024).toFixed(0);
}

function median(xs: number[]): number {
  return summarise(xs.filter((x) => Number.isFinite(x))).median;
}

function ratioCell(a: number, b: number): string {
  const r = a / b;
  if (!Number.isFinite(r)) return "—";
  return `**${r.toFixed(2)}** (${
    r <= 1 ? `${(1 / r).toFixed(2)}x faster` : `${r.toFixed(2)}x slower`
  })`;
}

function resultsTable(series: Series[]): string[] {
  const lines = [
    "| fixture | contender | runs | median s | min s | max s | MB/s | median s incl. sync | peak RSS MB (max) | steps (median s) |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
  ];
  for (const s of series) {
    const t = summarise(s.seconds);
    const d = summarise(s.syncedSeconds);
    const rss = s.daemonPeakKiB.length
      ? `client ${mib(s.peakKiB)}, containerd ${mib(s.daemonPeakKiB)}`
      : mib(s.peakKiB);
    const steps = s.stepSeconds.length > 1
      ? s.stepSeconds.map((x) => secs(summarise(x).median)).join(" + ")
      : "";
    lines.push(
      `| ${s.fixture} | ${s.contender} | ${s.seconds.length} | ${secs(t.median)} | ${
        secs(t.min)
      } | ${secs(t.max)} | ${(s.bytes / 1e6 / t.median).toFixed(0)} | ${
        secs(d.median)
      } | ${rss} | ${steps} |`,
    );
  }
  return lines;
}

/** The comparisons the report makes: [label, numerator row, denominator row]. */
const RATIOS: [string, string, string][] = [
  ["strata / ctr, overlayfs", "strata overlayfs", "ctr overlayfs"],
  ["strata --no-sync-fs / ctr, overlayfs", "strata overlayfs --no-sync-fs", "ctr overlayfs"],
  ["strata / ctr, native", "strata native", "ctr native"],
  ["strata overlayfs / (skopeo + umoci)", "strata overlayfs", "skopeo copy + umoci unpack"],
  ["strata native / (skopeo + umoci)", "strata native", "skopeo copy + umoci unpack"],
  [
    "strata --no-unpack / strata overlayfs (download share)",
    "strata --no-unpack",
    "strata overlayfs",
  ],
  [
    "strata pipelined / unpipelined (pull --no-unpack; unpack)",
    "strata overlayfs",
    "strata overlayfs: pull --no-unpack; unpack",
  ],
];

function ratioTable(series: Series[], fixtures: Fixture[]): string[] {
  const lines = [
    "| fixture | comparison | ratio of medians | incl. sync |",
    "|---|---|---:|---:|",
  ];
  for (const f of fixtures) {
    for (const [label, a, b] of RATIOS) {
      const x = series.find((s) => s.fixture === f.name && s.contender === a);
      const y = series.find((s) => s.fixture === f.name && s.contender === b);
      if (!x || !y) continue;
      lines.push(
        `| ${f.name} | ${label} | ${ratioCell(median(x.seconds), median(y.seconds))} | ${
          (median(x.syncedSeconds) / median(y.syncedSeconds)).toFixed(2)
        } |`,
      );
    }
  }
  return lines;
}

function timelineTable(series: Series[]): string[] {
  const lines = [
    "| fixture | contender | start-up | resolved | first layer byte | downloads end | download busy | first extract | last commit | extract busy | download ∥ extract | image saved | exit |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const s of series) {
    if (s.timelines.length === 0) continue;
    const m = (k: keyof Timeline) => secs(median(s.timelines.map((t) => t[k])));
    lines.push(
      `| ${s.fixture} | ${s.contender} | ${m("started")} | ${m("resolved")} | ${
        m("downloadStart")
      } | ${m("downloadEnd")} | ${m("downloadBusy")} | ${m("extractStart")} | ${
        m("extractEnd")
      } | ${m("extractBusy")} | ${m("overlap")} | ${m("saved")} | ${m("exited")} |`,
    );
  }
  return lines;
}

function describeFixture(f: Fixture): string {
  return `\`${f.name}\`: ${f.source}, ${f.layerBytes.length} layer${
    f.layerBytes.length === 1 ? "" : "s"
  } (${f.layerMediaType.replace("application/vnd.oci.image.layer.v1.", "")}) of ${
    f.layerBytes.map(mb).join(" + ")
  }; ${mb(f.blobBytes)} of blobs (manifest, config, layers).`;
}

function report(
  o: Options,
  args: string[],
  fixtures: Fixture[],
  env: [string, string][],
  series: Series[],
  notes: string[],
  scratch: string,
  host: string,
): string {
  const method = `Method: ${o.runs} run${o.runs === 1 ? "" : "s"} per contender and fixture, ` +
    `the contenders alternating (one run of each in turn, then again); ${
      o.drop && !notes.some((n) => n.includes("could not"))
        ? "`sync` and the page cache, dentries and inodes dropped before every run"
        : "page cache NOT dropped"
    }. Every fixture was pushed once (untimed) with \`skopeo copy --dest-tls-verify=false\` to ` +
    `one \`docker-registry\` on ${host} (plain http; its blobs on the same disk${
      o.rate === undefined
        ? ""
        : `; what it sends limited to ${o.rate} Mbit/s, ${
          (o.rate / 8).toFixed(0)
        } MB/s, by a tc htb class on the loopback device`
    }). Every run ` +
    `starts from an empty destination: a new strata root; a containerd started (untimed) with a ` +
    `new root for that run alone and stopped and removed after it (faster and cleaner than ` +
    `removing the image, its content and snapshots between runs); a new skopeo OCI layout and ` +
    `umoci bundle. Times are the wall clock of the whole command, process start included (strata: ` +
    `\`deno run\` loading the CLI from Deno's module cache, warmed once before the runs; ctr: ` +
    `the client, which first fetches every blob (\`--max-concurrent-downloads\` left at its ` +
    `default 0), streaming each into the daemon's content store, and only then has the daemon ` +
    `unpack the layers, one after the other: it prints "unpacking linux/amd64 sha256:…" once ` +
    `the downloads are done). ` +
    `skopeo + umoci is the sum of its two commands. MB/s = the image's blob bytes / median. ` +
    `"incl. sync" adds a \`sync\` right after the command, for equal durability: strata ` +
    `--sync-fs syncfs(2)s each layer before committing it, containerd does not sync snapshots, ` +
    `all three fsync stored blobs. Every run is checked: strata and ctr list the image and ` +
    `exactly one committed snapshot per layer (none for --no-unpack, which must hold every ` +
    `blob), umoci's rootfs is non-empty and the skopeo layout holds every blob. Peak RSS is ` +
    `GNU time's %M (the largest VmHWM over the runs); for ctr it is the client's and, ` +
    `separately, the fresh containerd's VmHWM after the pull (its start-up included); for ` +
    `skopeo + umoci the larger of the two.${
      o.waitIdle
        ? ` --wait-idle: before each run the benchmark waited for the CPUs to be under ` +
          `${pct(BUSY_LIMIT)} busy, and ran again (up to ${o.retries} times) a run during which ` +
          `other processes (not its own descendants or kernel threads; from /proc/<pid>/stat ` +
          `times) used over ${pct(FOREIGN_LIMIT)} of the CPUs.`
        : ""
    }`;
  const tlNote =
    `Timeline of the strata pulls: medians over the runs of seconds after the spawn, ` +
    `from the \`--progress json\` events' timestamps (millisecond resolution): start-up = first ` +
    `event (Deno started and the CLI loaded); first layer byte and downloads end = first ` +
    `\`downloading\` and last \`downloaded\` of a layer; download busy = time with at least one ` +
    `layer downloading; first extract and last commit = first \`extracting\` and last ` +
    `\`extracted\` (after its syncfs and commit); extract busy = time with at least one layer ` +
    `being extracted (or waiting on its syncfs); download ∥ extract = time both were going on; ` +
    `exit = the wall clock of the command.`;
  const lines = [
    ...reportHead(["deno", "run", "--allow-all", "bench/pull.ts", ...args], {
      repo: REPO,
      machine: env,
    }),
    "",
    "Fixtures (`shared/tools/make-fixtures.sh`):",
    "",
    ...fixtures.map((f) => `- ${describeFixture(f)}`),
    "",
    method,
    "",
    ...resultsTable(series),
    "",
    "Ratios (strata's median / the peer's median: **< 1 means strata is faster**):",
    "",
    ...ratioTable(series, fixtures),
    "",
    tlNote,
    "",
    ...timelineTable(series),
    "",
    `Commands (last run; \`$SCRATCH\` = a per-run scratch directory under \`${o.cache}\`, ` +
    `\`$REGISTRY\` = \`${host}\`):`,
    "",
    ...series.map((s) =>
      `- ${s.fixture}, ${s.contender}: \`${
        s.command.replaceAll(Deno.execPath(), "deno").replace(
          new RegExp(`${scratch.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}/[^/ ]+`, "g"),
          "$SCRATCH",
        ).replaceAll(host, "$REGISTRY")
      }\``
    ),
  ];
  if (notes.length) lines.push("", ...notes.map((n) => `Note: ${n}`));
  return lines.join("\n") + "\n";
}

// ---------------------------------------------------------------------------------------------

async function main(args: string[]): Promise<number> {
  const o = parseOptions(args);
  if (!o) return 0;
  const tools = ["skopeo", "umoci", "ctr", "containerd", "docker-registry"];
  for (const tool of o.rate === undefined ? tools : [...tools, "tc"]) {
    if (!(await have(tool))) {
      throw new FailedPrecondition(`Cannot run the pull benchmark: "${tool}" is not installed`);
    }
  }
  const notes: string[] = [];
  if (Deno.uid() !== 0) notes.push("Not run as root: containerd cannot start and caches stay.");
  if (TIME === undefined) notes.push("No /usr/bin/time: peak RSS is not measured.");
  const fixtures = await loadFixtures(o);
  const scratch = join(o.cache, `pull-scratch-${Deno.pid}`);
  await Deno.mkdir(scratch, { recursive: true });
  let unthrottle: (() => Promise<void>) | undefined;
  const onSignal = () => {
    log("interrupted: stopping the daemons and removing scratch space");
    daemons.stopAllNow()
      .then(() => unthrottle?.())
      .then(() => (o.keep ? undefined : rmrf(scratch)))
      .finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  const env = await machineRows(scratch);
  const state: RunState = {
    dropped: false,
    dropFailed: false,
    busy: [],
    waited: 0,
    foreign: [],
    noisy: 0,
    discarded: 0,
  };
  const all: Series[] = [];
  let host = "";
  try {
    // Fill Deno's module cache once, so that no run pays for transpiling the CLI.
    await mustRun([...o.strata, "--version"], { cwd: REPO });
    const registry = await Registry.start(join(scratch, "registry"));
    daemons.add(registry);
    host = registry.host;
    for (const f of fixtures) {
      const ref = `${host}/${f.name}:${FIXTURE_TAG}`;
      log(`pushing ${f.name} to ${ref}`);
      await mustRun([
        "skopeo",
        "--insecure-policy",
        "copy",
        "-q",
        "--dest-tls-verify=false",
        `oci:${f.layout}:${FIXTURE_TAG}`,
        `docker://${ref}`,
      ]);
    }
    if (o.rate !== undefined) {
      unthrottle = await throttlePort(Number(host.split(":")[1]), o.rate);
    }
    for (const f of fixtures) {
      const ref = `${host}/${f.name}:${FIXTURE_TAG}`;
      const contenders = [
        strataPull(o, f, ref, { snapshotter: "overlayfs", flags: [] }),
        ctrPull(f, ref, "overlayfs"),
        strataPull(o, f, ref, { snapshotter: "overlayfs", flags: ["--no-sync-fs"] }),
        skopeoUmoci(f, ref),
        strataPull(o, f, ref, { snapshotter: "native", flags: [] }),
        ctrPull(f, ref, "native"),
        strataPull(o, f, ref, { snapshotter: "overlayfs", flags: ["--no-unpack"] }),
        ...(o.profile ? [strataSequential(o, f, ref)] : []),
      ];
      all.push(...(await runCase(o, f, contenders, scratch, state)));
    }
  } finally {
    await unthrottle?.();
    await daemons.stopAll();
    if (!o.keep) await rmrf(scratch);
    Deno.removeSignalListener("SIGINT", onSignal);
  }
  env.push(loadAverageRow());
  const busy = summarise(state.busy);
  const foreign = summarise(state.foreign);
  env.push([
    "other processes (not this benchmark's)",
    `CPU use during the kept runs: median ${pct(foreign.median)}, max ${
      pct(foreign.max)
    } of both CPUs; CPUs busy in the second before each attempt: median ${pct(busy.median)}, ` +
    `max ${pct(busy.max)}${
      o.waitIdle
        ? `; --wait-idle waited ${(state.waited / 1000).toFixed(0)} s in all and ran ` +
          `${state.discarded} run${state.discarded === 1 ? "" : "s"} again`
        : ""
    }`,
  ]);
  if (state.noisy > 0) {
    notes.push(
      `${state.noisy} kept run${state.noisy === 1 ? "" : "s"} shared the machine with other ` +
        `processes using over ${pct(FOREIGN_LIMIT)} of the CPUs: those timings are noisier.`,
    );
  }
  notes.push(...cacheNotes(o.drop, state));
  const body = report(o, args, fixtures, env, all, notes, scratch, host);
  await writeReport(o.out, body);
  return 0;
}

if (import.meta.main) await runMain("bench/pull", main);
