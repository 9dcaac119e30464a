/**
 * Process helpers for the benchmark: running and timing commands, dropping the page cache, and a
 * throwaway containerd with its own root and socket.
 *
 * @module
 */
import { join } from "node:path";
import { FailedPrecondition, Unavailable } from "../errors.ts";

/** The result of {@linkcode run}. */
export interface RunResult {
  /** The exit code. */
  code: number;
  /** Standard output, decoded. */
  stdout: string;
  /** Standard error, decoded. */
  stderr: string;
  /** Wall-clock milliseconds from just before the spawn until the process had exited. */
  ms: number;
}

const decoder = new TextDecoder();

/**
 * Runs a command to completion, capturing its output, and times it (spawn included).
 *
 * @example
 * ```ts ignore
 * const r = await run(["true"]);
 * console.log(r.ms);
 * ```
 *
 * @param argv The program and its arguments.
 * @param options `env` adds environment variables; `cwd` sets the working directory.
 * @returns The exit code, output and time.
 */
export async function run(
  argv: string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
): Promise<RunResult> {
  const [program, ...args] = argv;
  if (program === undefined) throw new TypeError("Cannot run a command: the command is empty");
  const cmd = new Deno.Command(program, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(options.env ? { env: options.env } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  const t0 = performance.now();
  const out = await cmd.output();
  const ms = performance.now() - t0;
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
    ms,
  };
}

/**
 * Runs a command and throws when it fails.
 *
 * @example
 * ```ts ignore
 * const out = await mustRun(["uname", "-r"]);
 * ```
 *
 * @param argv The program and its arguments.
 * @param options As for {@linkcode run}.
 * @returns The result.
 */
export async function mustRun(
  argv: string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
): Promise<RunResult> {
  const r = await run(argv, options);
  if (r.code !== 0) {
    throw new FailedPrecondition(
      `Cannot run "${argv.join(" ")}": exit code ${r.code}: ${tail(r.stderr || r.stdout)}`,
    );
  }
  return r;
}

/**
 * The last few lines of some output, for error messages.
 *
 * @example
 * ```ts ignore
 * tail("a\nb\nc", 2);
 * ```
 *
 * @param text The output.
 * @param lines How many lines to keep.
 * @returns The tail, on one line.
 */
export function tail(text: string, lines = 6): string {
  return text.trim().split("\n").slice(-lines).join(" | ");
}

/**
 * Whether a program is on the `PATH`.
 *
 * @example
 * ```ts ignore
 * if (!await have("skopeo")) console.log("no skopeo");
 * ```
 *
 * @param program The program's name.
 * @returns `true` when it is found.
 */
export async function have(program: string): Promise<boolean> {
  try {
    const r = await run(["sh", "-c", `command -v ${program}`]);
    return r.code === 0;
  } catch {
    return false;
  }
}

/**
 * Flushes dirty pages (`sync`) and, when allowed (root), drops the page cache, dentries and inodes.
 *
 * @example
 * ```ts ignore
 * const dropped = await dropCaches();
 * ```
 *
 * @returns `true` when the cache was dropped, `false` when only `sync` ran.
 */
export async function dropCaches(): Promise<boolean> {
  await mustRun(["sync"]);
  try {
    await Deno.writeTextFile("/proc/sys/vm/drop_caches", "3\n");
    return true;
  } catch {
    return false;
  }
}

/**
 * A throwaway containerd with its own root, state and socket in one directory, in the manner of
 * `shared/tools/containerd-peer.sh`.
 *
 * @example
 * ```ts ignore
 * const ctrd = await Containerd.start("/tmp/ctrd");
 * await mustRun(["ctr", "-a", ctrd.socket, "version"]);
 * await ctrd.stop();
 * ```
 */
export class Containerd {
  /** The directory holding the root, state, socket and log. */
  readonly dir: string;
  /** The gRPC socket. */
  readonly socket: string;
  #child: Deno.ChildProcess;

  private constructor(dir: string, child: Deno.ChildProcess) {
    this.dir = dir;
    this.socket = join(dir, "sock");
    this.#child = child;
  }

  /**
   * Starts a containerd in a fresh directory `dir` (removed first) and waits until it answers.
   *
   * @param dir The directory.
   * @returns The running daemon.
   */
  static async start(dir: string): Promise<Containerd> {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.mkdir(dir, { recursive: true });
    const config = [
      "version = 2",
      `root = "${join(dir, "root")}"`,
      `state = "${join(dir, "state")}"`,
      `disabled_plugins = ["io.containerd.grpc.v1.cri"]`,
      "[grpc]",
      `  address = "${join(dir, "sock")}"`,
      "[ttrpc]",
      `  address = "${join(dir, "sock.ttrpc")}"`,
      "[debug]",
      `  address = ""`,
      "",
    ].join("\n");
    await Deno.writeTextFile(join(dir, "config.toml"), config);
    const log = await Deno.open(join(dir, "log"), { write: true, create: true, truncate: true });
    const child = new Deno.Command("containerd", {
      args: ["--config", join(dir, "config.toml")],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // Copy the daemon's log to a file so that its pipe never fills.
    child.stderr.pipeTo(log.writable).catch(() => {});
    const c = new Containerd(dir, child);
    for (let i = 0; i < 100; i++) {
      const r = await run(["ctr", "-a", c.socket, "version"]);
      if (r.code === 0) return c;
      await new Promise((res) => setTimeout(res, 100));
    }
    await c.stop();
    throw new Unavailable(
      `Cannot start containerd in "${dir}": no answer on its socket after 10 s`,
    );
  }

  /**
   * Stops the daemon, unmounts anything left under its directory and removes the directory.
   *
   * @param options `keep` leaves the directory in place.
   * @returns Once stopped.
   */
  async stop(options: { keep?: boolean } = {}): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // already gone
    }
    await this.#child.status;
    const mounts = await Deno.readTextFile("/proc/mounts").catch(() => "");
    const targets = mounts.split("\n").map((l) => l.split(" ")[1] ?? "")
      .filter((t) => t.startsWith(this.dir + "/")).sort().reverse();
    for (const t of targets) await run(["umount", "-l", t]);
    if (!options.keep) await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/**
 * A throwaway Docker registry (Debian's `docker-registry`) on a free port of 127.0.0.1, storing
 * its blobs in one directory, for timing containerd's pull-time unpack as
 * `shared/tools/ctr-unpack-time.sh` does.
 *
 * @example
 * ```ts ignore
 * const registry = await Registry.start("/tmp/registry");
 * console.log(registry.host);
 * await registry.stop();
 * ```
 */
export class Registry {
  /** The directory holding the config, the blobs and the log. */
  readonly dir: string;
  /** `127.0.0.1:PORT`. */
  readonly host: string;
  #child: Deno.ChildProcess;

  private constructor(dir: string, host: string, child: Deno.ChildProcess) {
    this.dir = dir;
    this.host = host;
    this.#child = child;
  }

  /**
   * Starts a registry in a fresh directory `dir` (removed first) and waits until it answers.
   *
   * @param dir The directory.
   * @returns The running registry.
   */
  static async start(dir: string): Promise<Registry> {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.mkdir(dir, { recursive: true });
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const host = `127.0.0.1:${listener.addr.port}`;
    listener.close();
    const config = [
      "version: 0.1",
      "log:",
      "  level: warn",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      `    rootdirectory: "${join(dir, "data")}"`,
      "http:",
      `  addr: "${host}"`,
      "",
    ].join("\n");
    await Deno.writeTextFile(join(dir, "config.yml"), config);
    const log = await Deno.open(join(dir, "log"), { write: true, create: true, truncate: true });
    const child = new Deno.Command("docker-registry", {
      args: ["serve", join(dir, "config.yml")],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    child.stderr.pipeTo(log.writable).catch(() => {});
    const registry = new Registry(dir, host, child);
    for (let i = 0; i < 100; i++) {
      try {
        const response = await fetch(`http://${host}/v2/`);
        await response.body?.cancel();
        if (response.ok) return registry;
      } catch {
        // Not listening yet.
      }
      await new Promise((res) => setTimeout(res, 100));
    }
    await registry.stop();
    throw new Unavailable(`Cannot start docker-registry in "${dir}": no answer after 10 s`);
  }

  /**
   * Stops the registry and removes its directory.
   *
   * @returns Once stopped.
   */
  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // already gone
    }
    await this.#child.status;
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
