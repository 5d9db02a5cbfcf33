// counter, version 2: the same state (a bare number, so a hot swap from version 1 or
// from the Rust counter keeps the count) and one more operation, {"op":"dec"}.
//
// Calls: {"op":"inc","by":N}, {"op":"dec","by":N} and {"op":"get"}, each replying
// {"value":N,"version":2}.
let value = 0;

function apply(message) {
  const by = typeof message.by === "number" ? message.by : 1;
  switch (message && message.op) {
    case "inc":
      value += by;
      return value;
    case "dec":
      value -= by;
      return value;
    case "get":
      return value;
    default:
      throw new Error(`unknown op ${JSON.stringify(message && message.op)}; use inc, dec or get`);
  }
}

export function init(config) {
  value = config && typeof config.start === "number" ? config.start : 0;
}

export function handleCall(request) {
  return { value: apply(request), version: 2 };
}

export function handleCast(message) {
  try {
    apply(message);
  } catch (e) {
    solo.log("warn", String(e));
  }
}

export function snapshot() {
  return value;
}

export function restore(state) {
  if (typeof state !== "number") throw new Error("the snapshot is not a number");
  value = state;
}
