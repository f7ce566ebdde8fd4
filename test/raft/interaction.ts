// A scripted cluster for transcript tests (like etcd's rafttest interaction env + datadriven).
//
// A testdata file is a sequence of blocks:
//
//   # comments
//   command arg key=value
//   ----
//   expected output (no blank lines)
//   <blank line>
//
// The environment runs each command on an in-memory cluster and prints what happened; the test
// compares that with the expected text. FERRY_REWRITE=1 rewrites the expected text instead.
// Notation: entries and log positions are term/index (etcd's order), e.g. 1/3 = index 3 of term 1.
//
// Commands (ids are node ids; the driver contract is followed exactly, see processReady):
//   add-nodes N voters=(1,2,3) [learners=(4)] [prevote=true] [checkquorum=true] [election=10]
//             [heartbeat=1] [max-msg-bytes=N] [max-inflight=N] [max-inflight-bytes=N]
//             [max-uncommitted-bytes=N] [max-committed-bytes=N] [commit-broadcast=eager|lazy]
//             [bug=<PlantedBugs key>]
//   campaign ID | propose ID DATA | propose-conf-change ID [joint] (add-voter|add-learner|remove-node ID)... | leave
//   tick ID [N] | tick-election ID... | tick-heartbeat ID...
//   process-ready [ID...] | deliver-msgs [ID...] [type=T] | drop-msgs ID... | stabilize [ID...]
//   partition 1 2 / 3 | heal            (messages across groups are dropped at delivery)
//   transfer-leadership from=ID to=ID | read-index ID CONTEXT | compact ID INDEX | restart ID
//   report-unreachable LEADER ID | report-snapshot LEADER ID [fail]
//   status ID | raft-log ID | raft-state | applied ID | log-level none|info
// Every node draws randomness 0, so its election timeout is exactly `election` ticks.
import { readFileSync, writeFileSync } from "node:fs";
import { describeConfChange, decodeConfChange } from "../../src/raft/confchange.js";
import { MemoryLogStorage } from "../../src/raft/memory-storage.js";
import { RaftNode, defaultRaftConfig } from "../../src/raft/raft-node.js";
import type { ConfChange, ConfChangeSingle, ConfState, Entry, Message, RaftConfig, Ready, Snapshot } from "../../src/raft/types.js";
import { RaftError } from "../../src/raft/types.js";

interface Member {
  id: number;
  node: RaftNode;
  storage: MemoryLogStorage;
  config: RaftConfig;
  applied: Entry[];
}

export interface Command {
  name: string;
  args: string[]; // positional
  options: Map<string, string>; // key=value
  line: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function parseCommand(line: string): Command {
  const words = line.trim().split(/\s+/);
  const args: string[] = [];
  const options = new Map<string, string>();
  for (const word of words.slice(1)) {
    const eq = word.indexOf("=");
    if (eq > 0) options.set(word.slice(0, eq), word.slice(eq + 1));
    else args.push(word);
  }
  return { name: words[0]!, args, options, line: line.trim() };
}

function idList(text: string | undefined): number[] {
  if (text === undefined) return [];
  const inner = text.replace(/^\(/, "").replace(/\)$/, "");
  return inner === "" ? [] : inner.split(",").map(Number);
}

export class InteractionEnv {
  readonly members = new Map<number, Member>();
  private network: Message[] = [];
  private groups = new Map<number, number>(); // partition: node id -> group number
  private out: string[] = [];
  private logging = true;

  run(command: Command): string {
    this.out = [];
    try {
      this.dispatch(command);
    } catch (error) {
      if (error instanceof RaftError) this.print(`error: ${error.code}: ${error.message}`);
      else throw error;
    }
    return this.out.join("\n");
  }

