// The contract (docs/design §2) checked against a chaos run's history. Pure: it gets what the
// producers were told, what the consumers got, and what the cluster stored, and lists violations.

export interface SendRecord {
  id: string;
  mailbox: string;
  timestamp: bigint; // from the acknowledgement
}

export interface DeliveryRecord {
  id: string;
  mailbox: string; // where it was received (may be <mailbox>:dlq)
  timestamp: bigint;
  deliveries: number;
}

export interface StoredItem {
  id: string;
  timestamp: bigint;
}

export interface History {
  acknowledged: SendRecord[];
  attempted: Set<string>; // every id a producer tried to send, acknowledged or not
  // Per consumed mailbox, deliveries in the order that mailbox's only consumer received them.
  deliveries: Map<string, DeliveryRecord[]>;
  // The audit mailbox (every message is also sent there and never consumed), in log order, as
  // each node listed it.
  audit: Map<number, StoredItem[]>;
}

export function checkContract(history: History): string[] {
  const problems: string[] = [];
  const problem = (text: string) => {
    if (problems.length < 30) problems.push(text);
  };
  const delivered = new Map<string, DeliveryRecord[]>();
  for (const records of history.deliveries.values()) {
    for (const record of records) {
      const list = delivered.get(record.id) ?? [];
      list.push(record);
      delivered.set(record.id, list);
    }
  }

  // Durability + at-least-once: every acknowledged SEND is delivered (after the drain).
  for (const sent of history.acknowledged) {
    if (!delivered.has(sent.id)) problem(`acknowledged ${sent.id} (to ${sent.mailbox}, ts ${sent.timestamp}) was never delivered`);
  }
  // Nothing is delivered that nobody sent.
  for (const id of delivered.keys()) if (!history.attempted.has(id)) problem(`delivered ${id}, which no producer sent`);

  // Dedupe: one stored copy per id. Every delivery of an id carries the same timestamp, and at
  // most one delivery of it is a first delivery in its mailbox.
  for (const [id, records] of delivered) {
    const stamps = new Set(records.map((r) => r.timestamp));
    if (stamps.size > 1) problem(`${id} was delivered with ${stamps.size} different timestamps (stored more than once)`);
    const firsts = records.filter((r) => r.deliveries === 1 && !r.mailbox.endsWith(":dlq"));
    if (firsts.length > 1) problem(`${id} had ${firsts.length} first deliveries (stored more than once)`);
  }

  // Ordering: a mailbox's first deliveries come in timestamp order.
  for (const [mailbox, records] of history.deliveries) {
    if (mailbox.endsWith(":dlq")) continue;
    let last: DeliveryRecord | undefined;
    for (const record of records) {
      if (record.deliveries !== 1) continue;
      if (last && record.timestamp <= last.timestamp) problem(`${mailbox}: first delivery of ${record.id} (ts ${record.timestamp}) came after ${last.id} (ts ${last.timestamp})`);
      last = record;
    }
  }

  // The audit mailbox: ids unique, timestamps strictly increasing in log order, every
  // acknowledged send there with the timestamp it was acknowledged with, every node agreeing.
  const acknowledgedAt = new Map(history.acknowledged.map((s) => [s.id, s.timestamp]));
  let reference: { node: number; items: StoredItem[] } | undefined;
  for (const [node, items] of history.audit) {
    const seen = new Set<string>();
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!;
      if (seen.has(item.id)) problem(`node ${node}: ${item.id} is stored twice in the audit mailbox`);
      seen.add(item.id);
      if (i > 0 && item.timestamp <= items[i - 1]!.timestamp) {
        const around = items
          .slice(Math.max(0, i - 6), i + 4)
          .map((x) => `${x.id}@${x.timestamp}`)
          .join(" ");
        problem(`node ${node}: timestamps do not increase in log order at ${items[i - 1]!.id} (${items[i - 1]!.timestamp}) -> ${item.id} (${item.timestamp}); around: ${around}`);
      }
      const acked = acknowledgedAt.get(item.id);
      if (acked !== undefined && acked !== item.timestamp) problem(`node ${node}: ${item.id} stored at ts ${item.timestamp} but acknowledged with ts ${acked}`);
      if (!history.attempted.has(item.id)) problem(`node ${node}: ${item.id} stored but never sent`);
    }
    for (const id of acknowledgedAt.keys()) if (!seen.has(id)) problem(`node ${node}: acknowledged ${id} is missing from the audit mailbox`);
    if (!reference) reference = { node, items };
    else if (reference.items.map((x) => `${x.id}@${x.timestamp}`).join(",") !== items.map((x) => `${x.id}@${x.timestamp}`).join(",")) {
      problem(`nodes ${reference.node} and ${node} list different audit mailboxes (${reference.items.length} vs ${items.length} items)`);
    }
  }
  return problems;
}
