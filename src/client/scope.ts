// Cancellation for the client's internals. A call's lifetime is a CallScope: it is cancelled when
// the call's deadline passes (reason: FerryError TIMEOUT) or the caller's AbortSignal aborts
// (reason: that signal's reason). Everything below a call (window, connect, request, backoff
// sleep) listens to that one scope, so a call never outlives its deadline and cleans up once.
//
// Why not AbortController inside: it is an EventTarget, and two of them per call (call + attempt)
// were a tenth of the client's CPU at high request rates, plus garbage. A Cancel is a flag and a
// short list of listener objects (objects, not closures: the request in flight is its own
// listener, so a call allocates nothing to listen); the caller's AbortSignal, when given, is
// listened to once per call.
//
// Why not a setTimeout per call: deadlines of one duration expire in the order they were set, so
// a DeadlineList keeps them in an intrusive FIFO list with one timer, armed for the oldest. Adding
// and removing is O(1) and allocates nothing; the timer exists exactly while the list is not
// empty, so an idle client holds no timer (and does not keep the process alive).
import { FerryError } from "../protocol/errors.js";

export interface CancelListener {
  onCancel(reason: unknown): void;
}

export class Cancel {
  // The first listener has its own field: almost every Cancel has exactly one.
  private firstListener: CancelListener | undefined;
  private moreListeners: CancelListener[] | undefined;
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
    const first = this.firstListener;
    const more = this.moreListeners;
    this.firstListener = undefined;
    this.moreListeners = undefined;
    first?.onCancel(reason);
    if (more !== undefined) for (const listener of more) listener.onCancel(reason);
  }

  // Calls listener.onCancel once on cancellation (never when already cancelled). Listener lists
  // hold one or two entries, so removal by search is cheap.
  subscribe(listener: CancelListener): void {
    if (this.cancelled) return;
    if (this.firstListener === undefined) this.firstListener = listener;
    else (this.moreListeners ??= []).push(listener);
  }

  unsubscribe(listener: CancelListener): void {
    if (this.firstListener === listener) {
      this.firstListener = undefined;
      return;
    }
    const more = this.moreListeners;
    if (more === undefined) return;
    const index = more.indexOf(listener);
    if (index >= 0) more.splice(index, 1);
  }
}

// An entry of a DeadlineList (fields owned by the list).
export interface DeadlineEntry {
  deadlineMs: number;
  deadlinePrevious: DeadlineEntry | undefined;
  deadlineNext: DeadlineEntry | undefined;
  deadlineList: DeadlineList | undefined;
  // Called once when the deadline passes while the entry is still in the list (already removed).
  expire(): void;
}

// Entries sharing one duration, oldest first, with one timer for the oldest.
export class DeadlineList {
  private head: DeadlineEntry | undefined;
  private tail: DeadlineEntry | undefined;
  private timer: NodeJS.Timeout | undefined;
  private entryCount = 0;

  constructor(readonly durationMs: number) {}

  get size(): number {
    return this.entryCount;
  }

  add(entry: DeadlineEntry): void {
    entry.deadlineMs = performance.now() + this.durationMs;
    entry.deadlineList = this;
    entry.deadlineNext = undefined;
    entry.deadlinePrevious = this.tail;
    if (this.tail === undefined) this.head = entry;
    else this.tail.deadlineNext = entry;
    this.tail = entry;
    this.entryCount++;
    if (this.timer === undefined) this.arm(entry.deadlineMs);
  }

  remove(entry: DeadlineEntry): void {
    if (entry.deadlineList !== this) return;
    const { deadlinePrevious: previous, deadlineNext: next } = entry;
    if (previous === undefined) this.head = next;
    else previous.deadlineNext = next;
    if (next === undefined) this.tail = previous;
    else next.deadlinePrevious = previous;
    entry.deadlineList = undefined;
    entry.deadlinePrevious = undefined;
    entry.deadlineNext = undefined;
    this.entryCount--;
    // A timer armed for an earlier head stays: when it fires it re-arms for the new head. Only an
    // empty list drops it, so nothing is left pending.
    if (this.head === undefined && this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
  }

  // Every entry, oldest first (a copy: expiring or removing them meanwhile is fine).
  entries(): DeadlineEntry[] {
    const all: DeadlineEntry[] = [];
    for (let entry = this.head; entry !== undefined; entry = entry.deadlineNext) all.push(entry);
    return all;
  }

  private arm(atMs: number): void {
    this.timer = setTimeout(() => this.fire(), Math.max(1, Math.ceil(atMs - performance.now())));
  }

  private fire(): void {
    this.timer = undefined;
    const nowMs = performance.now();
    for (let entry = this.head; entry !== undefined && entry.deadlineMs <= nowMs; entry = this.head) {
      this.remove(entry);
      entry.expire();
    }
    if (this.head !== undefined && this.timer === undefined) this.arm(this.head.deadlineMs);
  }
}

const TIMER_DELAY_MS_MAX = 0x7fff_ffff; // setTimeout's ceiling

// One DeadlineList per duration (a client uses one or two: its timeoutMs and attemptTimeoutMs).
export class Deadlines {
  private readonly lists = new Map<number, DeadlineList>();

