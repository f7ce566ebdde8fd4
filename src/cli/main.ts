// The `ferry` command line. Parses flags and calls the client or the node; holds no logic of its own.
console.log("ferry: the CLI is not built yet");
