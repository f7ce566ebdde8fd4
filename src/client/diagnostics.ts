// Named diagnostics_channel events, for logging and metrics without a dependency: subscribe with
// `diagnostics_channel.subscribe("ferry:client:retry", (event) => ...)`. Publishing costs nothing
// when nobody listens.
import diagnostics from "node:diagnostics_channel";

export const connectedChannel = diagnostics.channel("ferry:client:connected"); // { address }
export const disconnectedChannel = diagnostics.channel("ferry:client:disconnected"); // { address }
export const retryChannel = diagnostics.channel("ferry:client:retry"); // { op, code, message, retry, from, to }
export const leaderChannel = diagnostics.channel("ferry:client:leader"); // { from, to }: status named another leader

export interface RetryEvent {
  op: string;
  code: string;
  message: string;
  retry: number; // 0 for the first retry of a call
  from: string | undefined; // the node that failed
  to: string; // where the next attempt goes
}

export function publishRetry(event: RetryEvent): void {
  if (retryChannel.hasSubscribers) retryChannel.publish(event);
}

export function publishConnected(address: string): void {
  if (connectedChannel.hasSubscribers) connectedChannel.publish({ address });
}

export function publishDisconnected(address: string): void {
  if (disconnectedChannel.hasSubscribers) disconnectedChannel.publish({ address });
}

export function publishLeaderFound(from: string, to: string): void {
  if (leaderChannel.hasSubscribers) leaderChannel.publish({ from, to });
}
