// intruder: tries every door a sandboxed service must not have (modules that reach the
// system, Node's and QuickJS's globals, network APIs, timers, eval of host code) and
// answers what each attempt got, so a test can show that each one fails. Any request.
export async function handleCall() {
  const doors = {};
  const attempt = async (name, f) => {
    try {
      const v = await f();
      doors[name] = v === undefined ? "denied: undefined" : `OPEN: ${String(v).slice(0, 80)}`;
    } catch (e) {
      doors[name] = `denied: ${e && e.message ? e.message : e}`;
    }
  };
  await attempt("import fs", () => import("fs"));
  await attempt("import std", () => import("std"));
  await attempt("import os", () => import("os"));
  await attempt("require", () => require("fs"));
  await attempt("process.env", () => process.env);
  await attempt("globalThis.std", () => globalThis.std);
  await attempt("globalThis.os", () => globalThis.os);
  await attempt("fetch", () => fetch("http://127.0.0.1:22/"));
  await attempt("XMLHttpRequest", () => new XMLHttpRequest());
  await attempt("WebSocket", () => new WebSocket("ws://127.0.0.1:22/"));
  await attempt("setTimeout", () => setTimeout(() => {}, 1));
  return doors;
}
