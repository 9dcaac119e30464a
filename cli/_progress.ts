import type { ProgressEvent } from "../transfer/progress.ts";
import { humanSize } from "./_command.ts";

/** How a pull or push reports progress. */
export type ProgressMode = "tty" | "plain" | "json" | "quiet";

/** A progress sink: `event` for each event, `done` once at the end. */
export interface ProgressPrinter {
  event(e: ProgressEvent): void;
  done(): void;
}

interface Item {
  id: string;
  label: string;
  status: string;
  current: number;
  total: number;
}

const BAR = 24;

/**
 * Makes the printer for a mode: `tty` redraws one line per blob in place (like `ctr pull`),
 * `plain` prints a line per change of state, `json` one JSON object per event, `quiet` nothing.
 */
export function progressPrinter(
  mode: ProgressMode,
  out: (line: string) => void,
): ProgressPrinter {
  switch (mode) {
    case "quiet":
      return { event() {}, done() {} };
    case "json":
      return {
        event: (e) => out(JSON.stringify({ ...e, time: new Date().toISOString() })),
        done() {},
      };
    case "plain":
      return plainPrinter(out);
    case "tty":
      return ttyPrinter();
  }
}

function shortId(e: ProgressEvent): string {
  if (e.kind === "image") return e.id;
  const hex = e.id.slice(e.id.indexOf(":") + 1, e.id.indexOf(":") + 13);
  return `${e.kind} ${hex}`;
}

function plainPrinter(out: (line: string) => void): ProgressPrinter {
  const last = new Map<string, string>();
  return {
    event(e) {
      if (last.get(e.id) === e.status) return;
      // A layer applied while it downloads: its download goes on after `extracting`.
      if (e.status === "downloading" && last.get(e.id) === "extracting") return;
      last.set(e.id, e.status);
      const size = e.total !== undefined && e.kind !== "image" ? ` (${humanSize(e.total)})` : "";
      const digest = e.digest ? ` ${e.digest}` : "";
      out(`${shortId(e)}: ${e.status}${size}${digest}`);
    },
    done() {},
  };
}

function ttyPrinter(): ProgressPrinter {
  const encoder = new TextEncoder();
  const items = new Map<string, Item>();
  const started = performance.now();
  let drawn = 0;
  let dirty = false;
  const width = (() => {
    try {
      return Deno.consoleSize().columns;
    } catch {
      return 100;
    }
  })();
  const draw = () => {
    if (!dirty) return;
    dirty = false;
    const lines: string[] = [];
    let bytes = 0;
    for (const item of items.values()) {
      bytes += item.current;
      let bar = "";
      const moving = item.status === "downloading" || item.status === "uploading" ||
        (item.status === "extracting" && item.current < item.total);
      if (item.total > 0 && moving) {
        const filled = Math.min(BAR, Math.round((item.current / item.total) * BAR));
        bar = ` |${"+".repeat(filled)}${" ".repeat(BAR - filled)}| ${humanSize(item.current)}/${
          humanSize(item.total)
        }`;
      }
      lines.push(`${item.label.padEnd(22)} ${item.status.padEnd(12)}${bar}`.slice(0, width - 1));
    }
    const secs = (performance.now() - started) / 1000;
    lines.push(
      `elapsed: ${secs.toFixed(1)}s  total: ${humanSize(bytes)}  (${
        humanSize(bytes / Math.max(secs, 0.001))
      }/s)`,
    );
    const up = drawn > 0 ? `\x1b[${drawn}A` : "";
    const text = up + lines.map((l) => `\x1b[2K${l}\n`).join("");
    Deno.stdout.writeSync(encoder.encode(text));
    drawn = lines.length;
  };
  const timer = setInterval(draw, 100);
  return {
    event(e) {
      const item = items.get(e.id) ?? {
        id: e.id,
        label: shortId(e),
        status: "",
        current: 0,
        total: 0,
      };
      // A layer applied while it downloads stays `extracting`, with its download's bar.
      if (!(e.status === "downloading" && item.status === "extracting")) item.status = e.status;
      if (e.total !== undefined) item.total = e.total;
      if (e.current !== undefined) item.current = e.current;
      items.set(e.id, item);
      dirty = true;
    },
    done() {
      clearInterval(timer);
      dirty = true;
      draw();
    },
  };
}
