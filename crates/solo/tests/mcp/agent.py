"""An agent driving Solo through the official MCP Python SDK (`mcp` on PyPI).

Run by the MCP integration tests (crates/solo/tests/e2e/mcp.rs): `python agent.py SCENARIO`,
with the server's address and credentials in the environment. Each scenario asserts
what it sees and exits non-zero, naming the failed check, when something is wrong.
"""

import contextlib
import json
import os
import ssl
import sys
import warnings

import anyio
import httpx2
import mcp.types as types
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

# resources/subscribe is marked deprecated by the newest protocol revision; Solo serves
# the 2025-11-25 revision, where it is the way to follow a resource.
warnings.simplefilter("ignore", DeprecationWarning)
try:
    from mcp.shared.exceptions import MCPDeprecationWarning

    warnings.simplefilter("ignore", MCPDeprecationWarning)
except ImportError:
    pass

ENV = os.environ
PLATFORM_TOOLS = {
    "solo_whoami", "solo_list_services", "solo_status", "solo_deploy", "solo_call",
    "solo_cast", "solo_swap", "solo_kill", "solo_logs", "solo_events",
    "solo_verify_events", "solo_put_secret", "solo_list_secrets", "solo_delete_secret",
    "solo_bind_secret", "solo_egress_rules", "solo_grant", "solo_attenuate", "solo_revoke", "solo_list_capabilities",
    "solo_discover", "solo_tree",
}
LOGGER_JS = """
export function handleCall(request) {
  solo.log("info", "asked " + JSON.stringify(request));
  return { said: request.text };
}
"""
ECHO_JS = "export function handleCall(request) { return request; }"


def check(ok, what, detail=""):
    if not ok:
        print(f"FAILED: {what}\n{detail}", file=sys.stderr)
        sys.exit(1)


def text(result):
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def ok(result, what):
    check(not result.is_error, f"{what} succeeds", text(result))
    return result


def refused(result, reason, what):
    check(result.is_error, f"{what} is refused", text(result))
    got = (result.structured_content or {}).get("error")
    check(got == reason, f"{what} is refused with {reason}", text(result))
    check(reason in text(result), f"the refusal's text names {reason}", text(result))
    return result


async def protocol_error(coro, what):
    try:
        await coro
    except MCPError as e:
        return e
    check(False, f"{what} is a protocol error")


def tool_spec(name, description):
    return {
        "name": name,
        "description": description,
        "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
    }


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# ----- stdio: `solo mcp` -----------------------------------------------------------------


