// Cancellation for the client's internals. A call's lifetime is a CallScope: it is cancelled when
// the call's deadline passes (reason: FerryError TIMEOUT) or the caller's AbortSignal aborts
// (reason: that signal's reason). Everything below a call (window, connect, request, backoff
// sleep) listens to that one scope, so a call never outlives its deadline and cleans up once.
//
// Why not AbortController inside: it is an EventTarget, and two of them per call (call + attempt)
// were a tenth of the client's CPU at high request rates, plus garbage. A Cancel is a flag and a
// short list of callbacks; the caller's AbortSignal, when given, is listened to once per call.
import { FerryError } from "../protocol/errors.js";

export type CancelListener = (reason: unknown) => void;

export class Cancel {
  private listeners: CancelListener[] | undefined;
  private cancelled = false;
  private cause: unknown;

  get aborted(): boolean {
    return this.cancelled;
  }

  get reason(): unknown {
    return this.cause;
  }

  abort(reason: unknown): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.cause = reason;
    const listeners = this.listeners;
    this.listeners = undefined;
    if (listeners !== undefined) for (const listener of listeners) listener(reason);
  }

  // Calls listener once on cancellation; returns the unsubscribe function. Listener lists hold
  // one or two entries, so removal by search is cheap.
  subscribe(listener: CancelListener): () => void {
    if (this.cancelled) return noop;
    (this.listeners ??= []).push(listener);
    return () => {
      const listeners = this.listeners;
      if (listeners === undefined) return;
      const index = listeners.indexOf(listener);
      if (index >= 0) listeners.splice(index, 1);
    };
  }
}

function noop(): void {}

export class CallScope extends Cancel {
  private readonly timer: NodeJS.Timeout;
  private readonly unlinkCaller: (() => void) | undefined;
  private deadlinePassed = false;

  constructor(timeoutMs: number, callerSignal: AbortSignal | undefined, timeoutReason: () => unknown = () => callTimeout(timeoutMs)) {
    super();
    this.timer = setTimeout(() => {
      this.deadlinePassed = true;
      this.abort(timeoutReason());
    }, timeoutMs);
    if (callerSignal?.aborted) this.abort(callerSignal.reason);
    else if (callerSignal !== undefined) {
      const onAbort = () => this.abort(callerSignal.reason);
      callerSignal.addEventListener("abort", onAbort, { once: true });
      this.unlinkCaller = () => callerSignal.removeEventListener("abort", onAbort);
    }
  }

  // True when the scope ended because of the deadline, not the caller's abort.
  get timedOut(): boolean {
    return this.deadlinePassed;
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.unlinkCaller?.();
  }
}

// A scope inside another: cancelled by its parent, or by its own (shorter) deadline.
export class ChildScope extends Cancel {
  private readonly timer: NodeJS.Timeout;
  private readonly unlinkParent: () => void;

  constructor(parent: Cancel, timeoutMs: number, timeoutReason: () => unknown) {
    super();
    if (parent.aborted) this.abort(parent.reason);
    this.unlinkParent = parent.subscribe((reason) => this.abort(reason));
    this.timer = setTimeout(() => this.abort(timeoutReason()), timeoutMs);
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.unlinkParent();
  }
}

function callTimeout(timeoutMs: number): FerryError {
  return new FerryError("TIMEOUT", `no answer within ${timeoutMs} ms; the request may or may not have been applied`);
}

// Resolves after delayMs, or rejects with the cancel's reason when it comes first.
export function sleep(delayMs: number, cancel?: Cancel): Promise<void> {
  return new Promise((resolve, reject) => {
    if (cancel?.aborted) {
      reject(cancel.reason);
      return;
    }
    const unsubscribe = cancel?.subscribe((reason) => {
      clearTimeout(timer);
      reject(reason);
    });
    const timer = setTimeout(() => {
      unsubscribe?.();
      resolve();
    }, delayMs);
  });
}

// Like sleep() for an AbortSignal (consume() gets the caller's signal).
export function sleepUnlessAborted(delayMs: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, delayMs);
    signal?.addEventListener("abort", done, { once: true });
  });
}

// Settles like `promise`, or rejects with the cancel's reason when it comes first. The promise
// itself keeps running (it is shared with other callers).
export function raceCancel<T>(promise: Promise<T>, cancel: Cancel): Promise<T> {
  if (cancel.aborted) return Promise.reject(cancel.reason);
  return new Promise<T>((resolve, reject) => {
    const unsubscribe = cancel.subscribe(reject);
    promise.then(
      (value) => {
        unsubscribe();
        resolve(value);
      },
      (error: unknown) => {
        unsubscribe();
        reject(error);
      },
    );
  });
}
