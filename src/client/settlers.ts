// A promise whose resolving functions go onto an object (a pending request, a call's first
// attempt) without a closure per promise: the executor parks them in module variables and
// promiseInto() moves them at once. Per pipelined request that closure was a visible share of the
// client's allocations.

export function noop(): void {}

export interface Settlers<T> {
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

let parkedResolve: (value: unknown) => void = noop;
let parkedReject: (error: unknown) => void = noop;

function park(resolve: (value: never) => void, reject: (error: unknown) => void): void {
  parkedResolve = resolve as (value: unknown) => void;
  parkedReject = reject;
}

// A new promise, settled through target.resolve / target.reject.
export function promiseInto<T>(target: Settlers<T>): Promise<T> {
  const promise = new Promise<T>(park);
  target.resolve = parkedResolve;
  target.reject = parkedReject;
  return promise;
}