async def stdio():
    params = StdioServerParameters(
        command=ENV["SOLO_BIN"],
        args=["mcp"],
        env={k: ENV[k] for k in ("SOLO_DATA_DIR", "SOLO_CERT", "SOLO_KEY", "PATH") if k in ENV},
    )
    tools_changed = anyio.Event()
    events_updated = anyio.Event()
    last_event = {}

    async def on_message(msg):
        if isinstance(msg, types.ToolListChangedNotification):
            tools_changed.set()
        elif isinstance(msg, types.ResourceUpdatedNotification):
            if msg.params.uri == "solo://events":
                last_event["id"] = (msg.params.meta or {}).get("solo/last_id")
                events_updated.set()

    with anyio.fail_after(120):
        async with stdio_client(params) as (r, w), ClientSession(
            r, w, read_timeout_seconds=30.0, message_handler=on_message
        ) as s:
            init = await s.initialize()
            check(init.server_info.name == "solo", "the server is solo", init)
            check(init.capabilities.tools.list_changed, "tools/list_changed is offered")
            check(init.capabilities.resources.subscribe, "resource subscriptions are offered")

            tools = {t.name: t for t in (await s.list_tools()).tools}
            check(PLATFORM_TOOLS <= set(tools), "every platform tool is listed", sorted(tools))
            for name in PLATFORM_TOOLS:
                t = tools[name]
                check(t.input_schema.get("type") == "object", f"{name} has an object schema")
                check(len(t.description or "") > 40, f"{name} has a description")
                check(t.annotations.read_only_hint is not None, f"{name} has hints")
            check(tools["solo_status"].annotations.read_only_hint, "solo_status reads only")
            check(tools["solo_kill"].annotations.destructive_hint, "solo_kill destroys")
            check("code" in tools["solo_deploy"].input_schema["properties"], "deploy takes code")

            me = ok(await s.call_tool("solo_whoami", {}), "whoami").structured_content
            check(me["tenant"] == "alice" and me["role"] == "tenant", "whoami names alice", me)

            await s.subscribe_resource("solo://events")

            # The counter: deploy, call, and its events.
            ok(await s.call_tool("solo_deploy", {
                "service_id": "counter", "code": read_text(ENV["COUNTER_JS"])}), "deploy counter")
            r = ok(await s.call_tool("solo_call", {
                "service_id": "counter", "request": {"op": "inc", "by": 2}}), "call counter")
            check(r.structured_content == {"value": 2}, "the counter counts", r.structured_content)
            with anyio.fail_after(10):
                await events_updated.wait()
            check(isinstance(last_event.get("id"), int), "the update names the last event id")
            page = json.loads((await s.read_resource("solo://events?after_id=0")).contents[0].text)
            kinds = [e["event_type"] for e in page["events"]]
            check("service_deployed" in kinds, "the event feed shows the deploy", kinds)

            # A syntax error names its line and column.
            r = refused(await s.call_tool("solo_deploy", {
                "service_id": "broken", "code": "export function handleCall(r) {\n  return (;\n}",
                "dry_run": True}), "invalid_code", "a syntax error")
            check("line 2" in text(r) and "column" in text(r), "line and column", text(r))

            # A crash comes back with its crash report.
            ok(await s.call_tool("solo_deploy", {
                "service_id": "crasher", "code": read_text(ENV["CRASHER_JS"])}), "deploy crasher")
            r = refused(await s.call_tool("solo_call", {
                "service_id": "crasher", "request": {"mode": "crash"}}),
                "service_crashed", "a crashing call")
            check("crash report" in text(r), "the crash report is in the text", text(r))

            # Secrets: stored, listed by name, never shown back.
            r = ok(await s.call_tool("solo_put_secret", {
                "name": "api-key", "value": "hunter2-do-not-echo"}), "put secret")
            check("hunter2" not in text(r), "the secret is not echoed")
            r = ok(await s.call_tool("solo_list_secrets", {}), "list secrets")
            check("api-key" in text(r) and "hunter2" not in text(r), "names only", text(r))

            # A service offered as a tool appears, answers, logs, and goes away.
            tools_changed = anyio.Event()
            ok(await s.call_tool("solo_deploy", {
                "service_id": "logger", "code": LOGGER_JS,
                "tool": tool_spec("say", "Repeats `text` back and logs it.")}), "deploy logger")
            with anyio.fail_after(10):
                await tools_changed.wait()
            listed = {t.name: t for t in (await s.list_tools()).tools}
            check("say" in listed, "the service's tool is listed", sorted(listed))
            check(listed["say"].description.startswith("Repeats"), "with its description")
            r = ok(await s.call_tool("say", {"text": "hello"}), "call the service's tool")
            check(r.structured_content == {"said": "hello"}, "it answers", r.structured_content)
            r = ok(await s.call_tool("solo_logs", {"service_id": "logger"}), "logs")
            check("asked" in text(r), "the logs show the call", text(r))
            logs = (await s.read_resource("solo://services/logger/logs")).contents[0].text
            check("asked" in logs, "the logs resource shows the call", logs)

            # Bad input.
            refused(await s.call_tool("solo_status", {"service_id": 5}),
                    "invalid_arguments", "arguments failing the schema")
            refused(await s.call_tool("solo_status", {"service_id": "nope"}),
                    "not_found", "an unknown service")
            e = await protocol_error(s.call_tool("no_such_tool", {}), "an unknown tool")
            check(e.error.code == types.INVALID_PARAMS, "unknown tool: invalid params", e)
            await protocol_error(s.read_resource("file:///etc/passwd"), "a foreign resource")

            tools_changed = anyio.Event()
            ok(await s.call_tool("solo_kill", {"service_id": "logger", "force": True}), "kill")
            with anyio.fail_after(10):
                await tools_changed.wait()
            listed = {t.name for t in (await s.list_tools()).tools}
            check("say" not in listed, "a killed service's tool is gone", sorted(listed))
    print("stdio: ok")