  private dispatch(c: Command): void {
    const ids = c.args.map(Number);
    switch (c.name) {
      case "add-nodes":
        this.addNodes(Number(c.args[0]), c.options);
        return;
      case "campaign":
        this.node(ids[0]!).campaign();
        return;
      case "tick":
        this.tick(ids[0]!, Number(c.options.get("n") ?? c.args[1] ?? 1));
        return;
      case "tick-election":
        for (const id of ids) this.tick(id, this.member(id).config.electionTicks);
        return;
      case "tick-heartbeat":
        for (const id of ids) this.tick(id, this.member(id).config.heartbeatTicks);
        return;
      case "propose":
        this.propose(ids[0]!, c.args.slice(1).join(" "));
        return;
      case "propose-conf-change":
        this.proposeConfChange(ids[0]!, c.args.slice(1));
        return;
      case "process-ready":
        for (const id of this.targets(ids)) this.processReady(id);
        return;
      case "deliver-msgs":
        for (const id of this.targets(ids)) this.deliver(id, c.options.get("type"));
        return;
      case "drop-msgs":
        this.dropMessages(ids);
        return;
      case "stabilize":
        this.stabilize(this.targets(ids));
        return;
      case "partition":
        this.partition(c.args);
        return;
      case "heal":
        this.groups.clear();
        return;
      case "transfer-leadership":
        this.node(Number(c.options.get("from"))).transferLeadership(Number(c.options.get("to")));
        return;
      case "read-index":
        this.node(ids[0]!).readIndex(encoder.encode(c.args[1] ?? ""));
        return;
      case "compact":
        this.compact(ids[0]!, ids[1]!);
        return;
      case "restart":
        this.restart(ids[0]!);
        return;
      case "report-unreachable":
        this.node(ids[0]!).reportUnreachable(ids[1]!);
        return;
      case "report-snapshot":
        this.node(ids[0]!).reportSnapshot(ids[1]!, c.args[2] !== "fail");
        return;
      case "status":
        this.printStatus(ids[0]!);
        return;
      case "raft-log":
        this.printLog(ids[0]!);
        return;
      case "raft-state":
        this.printState();
        return;
      case "applied":
        this.printApplied(ids[0]!);
        return;
      case "log-level":
        this.logging = c.args[0] !== "none";
        return;
      default:
        throw new Error(`unknown command: ${c.line}`);
    }
  }

  private print(line: string): void {
    this.out.push(line);
  }

  private member(id: number): Member {
    const member = this.members.get(id);
    if (member === undefined) throw new Error(`no node ${id}`);
    return member;
  }

  private node(id: number): RaftNode {
    return this.member(id).node;
  }

  private targets(ids: number[]): number[] {
    return ids.length > 0 ? ids : [...this.members.keys()];
  }

  private configFor(id: number, options: Map<string, string>): RaftConfig {
    const flag = (name: string, fallback: boolean) => (options.has(name) ? options.get(name) === "true" : fallback);
    const number = (name: string, fallback: number) => (options.has(name) ? Number(options.get(name)) : fallback);
    const config = defaultRaftConfig(id, () => 0, {
      electionTicks: number("election", 10),
      heartbeatTicks: number("heartbeat", 1),
      preVote: flag("prevote", false),
      checkQuorum: flag("checkquorum", false),
      maxMessageBytes: number("max-msg-bytes", 1024 * 1024),
      maxInflightMessages: number("max-inflight", 256),
      maxInflightBytes: number("max-inflight-bytes", 0),
      maxCommittedBytesPerReady: number("max-committed-bytes", 1024 * 1024),
      maxUncommittedBytes: number("max-uncommitted-bytes", 0),
      eagerCommitBroadcast: options.get("commit-broadcast") !== "lazy",
    });
    const bug = options.get("bug");
    if (bug !== undefined) config.bugs = { [bug]: true };
    config.logger = (line) => {
      if (this.logging) this.print(`  INFO ${line.replace(/^raft \d+ \[term \d+\] /, `${id}: `)}`);
    };
    return config;
  }

  private addNodes(count: number, options: Map<string, string>): void {
    const first = this.members.size + 1;
    const newIds = Array.from({ length: count }, (_, i) => first + i);
    const voters = options.has("voters") ? idList(options.get("voters")) : newIds;
    const learners = idList(options.get("learners"));
    for (const id of newIds) {
      const storage = MemoryLogStorage.withVoters(voters, learners);
      const config = this.configFor(id, options);
      const node = new RaftNode(config, storage);
      this.members.set(id, { id, node, storage, config, applied: [] });
    }
  }

  private tick(id: number, count: number): void {
    for (let i = 0; i < count; i++) this.node(id).tick();
  }

  private propose(id: number, data: string): void {
    const placed = this.node(id).propose(encoder.encode(data));
    this.print(`proposed at ${placed.term}/${placed.index}`);
  }

  private proposeConfChange(id: number, words: string[]): void {
    const change: ConfChange = { transition: "auto", changes: [] };
    for (let i = 0; i < words.length; i++) {
      const word = words[i]!;
      if (word === "joint") change.transition = "joint";
      else if (word === "leave") continue;
      else change.changes.push({ type: word as ConfChangeSingle["type"], nodeId: Number(words[++i]) });
    }
    const placed = this.node(id).proposeConfChange(change);
    this.print(`proposed at ${placed.term}/${placed.index}`);
  }

  processReady(id: number): void {
    const member = this.member(id);
    if (!member.node.hasReady()) return;
    this.print(`> ${id} handling Ready`);
    const ready = member.node.ready();
    for (const line of formatReady(ready)) this.print(`  ${line}`);
    // The driver contract: persist, send, apply, advance.
    if (ready.snapshot !== undefined) member.storage.applySnapshot(ready.snapshot);
    member.storage.append(ready.entries);
    if (ready.hardState !== undefined) member.storage.setHardState(ready.hardState);
    this.network.push(...ready.messages, ...ready.messagesAfterPersist);
    member.applied.push(...ready.committedEntries);
    member.node.advance(ready);
  }

