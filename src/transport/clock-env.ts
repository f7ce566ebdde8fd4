// Reads the clock fault knobs of a chaos run from the environment, once at process start:
// FERRY_CLOCK_OFFSET_MS (a constant error, ms) and FERRY_CLOCK_DRIFT_PPM (a rate error). The node
// wraps its raw clock with them: new SkewedClock(Date.now, readClockSkewFromEnv()) from src/clock,
// and passes that clock both to the transport (`now`, for clock samples) and to NodeClock.
// Lives here, not in the pure src/clock, because it reads process state.

export const CLOCK_OFFSET_ENV = "FERRY_CLOCK_OFFSET_MS";
export const CLOCK_DRIFT_ENV = "FERRY_CLOCK_DRIFT_PPM";

export function readClockSkewFromEnv(env: NodeJS.ProcessEnv = process.env): { offsetMs: number; driftPpm: number } {
  return { offsetMs: readNumber(env, CLOCK_OFFSET_ENV), driftPpm: readNumber(env, CLOCK_DRIFT_ENV) };
}

function readNumber(env: NodeJS.ProcessEnv, name: string): number {
  const text = env[name];
  if (text === undefined || text.trim() === "") return 0;
  const value = Number(text);
  if (!Number.isFinite(value)) throw new RangeError(`${name}=${JSON.stringify(text)} is not a number`);
  return value;
}
