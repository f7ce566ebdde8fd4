// Any node serves any client: a follower that is asked for a write (or anything only the leader
// can do) forwards the request to the leader over the binary protocol and relays the answer.
//
// The forwarding connection proves the cluster secret in its HELLO (forwardProof), so the leader
// trusts the sender it names for each forwarded SEND; a request that arrived forwarded is never
// forwarded again (no loops: the second hop answers NOT_LEADER and the client retries).
//
// A proof is made fresh for each forwarding connection: the time, a random nonce and an HMAC of
// both with the cluster secret. The receiving node (ForwardProofVerifier) accepts it within
// FORWARD_PROOF_WINDOW_MS of its own clock and only once, so a proof seen on the wire cannot be
// used again to pass as a node (a node's requests skip the users' checks).
//
// Long polls: when the client's wait ends early (it closed its input or is gone; see
// Service.execute), the follower sends the leader a CANCEL for the forwarded RECEIVE, which then
// answers at once. When the client is gone altogether, whatever a forwarded RECEIVE still leases
// is given back (a NACK) when its answer arrives, instead of staying hidden for its lease.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { connect, type Socket } from "node:net";
import { type ConnectionOptions as TlsConnectionOptions, connect as connectTls } from "node:tls";
import type { AckRequest, CancelRequest, ForwardedReply, Reply, Request } from "../protocol/api.js";
import { BINARY_PREAMBLE, FrameDecoder, decodePayload, encodeFrame, RID_MAX } from "../protocol/binary.js";
import { FerryError, isErrorCode } from "../protocol/errors.js";
import { IDS_PER_REQUEST_MAX_DEFAULT } from "./limits.js";
import { giveBackNacks, type Service, type Session } from "./service.js";

export const FORWARD_CONNECT_TIMEOUT_MS_DEFAULT = 2_000;
export const FORWARD_INFLIGHT_MAX_DEFAULT = 4_096; // the leader reads as many (forwardedRequestsInFlightMax)
// An abandoned RECEIVE (its client left) is remembered this long past its wait for the leader's
// answer, whose messages are then given back; after that it is forgotten, so a leader that never
// answers cannot fill the link's inflightMax with them.
export const FORWARD_ABANDONED_GRACE_MS = 30_000;

export const FORWARD_PROOF_WINDOW_MS = 60_000;
const PROOF_PATTERN = /^(\d{1,16})\.([0-9a-f]{32})\.([0-9a-f]{64})$/;

function proofMac(clusterId: string, secret: string, atMs: string, nonce: string): string {
  return createHmac("sha256", secret).update(`ferry-forward:${clusterId}:${atMs}:${nonce}`).digest("hex");
}

// "<unix ms>.<nonce: 32 hex>.<HMAC-SHA256: 64 hex>"
export function forwardProof(clusterId: string, secret: string, nowMs = Date.now(), nonce = randomBytes(16).toString("hex")): string {
  const atMs = String(Math.floor(nowMs));
  return `${atMs}.${nonce}.${proofMac(clusterId, secret, atMs, nonce)}`;
}

// Checks forwarding proofs: the HMAC, the time (within windowMs of now, either way) and that the
// nonce was not used before. Never throws. Nonces are remembered until their proof's time leaves
// the window; only proofs with a valid HMAC are remembered, so only the cluster's nodes fill it.
export class ForwardProofVerifier {
  private readonly seen = new Map<string, number>(); // nonce -> proof time (ms)

  constructor(
    private readonly clusterId: string,
    private readonly secret: string,
    private readonly windowMs = FORWARD_PROOF_WINDOW_MS,
    private readonly now: () => number = Date.now,
  ) {}

  verify(candidate: string): boolean {
    const match = typeof candidate === "string" ? PROOF_PATTERN.exec(candidate) : null;
    if (match === null) return false;
    const [, atMs, nonce, mac] = match as unknown as [string, string, string, string];
    const expected = Buffer.from(proofMac(this.clusterId, this.secret, atMs, nonce), "hex");
    if (!timingSafeEqual(Buffer.from(mac, "hex"), expected)) return false;
    const nowMs = this.now();
    if (Math.abs(nowMs - Number(atMs)) > this.windowMs) return false;
    for (const [old, at] of this.seen) {
      if (nowMs - at <= this.windowMs) break; // insertion order is roughly time order
      this.seen.delete(old);
    }
    if (this.seen.has(nonce)) return false;
    this.seen.set(nonce, Number(atMs));
    return true;
  }
}

