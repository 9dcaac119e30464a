import { fileURLToPath } from "node:url";

/** A temporary directory removed (recursively) when disposed. */
export interface TempDir extends Disposable {
  path: string;
}

export function tempDir(): TempDir {
  const path = Deno.makeTempDirSync({ prefix: "strata-sys-" });
  return {
    path,
    [Symbol.dispose]() {
      Deno.removeSync(path, { recursive: true });
    },
  };
}

export const CHILD: string = fileURLToPath(new URL("./_child.ts", import.meta.url));

export interface ChildResult {
  code: number;
  out: { ok: boolean; name?: string; code?: string; message?: string };
  stderr: string;
}

/** Runs `cmd args...` and parses the JSON line the child prints. */
export function runChild(
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
): ChildResult {
  const res = new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).outputSync();
  const stdout = new TextDecoder().decode(res.stdout).trim();
  const stderr = new TextDecoder().decode(res.stderr);
  let out: ChildResult["out"];
  try {
    out = JSON.parse(stdout.split("\n").at(-1) ?? "");
  } catch {
    throw new Error(`Child printed no JSON: stdout ${JSON.stringify(stdout)}, stderr ${stderr}`);
  }
  return { code: res.code, out, stderr };
}

export const text = (s: string): Uint8Array => new TextEncoder().encode(s);
export const str = (b: Uint8Array): string => new TextDecoder().decode(b);
