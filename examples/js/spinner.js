// spinner: never returns from a call (an infinite loop), unless asked {"mode":"ok"}.
export function handleCall(request) {
  if (request && request.mode === "ok") return "ok";
  let n = 0;
  for (;;) {
    n = (n + 1) | 0;
  }
}
