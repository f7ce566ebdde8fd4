// Client requests become broker commands here. Arguments were validated at the edge (src/server);
// this adds what the node knows: the sender's identity.
import type { BrokerCommand, ReceiveCommand } from "../broker/commands.js";
import type { Request } from "../protocol/api.js";
import { FerryError } from "../protocol/errors.js";

// What the node needs to know of the client's session (the server's Session satisfies it).
export interface Session {
  identity: string;
  // Set for a connection from another node that proved the cluster secret: it forwards requests
  // on behalf of its own clients, so the sender it names is trusted.
  trustedForwarder?: boolean;
  // The protocol the reply goes out in: a binary one's RECEIVE gets its messages as their stored
  // records (src/broker/stored-delivery.ts), which FrameWriter copies.
  protocol?: "text" | "binary";
}

export function toBrokerCommand(request: Request, session: Session): BrokerCommand {
  switch (request.op) {
    case "send": {
      const sender = session.trustedForwarder && request.sender ? request.sender : session.identity;
      return {
        op: "send",
        sender,
        recipients: request.recipients,
        body: request.body,
        id: request.id,
        headers: request.headers,
        delayMs: request.delayMs,
        ttlMs: request.ttlMs,
        senderTime: request.senderTime,
      };
    }
    case "config":
      return { op: "set-mailbox-config", mailbox: request.mailbox, config: request.settings };
    case "receive": {
      const command: ReceiveCommand = {
        op: "receive",
        mailbox: request.mailbox,
        max: request.max,
        visibilityMs: request.visibilityMs,
        consumer: session.identity,
        recordReplies: session.protocol === "binary",
      };
      if (request.ack !== undefined) command.ack = request.ack;
      if (request.ackLeases !== undefined) command.ackLeases = request.ackLeases;
      return command;
    }
    case "ack":
    case "nack":
    case "extend":
    case "purge":
    case "delete":
      return request;
    default:
      throw new FerryError("INVALID", `operation '${request.op}' is not a state machine command`);
  }
}
