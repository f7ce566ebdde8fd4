// The clock module's public surface (pure: HLC, offset estimation, discipline, skew guard).
export * from "./disciplined-clock.js";
export * from "./hlc.js";
export * from "./node-clock.js";
export * from "./offset-estimator.js";
export * from "./skew-guard.js";
export * from "./skewed-clock.js";
