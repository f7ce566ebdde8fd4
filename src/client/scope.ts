// One call's lifetime: a single AbortSignal that fires when the caller's deadline passes (reason:
// FerryError TIMEOUT) or the caller's own signal aborts (reason: that signal's reason). Everything
// below a call (window, connect, request, backoff sleep) listens to this one signal, so a call
// never outlives its deadline and cleans up exactly once.
import { FerryError } from "../protocol/errors.js";

export class CallScope {
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private readonly onCallerAbort: () => void;
  private deadlinePassed = false;

  constructor(
    timeoutMs: number,
    private readonly callerSignal: AbortSignal | undefined,
  ) {
    this.timer = setTimeout(() => {
      this.deadlinePassed = true;
      this.controller.abort(new FerryError("TIMEOUT", `no answer within ${timeoutMs} ms; the request may or may not have been applied`));
    }, timeoutMs);
    this.onCallerAbort = () => this.controller.abort(callerSignal?.reason);
    if (callerSignal?.aborted) this.onCallerAbort();
    else callerSignal?.addEventListener("abort", this.onCallerAbort, { once: true });
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  // True when the signal fired because of the deadline, not the caller's abort.
  get timedOut(): boolean {
    return this.deadlinePassed;
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.callerSignal?.removeEventListener("abort", this.onCallerAbort);
  }
}

// Resolves after delayMs, or rejects with the signal's reason when it aborts first.
export function sleep(delayMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, delayMs);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

// Settles like `promise`, or rejects with the signal's reason when it aborts first. The promise
// itself keeps running (it is shared with other callers).
export function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}
