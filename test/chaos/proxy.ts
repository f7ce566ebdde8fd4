// A TCP proxy for one directed peer link (node A's connection to node B), so the chaos suite can
// cut links: each node is told its peers' addresses are these proxies. Two ways to cut:
// - "reset": every connection is closed at once and new ones are closed on accept (a refused or
//   reset link: the dialer notices immediately);
// - "blackhole": connections stay open but nothing is forwarded either way, and new ones are held
//   silently (a dropped link: the dialer notices only by its idle timeout).
// Healing closes what was held, so no stream resumes with a gap in it (TCP never does that).
import { createServer, type Server, type Socket, connect as netConnect } from "node:net";

export type CutMode = "reset" | "blackhole";

interface Pair {
  inbound: Socket;
  outbound?: Socket;
  blackholed?: boolean; // accepted or dropped bytes during a blackhole: closed on heal
}

export class LinkProxy {
  private readonly pairs = new Set<Pair>();
  private mode: CutMode | undefined;
  connections = 0;

  private constructor(
    private readonly server: Server,
    readonly address: string,
    private readonly target: () => string,
  ) {
    server.on("connection", (socket) => this.accept(socket));
  }

  static start(target: () => string): Promise<LinkProxy> {
    return new Promise((resolve, reject) => {
      const server = createServer();
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const port = (server.address() as { port: number }).port;
        resolve(new LinkProxy(server, `127.0.0.1:${port}`, target));
      });
    });
  }

  get isCut(): boolean {
    return this.mode !== undefined;
  }

  cut(mode: CutMode): void {
    this.mode = mode;
    if (mode === "reset") for (const pair of [...this.pairs]) this.destroy(pair);
  }

  heal(): void {
    if (this.mode === undefined) return;
    this.mode = undefined;
    for (const pair of [...this.pairs]) if (pair.blackholed) this.destroy(pair);
  }

  private accept(inbound: Socket): void {
    inbound.on("error", () => {});
    if (this.mode === "reset") {
      inbound.destroy();
      return;
    }
    this.connections++;
    const pair: Pair = { inbound };
    this.pairs.add(pair);
    inbound.on("close", () => this.destroy(pair));
    if (this.mode === "blackhole") {
      pair.blackholed = true;
      inbound.on("data", () => {});
      return;
    }
    const [host, port] = [this.target().split(":")[0]!, Number(this.target().split(":")[1])];
    const outbound = netConnect({ host, port });
    pair.outbound = outbound;
    outbound.on("error", () => {});
    outbound.on("close", () => this.destroy(pair));
    const forward = (from: Socket, to: Socket) =>
      from.on("data", (chunk) => {
        if (this.mode === "blackhole") {
          pair.blackholed = true;
          return;
        }
        to.write(chunk);
      });
    forward(inbound, outbound);
    forward(outbound, inbound);
  }

  private destroy(pair: Pair): void {
    if (!this.pairs.delete(pair)) return;
    pair.inbound.destroy();
    pair.outbound?.destroy();
  }

  close(): Promise<void> {
    for (const pair of [...this.pairs]) this.destroy(pair);
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