  list(requestedMs: number): DeadlineList {
    // As setTimeout does: a duration it cannot take (negative, NaN, past 2^31-1 ms) means 1 ms.
    const durationMs = requestedMs >= 1 && requestedMs <= TIMER_DELAY_MS_MAX ? requestedMs : 1;
    let list = this.lists.get(durationMs);
    if (list === undefined) {
      list = new DeadlineList(durationMs);
      this.lists.set(durationMs, list);
    }
    return list;
  }

  entries(): DeadlineEntry[] {
    return [...this.lists.values()].flatMap((list) => list.entries());
  }
}

// A call's scope: cancelled by its deadline (an entry of `deadlines`) or the caller's signal.
// dispose() must be called when the call ends.
export class CallScope extends Cancel implements DeadlineEntry {
  deadlineMs = 0;
  deadlinePrevious: DeadlineEntry | undefined = undefined;
  deadlineNext: DeadlineEntry | undefined = undefined;
  deadlineList: DeadlineList | undefined = undefined;
  private callerSignal: AbortSignal | undefined;
  private deadlinePassed = false;

  constructor(
    deadlines: Deadlines,
    private readonly timeoutMs: number,
    callerSignal: AbortSignal | undefined,
    private readonly timeoutReason?: () => unknown,
  ) {
    super();
    deadlines.list(timeoutMs).add(this);
    if (callerSignal?.aborted) this.abort(callerSignal.reason);
    else if (callerSignal !== undefined) {
      this.callerSignal = callerSignal;
      callerSignal.addEventListener("abort", this, { once: true });
    }
  }

  // True when the scope ended because of the deadline, not the caller's abort.
  get timedOut(): boolean {
    return this.deadlinePassed;
  }

  expire(): void {
    this.deadlinePassed = true;
    this.abort(this.timeoutReason === undefined ? callTimeout(this.timeoutMs) : this.timeoutReason());
  }

  // The caller's signal aborted (EventListener object form: no closure per call).
  handleEvent(): void {
    this.abort(this.callerSignal?.reason);
  }

  dispose(): void {
    this.deadlineList?.remove(this);
    if (this.callerSignal !== undefined) {
      this.callerSignal.removeEventListener("abort", this);
      this.callerSignal = undefined;
    }
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
    const listener: CancelListener = {
      onCancel: (reason) => {
        clearTimeout(timer);
        reject(reason);
      },
    };
    cancel?.subscribe(listener);
    const timer = setTimeout(() => {
      cancel?.unsubscribe(listener);
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

// Settles like `promise`, or resolves with undefined as soon as the signal aborts (consume()
// stops waiting for a RECEIVE without dropping it). The promise itself keeps running.
export function unlessAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T | undefined> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise<T | undefined>((resolve, reject) => {
    const aborted = (): void => resolve(undefined);
    signal.addEventListener("abort", aborted, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", aborted);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", aborted);
        reject(error);
      },
    );
  });
}

// Settles like `promise`, or rejects with the cancel's reason when it comes first. The promise
// itself keeps running (it is shared with other callers).
export function raceCancel<T>(promise: Promise<T>, cancel: Cancel): Promise<T> {
  if (cancel.aborted) return Promise.reject(cancel.reason);
  return new Promise<T>((resolve, reject) => {
    const listener: CancelListener = { onCancel: reject };
    cancel.subscribe(listener);
    promise.then(
      (value) => {
        cancel.unsubscribe(listener);
        resolve(value);
      },
      (error: unknown) => {
        cancel.unsubscribe(listener);
        reject(error);
      },
    );
  });
}
