// The address book: which peer and client address each member has. Raft's configuration knows
// only ids; addresses travel in the context of membership changes and are kept here, persisted
// to <dataDir>/members.json (written to a temporary name, fsynced, renamed, directory fsynced)
// so a restarted node can reach its peers before it has heard from anyone.
import { open, readFile, rename } from "node:fs/promises";
import { join } from "node:path";
import type { MemberAddress } from "./config.js";

const FILE_NAME = "members.json";

export class AddressBook {
  private readonly members = new Map<number, MemberAddress>();
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly dataDir: string,
    initial: MemberAddress[],
  ) {
    for (const member of initial) this.members.set(member.id, member);
  }

  static async load(dataDir: string, initial: MemberAddress[]): Promise<AddressBook> {
    const book = new AddressBook(dataDir, initial);
    try {
      const saved = JSON.parse(await readFile(join(dataDir, FILE_NAME), "utf8")) as MemberAddress[];
      for (const member of saved) book.members.set(member.id, member);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
    return book;
  }

  get(id: number): MemberAddress | undefined {
    return this.members.get(id);
  }

  all(): MemberAddress[] {
    return [...this.members.values()].sort((a, b) => a.id - b.id);
  }

  set(member: MemberAddress): void {
    this.members.set(member.id, member);
    this.save();
  }

  peersOf(selfId: number, ids: Iterable<number>): Map<number, string> {
    const peers = new Map<number, string>();
    for (const id of ids) {
      const member = this.members.get(id);
      if (id !== selfId && member) peers.set(id, member.peer);
    }
    return peers;
  }

  // Serialized: the last write wins and a crash leaves either the old or the new file.
  save(): Promise<void> {
    const text = JSON.stringify(this.all(), null, 2);
    this.writing = this.writing.then(() => writeFileDurably(this.dataDir, FILE_NAME, text));
    return this.writing;
  }

  flushed(): Promise<void> {
    return this.writing;
  }
}

export async function writeFileDurably(dir: string, name: string, text: string): Promise<void> {
  const temporary = join(dir, `${name}.tmp`);
  const file = await open(temporary, "w");
  try {
    await file.writeFile(text);
    await file.datasync();
  } finally {
    await file.close();
  }
  await rename(temporary, join(dir, name));
  const directory = await open(dir, "r");
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}