  private deliver(id: number, type: string | undefined): void {
    const mine = this.network.filter((m) => m.to === id && (type === undefined || m.type === type));
    if (mine.length === 0) return;
    this.network = this.network.filter((m) => !mine.includes(m));
    this.print(`> ${id} receiving messages`);
    for (const message of mine) {
      if (this.cut(message.from, message.to)) {
        this.print(`  dropped: ${formatMessage(message)}`);
        continue;
      }
      this.print(`  ${formatMessage(message)}`);
      this.members.get(id)?.node.step(message);
    }
  }

  private dropMessages(ids: number[]): void {
    const dropped = this.network.filter((m) => ids.includes(m.to));
    this.network = this.network.filter((m) => !ids.includes(m.to));
    for (const message of dropped) this.print(`dropped: ${formatMessage(message)}`);
  }

  private stabilize(ids: number[]): void {
    for (let round = 0; round < 100; round++) {
      let busy = false;
      for (const id of ids) {
        if (this.member(id).node.hasReady()) {
          busy = true;
          this.processReady(id);
        }
      }
      for (const id of ids) {
        if (this.network.some((m) => m.to === id)) {
          busy = true;
          this.deliver(id, undefined);
        }
      }
      if (!busy) return;
    }
    throw new Error("stabilize did not settle in 100 rounds");
  }

  private partition(words: string[]): void {
    this.groups.clear();
    let group = 0;
    for (const word of words) {
      if (word === "/") group++;
      else this.groups.set(Number(word), group);
    }
  }

  private cut(from: number, to: number): boolean {
    if (this.groups.size === 0) return false;
    return (this.groups.get(from) ?? -1) !== (this.groups.get(to) ?? -1);
  }

  private compact(id: number, index: number): void {
    const member = this.member(id);
    const status = member.node.status();
    if (index > status.applied) throw new Error(`compact ${index} beyond applied ${status.applied}`);
    const data = encoder.encode(`snap@${index}`);
    member.storage.createSnapshot(index, status.conf, data);
    member.storage.compact(index);
    this.print(`compacted ${id} to ${index}: first index ${member.storage.firstIndex()}`);
  }

  private restart(id: number): void {
    const member = this.member(id);
    member.node = new RaftNode(member.config, member.storage);
    member.applied = [];
  }

  private printStatus(id: number): void {
    const s = this.node(id).status();
    this.print(`${id}: ${s.role} term=${s.term} vote=${s.vote} lead=${s.lead} commit=${s.commit} applied=${s.applied} log=[${s.firstIndex}, ${s.lastIndex}]`);
    this.print(`conf: ${formatConf(s.conf)}`);
    if (s.leadTransferee !== 0) this.print(`transferring to ${s.leadTransferee}`);
    for (const [peer, p] of [...s.progress].sort((a, b) => a[0] - b[0])) {
      const extra = [
        p.learner ? "learner" : "",
        p.recentActive ? "" : "inactive",
        p.inflightCount ? `inflight=${p.inflightCount}` : "",
        p.pendingSnapshot ? `pending-snapshot=${p.pendingSnapshot}` : "",
      ].filter((x) => x !== "");
      this.print(`  ${peer}: ${p.state} match=${p.match} next=${p.next}${extra.length ? " " + extra.join(" ") : ""}`);
    }
  }

  private printLog(id: number): void {
    const storage = this.member(id).storage;
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    if (last < first) {
      this.print(`log is empty: first index=${first}, last index=${last}`);
      return;
    }
    for (const entry of storage.entries(first, last + 1, Number.POSITIVE_INFINITY)) this.print(formatEntry(entry));
  }

  private printState(): void {
    for (const [id, member] of this.members) {
      const s = member.node.status();
      this.print(`${id}: ${s.role} term=${s.term} lead=${s.lead} commit=${s.commit}`);
    }
  }

