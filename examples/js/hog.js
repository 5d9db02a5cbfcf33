// hog: allocates memory without bound when called, unless asked {"mode":"ok"}.
export function handleCall(request) {
  if (request && request.mode === "ok") return "ok";
  const hoard = [];
  for (;;) {
    hoard.push(new Array(1 << 16).fill(1));
  }
}