export interface ForwardingOptions {
  proof: () => string; // a fresh forwardProof(clusterId, secret) for each forwarding connection
  name: string; // this node's identity on forwarded connections, e.g. "node-2"
  connectTimeoutMs?: number;
  inflightMax?: number;
  // The leader's client port speaks TLS (nodes started with a certificate): connect with these
  // options (the trusted CA; see node-start.ts).
  tls?: TlsConnectionOptions;
}

export class ForwardingService implements Service {
  private readonly links = new Map<string, ForwardLink>();

  constructor(
    private readonly local: Service,
    private readonly options: ForwardingOptions,
  ) {}

  // The local answer's promise with one rejection handler, not an async wrapper: on the leader
  // (where every request ends up) this costs a single promise reaction per request.
  execute(request: Request, session: Session, signal: AbortSignal, waitSignal?: AbortSignal): Promise<Reply> {
    let local: Promise<Reply>;
    try {
      local = this.local.execute(request, session, signal, waitSignal);
    } catch (error) {
      local = Promise.reject(error);
    }
    return local.then(undefined, (error: unknown) => {
      if (!(error instanceof FerryError) || error.code !== "NOT_LEADER" || !error.leaderHint || isForwarded(session)) throw error;
      const forwarded = request.op === "send" ? { ...request, sender: session.identity } : request;
      const leaderHint = error.leaderHint;
      // The client learns where the leader is and sends its next requests there (docs/protocol.md).
      return this.link(leaderHint)
        .call(forwarded, signal, waitSignal)
        .then((reply): ForwardedReply => ({ ...reply, leaderHint }));
    });
  }

  helpLines(): string[] {
    return this.local.helpLines?.() ?? [];
  }

  close(): void {
    for (const link of this.links.values()) link.close();
    this.links.clear();
  }

  private link(address: string): ForwardLink {
    let link = this.links.get(address);
    if (!link || link.closed) {
      link = new ForwardLink(address, this.options);
      this.links.set(address, link);
    }
    return link;
  }
}

function isForwarded(session: Session): boolean {
  return (session as Session & { trustedForwarder?: boolean }).trustedForwarder === true;
}

interface Call {
  resolve(reply: Reply): void;
  reject(error: FerryError): void;
}

// One pipelined binary connection to the leader; replies are matched by rid.
class ForwardLink {
  closed = false;
  private readonly socket: Socket;
  private readonly decoder = new FrameDecoder();
  private readonly calls = new Map<number, Call>();
  private nextRid = 2; // rid 1 is the HELLO; requests use 2..RID_MAX, then start over
  private helloDone = false;
  private waiting: Array<() => void> = []; // requests held until HELLO is answered

  constructor(
    readonly address: string,
    private readonly options: ForwardingOptions,
  ) {
    const at = address.lastIndexOf(":");
    const target = { host: address.slice(0, at), port: Number(address.slice(at + 1)) };
    this.socket = options.tls === undefined ? connect(target) : connectTls({ ...options.tls, ...target });
    this.socket.setNoDelay(true);
    const timer = setTimeout(() => this.fail("connect timeout"), options.connectTimeoutMs ?? FORWARD_CONNECT_TIMEOUT_MS_DEFAULT);
    this.socket.once(options.tls === undefined ? "connect" : "secureConnect", () => clearTimeout(timer));
    this.socket.write(BINARY_PREAMBLE);
    this.socket.write(encodeFrame({ rid: 1, op: "hello", name: options.name, forwardProof: options.proof() }));
    this.socket.on("data", (chunk) => this.receive(chunk));
    this.socket.on("error", (error) => this.fail(error.message));
    this.socket.on("close", () => this.fail("connection closed"));
  }

