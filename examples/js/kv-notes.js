// kv-notes: notes kept in the service's durable key-value store.
//
// Calls: {"op":"put","key":K,"value":V}, {"op":"get","key":K},
// {"op":"delete","key":K}, {"op":"list","prefix":P}.
export async function handleCall(request) {
  switch (request.op) {
    case "put":
      await solo.kvPut(request.key, request.value);
      return { ok: true };
    case "get":
      return { value: await solo.kvGet(request.key) };
    case "delete":
      await solo.kvDelete(request.key);
      return { ok: true };
    case "list":
      return { keys: await solo.kvList(request.prefix || "") };
    default:
      throw new Error(`unknown op ${JSON.stringify(request.op)}; use put, get, delete or list`);
  }
}
