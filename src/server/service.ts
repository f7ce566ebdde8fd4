// The boundary between the client-facing server and the node: the server decodes and validates a
// request, then asks the service to execute it on behalf of a session. The node implements it;
// tests use an in-memory fake (test/server/fake-service.ts).
import type { AckRequest, ReceiveReply, Reply, Request } from "../protocol/api.js";
import type { AuthUser } from "./auth.js";

export interface Session {
  id: number; // unique per server, for logs and lease ownership
  identity: string; // the sender of SENDs: the authenticated user, else HELLO's name, else "anonymous"
  user?: AuthUser; // set once the connection authenticated (a node with a users file; src/server/auth.ts)
  remoteAddress: string; // host:port of the client
  protocol: "text" | "binary";
  // Another node of this cluster forwarding its clients' requests (it proved the cluster secret
  // in HELLO): the sender it names on a SEND is trusted, and nothing it sends is forwarded again.
  trustedForwarder?: boolean;
}

export interface Service {
  // Resolves with the reply matching request.op (ReplyByOp in api.ts); rejects with a FerryError
  // for errors. `signal` is aborted when the client is gone or the server stops waiting for it
  // (close() after its grace period): the request is abandoned. `waitSignal` (a long-polling
  // RECEIVE's) is aborted when nobody should be waited for any longer: the client ended its input
  // or is gone, cancelled the wait, or the server is stopping; the RECEIVE then stops waiting and
  // answers with what it has (usually nothing), so no message is leased to a client that is gone.
  execute(request: Request, session: Session, signal: AbortSignal, waitSignal?: AbortSignal): Promise<Reply>;
  // Extra lines for the text protocol's HELP (e.g. this node's role and address).
  helpLines?(): string[];
}

// The NACKs that give back what a RECEIVE leased for a client that is gone (the connection's
// or a forwarding link's), at most idsPerRequest ids each.
export function giveBackNacks(mailbox: string, reply: Reply, idsPerRequest: number): AckRequest[] {
  const ids = ((reply as ReceiveReply).messages ?? []).map((message) => message.id);
  const nacks: AckRequest[] = [];
  for (let start = 0; start < ids.length; start += idsPerRequest) nacks.push({ op: "nack", mailbox, ids: ids.slice(start, start + idsPerRequest) });
  return nacks;
}
