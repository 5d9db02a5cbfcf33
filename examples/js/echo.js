// echo: replies with the request it was sent.
export function handleCall(request) {
  return request;
}