  private printApplied(id: number): void {
    const applied = this.member(id).applied;
    if (applied.length === 0) this.print("nothing applied since start");
    for (const entry of applied) this.print(formatEntry(entry));
  }
}

// ------------------------------------------------------------------ formatting

export function formatEntry(entry: Entry): string {
  if (entry.type === "conf-change") return `${entry.term}/${entry.index} conf-change ${describeConfChange(decodeConfChange(entry.data))}`;
  return `${entry.term}/${entry.index} normal ${JSON.stringify(decoder.decode(entry.data))}`;
}

export function formatConf(conf: ConfState): string {
  const parts = [`voters=(${conf.voters.join(",")})`];
  if (conf.votersOutgoing.length > 0) parts[0] += `&&(${conf.votersOutgoing.join(",")})`;
  if (conf.learners.length > 0) parts.push(`learners=(${conf.learners.join(",")})`);
  if (conf.learnersNext.length > 0) parts.push(`learners-next=(${conf.learnersNext.join(",")})`);
  if (conf.autoLeave) parts.push("auto-leave");
  return parts.join(" ");
}

function formatSnapshot(snapshot: Snapshot): string {
  return `${snapshot.meta.term}/${snapshot.meta.index} ${formatConf(snapshot.meta.conf)} data=${JSON.stringify(decoder.decode(snapshot.data))}`;
}

export function formatMessage(m: Message): string {
  let line = `${m.from}->${m.to} ${m.type} term=${m.term}`;
  switch (m.type) {
    case "append":
      line += ` log=${m.logTerm}/${m.index} commit=${m.commit}`;
      if (m.entries.length > 0) line += ` entries=[${m.entries.map(formatEntry).join(", ")}]`;
      break;
    case "append-response":
      line += ` index=${m.index}`;
      if (m.reject) line += ` rejected hint=${m.rejectTerm ?? 0}/${m.rejectHint}`;
      break;
    case "vote":
    case "prevote":
      line += ` last=${m.logTerm}/${m.index}`;
      if (m.leaderTransfer) line += " transfer";
      break;
    case "vote-response":
    case "prevote-response":
      if (m.reject) line += " rejected";
      break;
    case "heartbeat":
      line += ` commit=${m.commit}`;
      break;
    case "snapshot":
      line += ` snapshot=${formatSnapshot(m.snapshot!)}`;
      break;
    case "read-index-response":
      line += ` index=${m.index}`;
      break;
    default:
      break;
  }
  if (m.context !== undefined && m.context.length > 0) line += ` context=${JSON.stringify(decoder.decode(m.context))}`;
  return line;
}

export function formatReady(ready: Ready): string[] {
  const lines: string[] = [];
  if (ready.softState) lines.push(`soft-state: ${ready.softState.role} leader=${ready.softState.leader}`);
  if (ready.hardState) lines.push(`hard-state: term=${ready.hardState.term} vote=${ready.hardState.vote} commit=${ready.hardState.commit}`);
  const section = (title: string, items: string[]) => {
    if (items.length === 0) return;
    lines.push(`${title}:`);
    for (const item of items) lines.push(`  ${item}`);
  };
  if (ready.snapshot) lines.push(`snapshot: ${formatSnapshot(ready.snapshot)}`);
  section("entries", ready.entries.map(formatEntry));
  section("committed", ready.committedEntries.map(formatEntry));
  section("messages", ready.messages.map(formatMessage));
  section("after-persist", ready.messagesAfterPersist.map(formatMessage));
  section(
    "read-states",
    ready.readStates.map((r) => `index=${r.index} context=${JSON.stringify(decoder.decode(r.context))}`),
  );
  return lines;
}

// ------------------------------------------------------------------ datadriven files

interface Block {
  comments: string[];
  command: string;
  expected: string;
}

function parseBlocks(text: string): Block[] {
  const lines = text.split("\n");
  const blocks: Block[] = [];
  let i = 0;
  while (i < lines.length) {
    const comments: string[] = [];
    while (i < lines.length && (lines[i]!.startsWith("#") || lines[i]!.trim() === "")) {
      const line = lines[i++]!;
      if (line.trim() !== "") comments.push(line);
    }
    if (i >= lines.length) break;
    const command = lines[i++]!;
    if (lines[i] !== "----") throw new Error(`line ${i + 1}: expected ---- after "${command}"`);
    i++;
    const expected: string[] = [];
    while (i < lines.length && lines[i]!.trim() !== "") expected.push(lines[i++]!);
    blocks.push({ comments, command, expected: expected.join("\n") });
  }
  return blocks;
}

// The commands of a testdata file, without their expected output.
export function transcriptCommands(path: string): string[] {
  return parseBlocks(readFileSync(path, "utf8")).map((block) => block.command);
}

// Runs a testdata file; returns the mismatches (empty when it passes). In rewrite mode the file
// is rewritten with the actual output.
export function runTranscript(path: string, rewrite: boolean): string[] {
  const blocks = parseBlocks(readFileSync(path, "utf8"));
  const env = new InteractionEnv();
  const failures: string[] = [];
  const rewritten: string[] = [];
  for (const block of blocks) {
    const actual = env.run(parseCommand(block.command));
    rewritten.push(...block.comments, block.command, "----", ...(actual === "" ? ["ok"] : [actual]), "");
    const expected = block.expected === "ok" ? "" : block.expected;
    if (actual !== expected) {
      failures.push(`${path}: "${block.command}"\n--- expected\n${block.expected}\n--- actual\n${actual === "" ? "ok" : actual}`);
    }
  }
  if (rewrite) writeFileSync(path, rewritten.join("\n").replace(/\n+$/, "\n"));
  return failures;
}
