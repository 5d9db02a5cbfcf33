// counter: a number that survives hot swaps and restarts through snapshot/restore.
//
// Calls: {"op":"inc","by":N} (by defaults to 1) and {"op":"get"}, both replying
// {"value":N}. A cast {"op":"inc"} increments without a reply. The deploy config
// {"start":N} sets the initial value. Its snapshot is the bare number, the same bytes
// as the Rust counter's, so a swap between the two keeps the count.
let value = 0;

function apply(message) {
  switch (message && message.op) {
    case "inc":
      value += typeof message.by === "number" ? message.by : 1;
      return value;
    case "get":
      return value;
    default:
      throw new Error(`unknown op ${JSON.stringify(message && message.op)}; use inc or get`);
  }
}

export function init(config) {
  value = config && typeof config.start === "number" ? config.start : 0;
}

export function handleCall(request) {
  return { value: apply(request) };
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