  // `waitSignal`: a long-polling RECEIVE's (see Service.execute); when it is aborted, the leader is
  // told to stop waiting.
  call(request: Request, signal: AbortSignal, waitSignal?: AbortSignal): Promise<Reply> {
    if (this.calls.size >= (this.options.inflightMax ?? FORWARD_INFLIGHT_MAX_DEFAULT)) {
      return Promise.reject(new FerryError("OVERLOADED", "too many requests are being forwarded to the leader"));
    }
    const rid = this.takeRid();
    // A wait already over: forward the RECEIVE without one.
    const sent = request.op === "receive" && request.waitMs !== undefined && waitSignal?.aborted ? { ...request, waitMs: undefined } : request;
    const waits = sent.op === "receive" && (sent.waitMs ?? 0) > 0;
    return new Promise<Reply>((resolve, reject) => {
      let cancelled = !waits;
      const cancel = () => {
        if (cancelled) return;
        cancelled = true;
        this.send({ op: "cancel", of: rid });
      };
      const onAbort = () => {
        waitSignal?.removeEventListener("abort", cancel);
        if (sent.op === "receive") {
          // The client is gone: what the RECEIVE still leases goes back when its answer comes.
          cancel();
          const abandoned: Call = { resolve: (reply) => this.giveBack(sent.mailbox, reply), reject: () => {} };
          this.calls.set(rid, abandoned);
          const forget = () => {
            if (this.calls.get(rid) === abandoned) this.calls.delete(rid);
          };
          setTimeout(forget, (sent.waitMs ?? 0) + FORWARD_ABANDONED_GRACE_MS).unref();
        } else {
          this.calls.delete(rid);
        }
        reject(new FerryError("TIMEOUT", "the forwarded request was abandoned; it may or may not have been applied"));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      if (waits) waitSignal?.addEventListener("abort", cancel, { once: true });
      const settled = () => {
        signal.removeEventListener("abort", onAbort);
        if (waits) waitSignal?.removeEventListener("abort", cancel);
      };
      this.calls.set(rid, {
        resolve: (reply) => {
          settled();
          resolve(reply);
        },
        reject: (error) => {
          settled();
          reject(error);
        },
      });
      this.write(rid, sent);
    });
  }

  // A request whose answer nobody waits for (its reply finds no call and is dropped).
  private send(request: CancelRequest | AckRequest): void {
    if (!this.closed) this.write(this.takeRid(), request);
  }

  // Requests wait for the HELLO's answer.
  private write(rid: number, request: Request | CancelRequest): void {
    const write = () => this.socket.write(encodeFrame({ rid, ...request }));
    if (this.helloDone) write();
    else this.waiting.push(write);
  }

  // The leader's idsPerRequestMax is taken to be the default (ferry start does not change it).
  private giveBack(mailbox: string, reply: Reply): void {
    for (const nack of giveBackNacks(mailbox, reply, IDS_PER_REQUEST_MAX_DEFAULT)) this.send(nack);
  }

  private takeRid(): number {
    while (this.calls.has(this.nextRid)) this.nextRid = this.nextRid >= RID_MAX ? 2 : this.nextRid + 1;
    const rid = this.nextRid;
    this.nextRid = rid >= RID_MAX ? 2 : rid + 1;
    return rid;
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }

  private receive(chunk: Buffer): void {
    let frames: Buffer[];
    try {
      frames = this.decoder.push(chunk);
    } catch (error) {
      this.fail((error as Error).message);
      return;
    }
    for (const frame of frames) {
      const reply = decodePayload(frame) as { rid: number; ok: boolean; code?: string; message?: string; leaderHint?: string };
      if (reply.rid === 1) {
        if (!reply.ok) {
          this.fail(`the leader refused the forwarding connection: ${reply.code} ${reply.message}`);
          return;
        }
        this.helloDone = true;
        for (const write of this.waiting.splice(0)) write();
        continue;
      }
      const call = this.calls.get(reply.rid);
      if (!call) continue;
      this.calls.delete(reply.rid);
      if (reply.ok) {
        const { rid: _rid, ...rest } = reply;
        call.resolve(rest as unknown as Reply);
      } else {
        const code = reply.code && isErrorCode(reply.code) ? reply.code : "INTERNAL";
        call.reject(new FerryError(code, reply.message ?? "", reply.leaderHint));
      }
    }
  }

  private fail(reason: string): void {
    if (!this.closed) this.socket.destroy();
    this.closed = true;
    this.waiting = [];
    const error = new FerryError("UNAVAILABLE", `lost the connection to the leader at ${this.address} (${reason}); the request may or may not have been applied`);
    for (const call of this.calls.values()) call.reject(error);
    this.calls.clear();
  }
}