# ----- Streamable HTTP at /mcp -----------------------------------------------------------


def http_client(cert=None, key=None, token=None):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ENV["SOLO_CA"])
    if cert:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.AsyncClient(verify=ctx, headers=headers, timeout=httpx2.Timeout(30.0))


def tenant_client(name):
    return http_client(ENV[f"{name.upper()}_CERT"], ENV[f"{name.upper()}_KEY"])


@contextlib.asynccontextmanager
async def Session(http):
    """An initialized MCP session over HTTP with one client's credentials."""
    async with http, streamable_http_client(ENV["MCP_URL"], http_client=http) as streams:
        async with ClientSession(streams[0], streams[1], read_timeout_seconds=30.0) as s:
            await s.initialize()
            yield s


async def service_tools(s):
    return {t.name for t in (await s.list_tools()).tools} - PLATFORM_TOOLS


async def http_tenants():
    with anyio.fail_after(120):
        async with Session(tenant_client("alice")) as alice, Session(tenant_client("bob")) as bob:
            for s, who, other in ((alice, "alice", "bob"), (bob, "bob", "alice")):
                ok(await s.call_tool("solo_deploy", {
                    "service_id": f"{who}-echo", "code": ECHO_JS,
                    "tool": tool_spec(f"{who}_echo", f"Echoes for {who}.")}), f"{who} deploys")
            for s, who, other in ((alice, "alice", "bob"), (bob, "bob", "alice")):
                mine = await service_tools(s)
                check(mine == {f"{who}_echo"}, f"{who} sees only their own tool", mine)
                r = ok(await s.call_tool("solo_list_services", {}), f"{who} lists")
                ids = [x["service_id"] for x in r.structured_content["services"]]
                check(ids == [f"{who}-echo"], f"{who} sees only their own services", ids)
                r = ok(await s.call_tool(f"{who}_echo", {"text": who}), f"{who}'s tool")
                check(r.structured_content == {"text": who}, "it answers", r.structured_content)
                refused(await s.call_tool("solo_call", {
                    "service_id": f"{other}-echo", "request": {}}),
                    "not_found", f"{who} calling {other}'s service")
                await protocol_error(s.call_tool(f"{other}_echo", {}), f"{other}'s tool for {who}")
                await protocol_error(
                    s.read_resource(f"solo://services/{other}-echo/logs"), f"{other}'s logs")
                page = json.loads((await s.read_resource("solo://events")).contents[0].text)
                tenants = {e["tenant_id"] for e in page["events"]}
                check(tenants == {who}, f"{who} reads only their own events", tenants)
    print("http tenants: ok")


