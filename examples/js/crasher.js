// crasher: misbehaves on demand, to exercise crash handling.
//
// Calls {"mode": M}: "ok" replies "ok"; "error" throws (a service error, the instance
// lives on); "crash" overflows the stack (the instance crashes); "big" replies with
// `size` characters (default 2 MiB); "hang" returns a promise that never settles (the
// runner sees that nothing is left to settle it and answers a service error at once). A cast {"mode":"crash"} crashes the instance: an
// exception in a cast has nobody to go back to. Config {"fail_init": true} makes init
// throw.
export function init(config) {
  if (config && config.fail_init) throw new Error("asked to fail in init");
}

function recurse(n) {
  return recurse(n + 1) + 1;
}

export function handleCall(request) {
  switch (request.mode) {
    case "ok":
      return "ok";
    case "error":
      throw new Error("asked to fail");
    case "crash":
      return recurse(0);
    case "big":
      return "x".repeat(request.size || 2 * 1024 * 1024);
    case "hang":
      return new Promise(() => {});
    default:
      throw new Error(`unknown mode ${request.mode}`);
  }
}

export function handleCast(message) {
  if (message.mode === "crash") throw new Error("asked to crash in a cast");
}
