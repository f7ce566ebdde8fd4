// Mailbox (recipient) and sender names: 1-200 characters of A-Z a-z 0-9 . _ - :
// Dead-letter mailboxes are named "<mailbox>:dlq" and follow the same rules.

export const NAME_LENGTH_MAX = 200;
const NAME_PATTERN = /^[A-Za-z0-9._:-]{1,200}$/;

export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name);
}

// Returns a human-readable reason, or undefined when the name is valid.
export function nameProblem(name: string): string | undefined {
  if (name.length === 0) return "name is empty";
  if (name.length > NAME_LENGTH_MAX) return `name is ${name.length} characters; the limit is ${NAME_LENGTH_MAX}`;
  if (!NAME_PATTERN.test(name)) return "name may contain only A-Z a-z 0-9 . _ - :";
  return undefined;
}
