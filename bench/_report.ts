/**
 * Statistics and Markdown output for the benchmark.
 *
 * @module
 */

/** Timings of one contender in one case. */
export interface Series {
  /** The case's name. */
  caseName: string;
  /** The contender (`strata`, `ctr`, `skopeo`). */
  tool: string;
  /** The exact command of the last run, for the record. */
  command: string;
  /** Wall-clock seconds of each run (spawn included). */
  seconds: number[];
  /** Seconds of each run including a `sync` right after the command. */
  syncedSeconds: number[];
  /** Peak resident memory (VmHWM, KiB) of each run, when measured. */
  peakKiB: number[];
  /** Bytes moved per run (the image's blob bytes), or 0 when throughput makes no sense. */
  bytes: number;
}

/** Median, minimum and maximum. */
export interface Summary {
  /** The median (the mean of the middle two for an even count). */
  median: number;
  /** The smallest value. */
  min: number;
  /** The largest value. */
  max: number;
}

/**
 * Median, minimum and maximum of some numbers.
 *
 * @example
 * ```ts ignore
 * summarise([3, 1, 2]).median;
 * ```
 *
 * @param values The numbers (at least one).
 * @returns The summary.
 */
export function summarise(values: number[]): Summary {
  if (values.length === 0) return { median: NaN, min: NaN, max: NaN };
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  const median = s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]! };
}

/** Seconds with three significant digits, `—` for no value. */
export function secs(x: number): string {
  if (!Number.isFinite(x)) return "—";
  return x < 1 ? x.toFixed(3) : x < 10 ? x.toFixed(2) : x.toFixed(1);
}

function ratio(x: number): string {
  return Number.isFinite(x) ? `**${x.toFixed(2)}**` : "—";
}

function peak(kib: number[]): string {
  return kib.length === 0 ? "—" : (Math.max(...kib) / 1024).toFixed(0);
}

function plainRatio(x: number): string {
  return Number.isFinite(x) ? x.toFixed(2) : "—";
}

/**
 * The results table: one row per case and contender, with the ratio strata/peer against the strata
 * row of the same case.
 *
 * @example
 * ```ts ignore
 * console.log(resultsTable(series));
 * ```
 *
 * @param series The timings, strata first within each case.
 * @returns Markdown lines.
 */
export function resultsTable(series: Series[]): string[] {
  const lines = [
    "| case | tool | runs | median s | min s | max s | MB/s (median) | median s incl. sync | strata/peer | strata/peer incl. sync | peak RSS MB (max) |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const s of series) {
    const t = summarise(s.seconds);
    const d = summarise(s.syncedSeconds);
    const strata = series.find((x) => x.caseName === s.caseName && x.tool === "strata");
    let r = "—";
    let rd = "—";
    if (strata && strata !== s) {
      r = ratio(summarise(strata.seconds).median / t.median);
      rd = plainRatio(summarise(strata.syncedSeconds).median / d.median);
    }
    const mbs = s.bytes > 0 && t.median > 0 ? (s.bytes / 1e6 / t.median).toFixed(0) : "—";
    lines.push(
      `| ${s.caseName} | ${s.tool} | ${s.seconds.length} | ${secs(t.median)} | ${secs(t.min)} | ${
        secs(t.max)
      } | ${mbs} | ${secs(d.median)} | ${r} | ${rd} | ${peak(s.peakKiB)} |`,
    );
  }
  return lines;
}

/** The marker lines around the generated results in `BENCHMARKS.md`. */
export const RESULTS_BEGIN = "<!-- bench:results:begin (written by `deno task bench --write`) -->";
/** The closing marker. */
export const RESULTS_END = "<!-- bench:results:end -->";

/**
 * Replaces the text between the result markers of a Markdown document, or appends a results
 * section with markers when the document has none.
 *
 * @example
 * ```ts ignore
 * const doc = replaceResults(await Deno.readTextFile("BENCHMARKS.md"), "new results");
 * ```
 *
 * @param doc The document.
 * @param body The new results, without markers.
 * @returns The new document.
 */
export function replaceResults(doc: string, body: string): string {
  const begin = doc.indexOf(RESULTS_BEGIN);
  const end = doc.indexOf(RESULTS_END);
  const block = `${RESULTS_BEGIN}\n\n${body.trim()}\n\n${RESULTS_END}`;
  if (begin >= 0 && end > begin) {
    return doc.slice(0, begin) + block + doc.slice(end + RESULTS_END.length);
  }
  return `${doc.trimEnd()}\n\n## Results\n\n${block}\n`;
}
