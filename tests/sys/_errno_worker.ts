// Fails calls in a loop on a worker thread and reports the error codes it saw, for the errno
// test in sys_test.ts.
import * as sys from "../../sys/mod.ts";

const scope = globalThis as unknown as {
  postMessage(message: Record<string, number>): void;
  onmessage: ((event: MessageEvent<{ dir: string; rounds: number }>) => void) | null;
};

scope.onmessage = (e: MessageEvent<{ dir: string; rounds: number }>) => {
  const { dir, rounds } = e.data;
  const seen = new Map<string, number>();
  for (let i = 0; i < rounds; i++) {
    for (const call of [() => sys.lstat(`${dir}/missing-${i}`), () => sys.lstat(`${dir}/file/x`)]) {
      try {
        call();
        seen.set("no error", (seen.get("no error") ?? 0) + 1);
      } catch (err) {
        const code = err instanceof sys.SysError ? err.code : String(err);
        seen.set(code, (seen.get(code) ?? 0) + 1);
      }
    }
  }
  scope.postMessage(Object.fromEntries(seen));
};
