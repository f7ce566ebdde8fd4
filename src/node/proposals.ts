// Requests on their way through the log: queued until the next batch is proposed, then in flight
// until their entry is applied. Bounded at both stages: the queue by pendingRequestsMax (callers
// get OVERLOADED), the log by inflightEntriesMax (batching waits, the queue absorbs the burst).
// Deadlines: every request carries one, and the driver calls expire() on each tick, instead of a
// timer per request. Requests share one timeout and are queued and proposed in order, so the
// expired ones are always at the front: a sweep costs only the requests it fails. Once proposed,
// the requests of one entry share its fate: they all fail when its oldest one's deadline passes
// (the younger ones early by at most the time they waited for the batch).
import { FerryError } from "../protocol/errors.js";
import { HeadQueue } from "../util/head-queue.js";

export interface PendingRequest<C, R> {
  command: C;
  bytes: number;
  deadlineMs: number; // fail() with a timeout when not settled by then (see expire())
  settle(result: R): void;
  fail(error: FerryError): void;
}

// Many commands share one entry; results come back in the same order.
export interface InflightEntry<C, R> {
  term: number;
  requests: PendingRequest<C, R>[];
  expired?: boolean; // its requests were failed with a timeout; the results are dropped
  // The commands the entry encodes, when decoding the entry gives them back exactly (see
  // roundTripsExactly): the leader applies these instead of decoding its own entry.
  commands?: C[];
}

export class ProposalQueue<C, R> {
  // A taken request (its command, an ACK's ids or a SEND's body) is referenced by the entry it
  // went into, not by the queue, so it dies with that entry (HeadQueue clears its slot).
  private readonly queue = new HeadQueue<PendingRequest<C, R>>();

  constructor(private readonly lengthMax: number) {}

  get length(): number {
    return this.queue.length;
  }

  push(request: PendingRequest<C, R>): void {
    if (this.length >= this.lengthMax) {
      throw new FerryError("OVERLOADED", `${this.length} requests are waiting to be proposed (limit ${this.lengthMax}); retry with backoff`);
    }
    this.queue.push(request);
  }

  // Takes the next batch: at least one request, then as many as fit the count and byte bounds.
  take(countMax: number, bytesMax: number): PendingRequest<C, R>[] {
    const batch: PendingRequest<C, R>[] = [];
    let bytes = 0;
    for (let next = this.queue.peek(); next !== undefined && batch.length < countMax; next = this.queue.peek()) {
      if (batch.length > 0 && bytes + next.bytes > bytesMax) break;
      batch.push(next);
      bytes += next.bytes;
      this.queue.shift();
    }
    return batch;
  }

  failAll(error: FerryError): void {
    for (const request of this.queue.takeAll()) request.fail(error);
  }

  // Fails (and drops) the queued requests whose deadline has passed.
  expire(nowMs: number, error: () => FerryError): void {
    for (let next = this.queue.peek(); next !== undefined && next.deadlineMs <= nowMs; next = this.queue.peek()) {
      this.queue.shift();
      next.fail(error());
    }
  }
}

export class InflightProposals<C, R> {
  private readonly entries = new Map<number, InflightEntry<C, R>>();

  get size(): number {
    return this.entries.size;
  }

  add(index: number, entry: InflightEntry<C, R>): void {
    this.entries.set(index, entry);
  }

  // The commands this node proposed at index in term, when it holds them (see InflightEntry).
  heldCommands(index: number, term: number): C[] | undefined {
    const entry = this.entries.get(index);
    return entry !== undefined && entry.term === term ? entry.commands : undefined;
  }

  // Whether requests wait for the results of the entry at index (a replica's apply has none).
  awaitsResults(index: number, term: number): boolean {
    const entry = this.entries.get(index);
    return entry !== undefined && entry.term === term && !entry.expired;
  }

  // The entry at index was applied with these results. If it is not the entry we proposed (a
  // different term: our proposal was overwritten by a new leader), our requests failed.
  applied(index: number, term: number, results: () => R[]): void {
    const entry = this.entries.get(index);
    if (!entry) return;
    this.entries.delete(index);
    if (entry.expired) return; // its requests already failed with a timeout
    if (entry.term !== term) {
      const error = new FerryError("NOT_LEADER", "leadership changed before the request committed; it was not applied");
      for (const request of entry.requests) request.fail(error);
      return;
    }
    const values = results();
    for (let i = 0; i < entry.requests.length; i++) entry.requests[i]!.settle(values[i]!);
  }

  // Fails all requests of entries whose oldest request's deadline has passed. The entry stays
  // until applied (its results are then dropped): its position in the log is still owed.
  expire(nowMs: number, error: () => FerryError): void {
    for (const entry of this.entries.values()) {
      if (entry.expired) continue;
      if (entry.requests[0]!.deadlineMs > nowMs) return;
      entry.expired = true;
      for (const request of entry.requests) request.fail(error());
    }
  }

  failAll(error: FerryError): void {
    const all = [...this.entries.values()];
    this.entries.clear();
    for (const entry of all) for (const request of entry.requests) request.fail(error);
  }
}
