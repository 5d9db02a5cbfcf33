// gatekeeper: serves only callers that present a capability token with `call` on a
// named resource (the deploy config's "resource", by default this service itself).
//
// Request: {"token": "solo_...", "name": "..."}. The answer greets the name and says who
// asked (as the kernel, not the request, tells it); a missing or refused token is an
// error naming the reason. "repeat": N verifies the token N times (at most a million),
// which the capability benchmark uses to time verify from inside a guest.
let guarded;

export function init(config) {
  guarded = (config && config.resource) || `service:${solo.whoami().serviceId}`;
}

export async function handleCall(request) {
  if (!request || typeof request.token !== "string") {
    throw new Error('refused: present a capability token as "token"');
  }
  const repeat = Math.min(Math.max(request.repeat | 0, 1), 1000000);
  for (let i = 0; i < repeat; i++) {
    const v = await solo.verify(request.token, guarded, "call");
    if (!v.valid) throw new Error(`refused: the token was refused (${v.reason})`);
  }
  const c = solo.caller();
  return {
    hello: request.name || "you",
    guarded,
    caller: c && { kind: c.kind, tenant: c.tenant, service_id: c.serviceId },
  };
}