async def http_token():
    with anyio.fail_after(120):
        async with Session(tenant_client("alice")) as alice:
            for sid, tool in (("t-echo", "t_echo"), ("t-other", "t_other")):
                ok(await alice.call_tool("solo_deploy", {
                    "service_id": sid, "code": ECHO_JS,
                    "tool": tool_spec(tool, f"Echoes ({sid}).")}), f"deploy {sid}")
            r = ok(await alice.call_tool("solo_grant", {
                "resource": "service:t-echo", "permissions": ["call"], "ttl_seconds": 600}),
                "grant")
            token = r.structured_content["token"]
            check(token.startswith("solo_"), "a token is minted")

            async with Session(http_client(token=token)) as holder:
                mine = await service_tools(holder)
                check(mine == {"t_echo"}, "the token sees only the tool it may call", mine)
                r = ok(await holder.call_tool("t_echo", {"text": "x"}), "the token's tool")
                check(r.structured_content == {"text": "x"}, "it answers")
                ok(await holder.call_tool("solo_call", {
                    "service_id": "t-echo", "request": 1}), "solo_call within scope")
                refused(await holder.call_tool("solo_call", {
                    "service_id": "t-other", "request": 1}),
                    "permission_denied", "a call outside the token's scope")
                refused(await holder.call_tool("solo_deploy", {
                    "service_id": "x", "code": ECHO_JS}), "permission_denied", "a deploy")

            # The denials are events in the granting tenant's log.
            denials = []
            for _ in range(100):
                r = ok(await alice.call_tool("solo_events", {"kind": "capability_denied"}),
                       "events")
                denials = r.structured_content["events"]
                if len(denials) >= 2:
                    break
                await anyio.sleep(0.05)
            check(len(denials) >= 2, "each denial is an event", denials)
            check(denials[0]["payload"]["permission"] == "call", "naming the permission",
                  denials[0])
            check(token not in json.dumps(denials), "never the token itself")

            ok(await alice.call_tool("solo_revoke", {"token": token}), "revoke")
        async with http_client(token=token) as raw:
            r = await raw.post(ENV["MCP_URL"], json=initialize_body(),
                               headers={"Accept": "application/json, text/event-stream"})
            check(r.status_code == 401, "a revoked token is a 401", r.text)
    print("http token: ok")


def initialize_body():
    return {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}},
    }


async def http_bad_input():
    accept = {"Accept": "application/json, text/event-stream",
              "Content-Type": "application/json"}
    url = ENV["MCP_URL"]
    limit = int(ENV["MAX_REQUEST_BYTES"])
    with anyio.fail_after(120):
        async with http_client() as nobody:
            r = await nobody.post(url, json=initialize_body(), headers=accept)
            check(r.status_code == 401, "no credentials: 401", r.text)
            check(r.headers.get("www-authenticate") == "Bearer", "with WWW-Authenticate")
            check(r.json()["error"] == "unauthenticated", "a JSON refusal", r.text)
        async with tenant_client("alice") as alice:
            r = await alice.post(url, content=b"{not json", headers=accept)
            check(r.status_code == 400, "a malformed body: 400", r.text)
            check(r.json()["error"]["code"] == types.PARSE_ERROR, "a parse error", r.text)
            check("line 1 column 2" in r.json()["error"]["message"], "naming where", r.text)
            batch = json.dumps([initialize_body(), initialize_body()])
            for body, what in ((batch, "a batch"), ('{"id": 1}', "a body that is no message")):
                r = await alice.post(url, content=body, headers=accept)
                check(r.status_code == 400, f"{what}: 400", f"{r.status_code} {r.text}")
                check(r.json()["error"]["code"] == types.INVALID_REQUEST, f"{what}: invalid",
                      r.text)
            r = await alice.post(url, json=initialize_body(),
                                 headers={**accept, "Origin": "https://evil.example"})
            check(r.status_code == 403, "a foreign Origin: 403", r.text)
            r = await alice.post(url, json=initialize_body(),
                                 headers={**accept, "Host": "evil.example"})
            check(r.status_code == 403, "a foreign Host: 403", r.text)
            r = await alice.post(url, content=b" " * (limit + 128 * 1024), headers=accept)
            check(r.status_code == 413, "a body over the limit: 413", r.status_code)
        async with Session(tenant_client("alice")) as s:
            ok(await s.call_tool("solo_deploy", {"service_id": "sink", "code": ECHO_JS}), "deploy")
            big = "x" * (limit + 1024)
            refused(await s.call_tool("solo_call", {"service_id": "sink", "request": big}),
                    "arguments_too_large", "arguments over max_request_bytes")
            r = ok(await s.call_tool("solo_call", {"service_id": "sink", "request": "small"}),
                   "a call after the refusal")
    print("http bad input: ok")


SCENARIOS = {
    "stdio": stdio,
    "http_tenants": http_tenants,
    "http_token": http_token,
    "http_bad_input": http_bad_input,
}

if __name__ == "__main__":
    anyio.run(SCENARIOS[sys.argv[1]])
