// The Node.js flags every node process runs with. `ferry dev` passes them to its nodes;
// bin/ferry.js's and ./ferry's interpreter lines give them to `ferry start` (a test keeps the three
// equal); a node started without them says so at start (missingNodeFlags). docs/node.md has the
// figures.
// - A 32 MiB young generation (V8's default is 16 MiB on 64-bit): a node allocates mostly
//   short-lived request and frame objects, and a larger nursery halved the leader's
//   garbage-collection time under pipelined SENDs.
// - A first old-generation limit of 256 MiB: a node's live heap is small (~11 MiB), so V8 kept
//   its old-generation limit low and ran a full mark-compact every 100-200 ms under pipelined
//   SENDs (requests in flight survive scavenges and are promoted). With the larger first limit
//   (later ones stay higher too: 80-100 MiB between mark-compacts) the 3 nodes used ~10-15% less
//   CPU per pipelined SEND, for ~50-70 MiB more peak RSS per node.
export const NODE_FLAGS_DEFAULT = ["--max-semi-space-size=32", "--initial-old-space-size=256"];

// The flags of NODE_FLAGS_DEFAULT this process was not started with, in any value (a value of
// the operator's own choosing counts as given): from its command line or NODE_OPTIONS.
export function missingNodeFlags(execArgv: readonly string[], nodeOptions = ""): string[] {
  const given = [...execArgv, ...nodeOptions.split(/\s+/)].map((flag) => flag.split("=")[0]!.replaceAll("_", "-"));
  return NODE_FLAGS_DEFAULT.filter((flag) => !given.includes(flag.split("=")[0]!));
}
