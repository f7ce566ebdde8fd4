// The leader's pending ReadIndex requests (Raft thesis §6.4): each records the commit index at
// the time it arrived and collects heartbeat acknowledgements carrying its context. Once a quorum
// acknowledged, this request and every earlier one are confirmed: no other leader could have
// committed anything newer when they arrived.
//
// Invariants: requests leave in arrival order; a context is pending at most once.

import type { Message, NodeId } from "./types.js";

export interface ReadRequest {
  index: number; // the leader's commit index when the request arrived
  request: Message; // from = the asking follower, or this node for a local read
  acks: Set<NodeId>;
}

export function contextKey(context: Uint8Array): string {
  let key = "";
  for (const byte of context) key += byte.toString(16).padStart(2, "0");
  return key;
}

export class ReadOnlyQueue {
  private readonly pending = new Map<string, ReadRequest>();
  private order: string[] = [];

  has(context: Uint8Array): boolean {
    return this.pending.has(contextKey(context));
  }

  add(index: number, request: Message): void {
    const key = contextKey(request.context ?? new Uint8Array(0));
    if (this.pending.has(key)) return;
    this.pending.set(key, { index, request, acks: new Set() });
    this.order.push(key);
  }

  // Records an acknowledgement; returns who acknowledged so far (undefined if unknown context).
  recordAck(from: NodeId, context: Uint8Array): ReadonlySet<NodeId> | undefined {
    const read = this.pending.get(contextKey(context));
    if (read === undefined) return undefined;
    read.acks.add(from);
    return read.acks;
  }

  // Removes and returns the request with this context and every request queued before it.
  release(context: Uint8Array): ReadRequest[] {
    const key = contextKey(context);
    const at = this.order.indexOf(key);
    if (at < 0) return [];
    const released = this.order.slice(0, at + 1).map((k) => this.pending.get(k)!);
    for (const k of this.order.slice(0, at + 1)) this.pending.delete(k);
    this.order = this.order.slice(at + 1);
    return released;
  }

  lastContext(): Uint8Array | undefined {
    const key = this.order[this.order.length - 1];
    return key === undefined ? undefined : this.pending.get(key)!.request.context;
  }

  clear(): void {
    this.pending.clear();
    this.order = [];
  }
}
