"""End-to-end tests of `infra`'s MCP server, driven by the official MCP Python SDK (`mcp==2.3.0`).

Each test spawns the built binary (`INFRA_BIN`, default `<repo>/target/debug/infra`) over stdio with
`mcp.client.stdio.stdio_client`, in a fresh profiles directory (`MCP_PROFILES_DIR`), talks to it with
`mcp.ClientSession`, and closes it. Most tests run in both protocol eras:

* `legacy`: the `initialize` handshake (`ClientSession.initialize()`, protocol 2025-11-25);
* `2026-07-28`: stateless `server/discover` (`ClientSession.discover()`), after which the SDK stamps every
  request's `_meta` with the protocol version, client info and capabilities (no `initialize` at all).

Run: `INFRA_BIN=target/debug/infra python -m pytest -q tests/mcp_e2e` (see `.ci/run`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import PROTOCOL_VERSION_META_KEY
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

REPO = Path(__file__).resolve().parents[2]
INFRA_BIN = Path(os.environ.get("INFRA_BIN") or REPO / "target" / "debug" / "infra").resolve()

MODERN = "2026-07-28"
ERAS = ["legacy", MODERN]

# The order of `tools/list` fixed by shared/spec/surface.md; a listing is a subsequence of it.
SPEC_ORDER = [
    "help", "runbook", "intent", "k8s", "ssh", "http", "psql", "repo", "pipeline",
    "state", "artifacts", "jobs", "audit", "evidence", "context", "local",
]  # fmt: skip
# The tools this server must list today (issue 4), in that order.
REQUIRED_TOOLS = ["help", "runbook", "repo", "state", "artifacts", "audit", "evidence", "context"]

TEST_TIMEOUT = 60  # seconds for one test, server start and shutdown included
CALL_TIMEOUT = 30  # seconds for one request

DEPLOY_STAGING = """\
name: deploy.staging
description: Deploys a service to the staging environment (e2e test fixture).
tags: [deploy, staging]
inputs:
  service:
    type: string
    description: The service to deploy.
steps:
  - id: record
    tool: state
    args: { action: set, key: last_deploy, value: "{{ input.service }}" }
outputs:
  service: "{{ input.service }}"
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def cargo_version() -> str:
    text = (REPO / "Cargo.toml").read_text()
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    assert m, "no version in Cargo.toml"
    return m.group(1)


def make_git_repo(path: Path) -> Path:
    """A git repository with one commit on `main`; returns its resolved path."""
    path.mkdir(parents=True, exist_ok=True)
    git = ["git", "-c", "user.name=E2E Tester", "-c", "user.email=e2e@example.invalid", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(path)], check=True)
    (path / "README.txt").write_text("hello from the e2e repository\n")
    subprocess.run([*git, "-C", str(path), "add", "README.txt"], check=True)
    subprocess.run([*git, "-C", str(path), "commit", "-q", "-m", "initial commit"], check=True)
    return path.resolve()


def proc_state(pid: int) -> str | None:
    """The state letter of a process (`S`, `R`, `Z`…), or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def live_infra_children() -> list[int]:
    """Our live (non-zombie) child processes running INFRA_BIN."""
    me = os.getpid()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            exe = os.readlink(d / "exe")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z" and Path(exe.removesuffix(" (deleted)")) == INFRA_BIN:
            found.append(int(d.name))
    return found


@dataclass
class Conn:
    """A connected client session plus what the test needs to inspect."""

    session: ClientSession
    era: str
    profiles: Path
    sent: list[dict[str, Any]] = field(default_factory=list)  # every JSON-RPC message the client wrote
    init: types.InitializeResult | None = None
    discover: types.DiscoverResult | None = None

    async def call(self, tool: str, args: dict[str, Any]) -> tuple[types.CallToolResult, dict[str, Any]]:
        """Calls a tool, checks the result envelope every tool shares, returns (result, structuredContent)."""
        res = await self.session.call_tool(tool, args, read_timeout_seconds=CALL_TIMEOUT)
        return res, check_envelope(res)

    async def ok(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        res, body = await self.call(tool, args)
        assert not res.is_error, f"{tool} {args} failed: {body}"
        assert body["ok"] is True
        return body

    async def err(self, tool: str, args: dict[str, Any], kind: str) -> dict[str, Any]:
        res, body = await self.call(tool, args)
        assert res.is_error is True, f"{tool} {args} should fail with {kind}: {body}"
        assert body["ok"] is False
        assert body["error"]["kind"] == kind, body
        return body


def check_envelope(res: types.CallToolResult) -> dict[str, Any]:
    """The shape surface.md fixes for every result: structuredContent, the same JSON as text, isError."""
    body = res.structured_content
    assert isinstance(body, dict), f"no structuredContent: {res}"
    texts = [c for c in res.content if c.type == "text"]
    assert texts, "no text content"
    assert json.loads(texts[0].text) == body, "the text content is not the same JSON as structuredContent"
    assert isinstance(body["ok"], bool)
    assert isinstance(body["summary"], str) and body["summary"]
    assert bool(res.is_error) == (not body["ok"]), "isError disagrees with ok"
    if not body["ok"]:
        err = body["error"]
        assert isinstance(err["kind"], str) and err["kind"]
        assert isinstance(err["message"], str) and err["message"]
    else:
        assert body.get("effects") in ("read", "write", "destructive"), body
    links = [c for c in res.content if c.type == "resource_link"]
    for link in links:
        assert str(link.uri).startswith("artifact://runs/"), link
    if "artifacts" in body:
        assert sorted(str(link.uri) for link in links) == sorted(body["artifacts"]), (
            "resource_link items do not match the result's artifacts"
        )
    if "run_id" in body:
        assert re.fullmatch(r"[0-9a-f]{32}", body["run_id"]), body["run_id"]
    return body


@asynccontextmanager
async def connect(
    tmp_path: Path,
    era: str = "legacy",
    *,
    unsafe_local: bool = False,
    cwd: Path | None = None,
    args: list[str] | None = None,
    profiles: Path | None = None,
    timeout: float = TEST_TIMEOUT,
    env: dict[str, str] | None = None,
    elicitation: Any = None,
) -> AsyncIterator[Conn]:
    """Spawns the server, connects in `era`, yields a Conn; the server is always closed on exit.
    `elicitation`: the client's elicitation callback (the client then declares elicitation)."""
    assert INFRA_BIN.is_file(), f"no server binary at {INFRA_BIN} (build it, or set INFRA_BIN)"
    profiles = profiles or tmp_path / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    extra_env = env
    env = {"MCP_PROFILES_DIR": str(profiles), "NO_COLOR": "1"}
    if unsafe_local:
        env["INFRA_UNSAFE_LOCAL"] = "1"
    env.update(extra_env or {})
    params = StdioServerParameters(command=str(INFRA_BIN), args=args or [], env=env, cwd=str(cwd or tmp_path))
    stderr_path = tmp_path / f"server-stderr-{time.monotonic_ns()}.log"
    try:
        # the SDK's task groups wrap a test's failure in exception groups: surface the one failure itself
        with unwrap_single():
            async with _session(params, era, profiles, stderr_path, timeout, elicitation) as conn:
                yield conn
    finally:
        stderr = stderr_path.read_text() if stderr_path.exists() else ""
        if stderr.strip():
            print(f"--- server stderr ({era}) ---\n{stderr}")
    assert not live_infra_children(), "a spawned server outlived its client"


@contextmanager
def unwrap_single() -> Iterator[None]:
    try:
        yield
    except BaseExceptionGroup as group:
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        if leaf is group:
            raise
        raise leaf from None


@asynccontextmanager
async def _session(
    params: StdioServerParameters,
    era: str,
    profiles: Path,
    stderr_path: Path,
    timeout: float,
    elicitation: Any = None,
) -> AsyncIterator[Conn]:
    with anyio.fail_after(timeout), stderr_path.open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            # tap the client's writes so tests can assert what went on the wire
            tap_send, tap_recv = anyio.create_memory_object_stream[SessionMessage](0)
            sent: list[dict[str, Any]] = []

            async def pump() -> None:
                async with tap_recv:
                    async for msg in tap_recv:
                        sent.append(msg.message.model_dump(by_alias=True, mode="json", exclude_unset=True))
                        await write.send(msg)

            async with anyio.create_task_group() as tg:
                tg.start_soon(pump)
                async with ClientSession(
                    read, tap_send, read_timeout_seconds=CALL_TIMEOUT, elicitation_callback=elicitation
                ) as session:
                    conn = Conn(session=session, era=era, profiles=profiles, sent=sent)
                    if era == "legacy":
                        conn.init = await session.initialize()
                    else:
                        conn.discover = await session.discover()
                    yield conn
                tg.cancel_scope.cancel()


# --- handshake, discovery and listing ------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("argv", [[], ["mcp"]], ids=["no-args", "mcp-subcommand"])
async def test_legacy_initialize_and_ping(tmp_path: Path, argv: list[str]) -> None:
    async with connect(tmp_path, "legacy", args=argv) as c:
        init = c.init
        assert init is not None
        assert init.server_info.name == "infra"
        assert init.server_info.version == cargo_version()
        assert init.protocol_version == "2025-11-25"
        assert init.capabilities.tools is not None
        assert init.capabilities.resources is not None
        assert c.session.protocol_version == "2025-11-25"
        pong = await c.session.send_ping()
        assert isinstance(pong, types.EmptyResult)
        # the server keeps serving after a ping
        assert (await c.ok("state", {"action": "get", "key": "nothing"}))["result"]["found"] is False
        methods = [m["method"] for m in c.sent if "method" in m]
        assert methods[:3] == ["initialize", "notifications/initialized", "ping"]


@pytest.mark.anyio
@pytest.mark.parametrize("version", HANDSHAKE_PROTOCOL_VERSIONS)
async def test_initialize_each_handshake_version(tmp_path: Path, version: str) -> None:
    """Every handshake-era revision the SDK knows is accepted and echoed (SDK's typed `initialize`)."""
    params = StdioServerParameters(
        command=str(INFRA_BIN), env={"MCP_PROFILES_DIR": str(tmp_path / "profiles")}, cwd=str(tmp_path)
    )
    with anyio.fail_after(TEST_TIMEOUT), (tmp_path / "stderr.log").open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=CALL_TIMEOUT) as s:
                result = await s.send_request(
                    types.InitializeRequest(
                        params=types.InitializeRequestParams(
                            protocol_version=version,
                            capabilities=types.ClientCapabilities(),
                            client_info=types.Implementation(name="e2e", version="1"),
                        )
                    ),
                    types.InitializeResult,
                )
                assert result.protocol_version == version
                assert result.server_info.name == "infra"
                s.adopt(result)
                await s.send_notification(types.InitializedNotification())
                tools = await s.list_tools()
                assert [t.name for t in tools.tools][:2] == ["help", "runbook"]
    assert not live_infra_children()


@pytest.mark.anyio
async def test_modern_discover(tmp_path: Path) -> None:
    async with connect(tmp_path, MODERN) as c:
        d = c.discover
        assert d is not None
        assert c.session.protocol_version == MODERN
        assert MODERN in d.supported_versions
        for v in HANDSHAKE_PROTOCOL_VERSIONS:
            assert v in d.supported_versions, f"{v} not served"
        assert c.session.server_info is not None and c.session.server_info.name == "infra"
        assert c.session.server_info.version == cargo_version()
        assert d.capabilities.tools is not None and d.capabilities.resources is not None
        await c.ok("state", {"action": "get", "key": "nothing"})
        methods = [m.get("method") for m in c.sent]
        assert methods[0] == "server/discover"
        assert "initialize" not in methods and "notifications/initialized" not in methods
        call = next(m for m in c.sent if m.get("method") == "tools/call")
        assert call["params"]["_meta"][PROTOCOL_VERSION_META_KEY] == MODERN


def assert_tool_listing(tools: list[types.Tool], unsafe_local: bool) -> None:
    names = [t.name for t in tools]
    assert len(names) == len(set(names)), names
    unknown = [n for n in names if n not in SPEC_ORDER]
    assert not unknown, f"tools not in surface.md: {unknown}"
    assert names == sorted(names, key=SPEC_ORDER.index), f"not in the fixed order: {names}"
    missing = [n for n in REQUIRED_TOOLS if n not in names]
    assert not missing, f"missing tools: {missing}"
    assert not any(n.startswith("mcp_") or n in ("sql", "api", "job") for n in names), "aliases are listed"
    if unsafe_local:
        assert names[-1] == "local"
    else:
        assert "local" not in names

    expected_actions = {
        "runbook": {"list", "get", "run", "plan", "validate", "graph", "upsert", "delete"},
        "repo": {"snapshot", "status", "log", "diff"},
        "state": {"set", "get", "list", "unset"},
        "artifacts": {"list", "get", "head", "tail"},
        "audit": {"tail", "verify"},
        "evidence": {"list", "get"},
        "context": {"get"},
        "local": {"exec", "read", "write", "list", "stat"},
    }
    read_only = {"help", "artifacts", "audit", "context"}
    writes = {"runbook", "state", "local"}
    for t in tools:
        assert t.title, f"{t.name}: no title"
        assert t.description and len(t.description) > 20, f"{t.name}: no description"
        a = t.annotations
        assert a is not None, f"{t.name}: no annotations"
        for hint in ("read_only_hint", "destructive_hint", "idempotent_hint", "open_world_hint"):
            assert isinstance(getattr(a, hint), bool), f"{t.name}: {hint} not set"
        if t.name in read_only:
            assert a.read_only_hint is True and a.destructive_hint is False, t.name
        if t.name in writes:
            assert a.read_only_hint is False, t.name
        if a.read_only_hint:
            assert a.destructive_hint is False, f"{t.name}: read-only and destructive"

        schema = t.input_schema
        assert schema["type"] == "object", t.name
        for combinator in ("oneOf", "anyOf", "allOf"):
            assert combinator not in schema, f"{t.name}: top-level {combinator}"
        props = schema["properties"]
        assert isinstance(props, dict)
        if t.name in expected_actions:
            action = props["action"]
            assert action["type"] == "string"
            assert expected_actions[t.name] <= set(action["enum"]), (t.name, action["enum"])
            assert "action" in schema.get("required", []), t.name
        if t.name == "help":
            assert "query" in props

        out = t.output_schema
        assert out is not None and out["type"] == "object", t.name
        for key in ("ok", "effects", "summary", "result", "run_id", "artifacts", "error"):
            assert key in out["properties"], f"{t.name}: outputSchema lacks {key}"
        assert {"ok", "summary"} <= set(out.get("required", [])), t.name


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("unsafe_local", [False, True], ids=["default", "unsafe-local"])
async def test_tools_list(tmp_path: Path, era: str, unsafe_local: bool) -> None:
    async with connect(tmp_path, era, unsafe_local=unsafe_local) as c:
        listing = await c.session.list_tools()
        assert listing.next_cursor is None
        assert_tool_listing(listing.tools, unsafe_local)
        size = len(listing.model_dump_json(by_alias=True, exclude_none=True))
        assert size < 20 * 1024, f"tools/list is {size} bytes (budget 20 KiB)"
        # the same listing twice: the order is fixed
        again = await c.session.list_tools()
        assert [t.name for t in again.tools] == [t.name for t in listing.tools]
        # and a call in this era
        body = await c.ok("help", {"tool": "state", "action": "set"})
        assert body["result"]["tool"] == "state" and body["result"]["action"] == "set"
        assert body["result"]["example"]["tool"] == "state"


# --- the examples of surface.md that need no remote server ---------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_help_finds_deploy_runbook(tmp_path: Path, era: str) -> None:
    profiles = tmp_path / "profiles"
    (profiles / "runbooks").mkdir(parents=True)
    (profiles / "runbooks" / "deploy.staging.yaml").write_text(DEPLOY_STAGING)
    async with connect(tmp_path, era) as c:
        body = await c.ok("help", {"query": "deploy runbook"})
        assert body["effects"] == "read"
        runbooks = {r["name"]: r for r in body["result"]["runbooks"]}
        assert "deploy.staging" in runbooks, body["result"]["runbooks"]
        assert runbooks["deploy.staging"]["source"] == "project"
        assert runbooks["deploy.staging"]["tags"] == ["deploy", "staging"]
        assert any(t["tool"] == "runbook" for t in body["result"]["tools"])


@pytest.mark.anyio
async def test_a_broken_project_runbook_is_listed_with_its_errors(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    (profiles / "runbooks").mkdir(parents=True)
    (profiles / "runbooks" / "broken.yaml").write_text("description: typo below\nstpes: []\n")
    async with connect(tmp_path) as c:
        listed = await c.ok("runbook", {"action": "list", "limit": 100})
        item = next(r for r in listed["result"]["runbooks"] if r["name"] == "broken")
        assert item["broken"] is True and item["file"].endswith("broken.yaml"), item
        codes = {d["code"] for d in item["diagnostics"]}
        assert "unknown-key" in codes, item
        assert all(d.get("line") for d in item["diagnostics"]), item
        # get, validate and run by name name the error and where it is, not "there is no runbook"
        for action in ["get", "validate", "run"]:
            res, body = await c.call("runbook", {"action": action, "name": "broken"})
            assert res.is_error is True, body
            assert "broken.yaml" in body["error"]["message"], body
            assert "there is no runbook" not in body["error"]["message"], body
            assert any(d["code"] == "unknown-key" and d.get("line") == 2 for d in body["error"]["diagnostics"]), body


@pytest.mark.anyio
async def test_runbook_list_query_and_limit(tmp_path: Path) -> None:
    async with connect(tmp_path) as c:
        body = await c.ok("runbook", {"action": "list", "query": "repo", "limit": 5})
        items = body["result"]["runbooks"]
        assert 1 <= len(items) <= 5
        snap = next(r for r in items if r["name"] == "repo.snapshot")
        assert snap["effects"] == "read"
        assert snap["source"] == "builtin"
        assert re.fullmatch(r"[0-9a-f]{64}", snap["digest"])
        assert all(
            "repo" in (r["name"] + " " + (r["description"] or "") + " " + " ".join(r["tags"])).lower() for r in items
        )
        assert "hello.world" not in [r["name"] for r in items]
        # the limit cuts the list, the total does not
        one = await c.ok("runbook", {"action": "list", "limit": 1})
        assert len(one["result"]["runbooks"]) == 1
        assert one["result"]["total"] >= 2  # at least the built-in hello.world and repo.snapshot


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_runbook_run_repo_snapshot(tmp_path: Path, era: str) -> None:
    repo = make_git_repo(tmp_path / "work-repo")
    async with connect(tmp_path, era, cwd=repo) as c:  # no opt-in flag
        body = await c.ok("runbook", {"action": "run", "name": "repo.snapshot", "input": {"repo_path": "."}})
        assert body["effects"] == "read"
        result = body["result"]
        assert result["status"] == "succeeded"
        out = result["outputs"]
        assert Path(out["root"]).resolve() == repo
        assert out["branch"] == "main"
        assert out["status"] == []  # clean
        assert [cm["summary"] for cm in out["commits"]] == ["initial commit"]
        assert out["commits"][0]["author"] == "E2E Tester"
        assert out["diffstat"]["files_changed"] == 0
        assert [s["id"] for s in result["steps"]] == ["status", "diffstat", "commits"]
        assert all(s["status"] == "succeeded" for s in result["steps"])
        assert result["evidence"].startswith("artifact://runs/repo.snapshot/")
        # the run is recorded as evidence
        ev = await c.ok("evidence", {"action": "get", "run_id": body["run_id"]})
        assert ev["result"]["state"] == "finished"


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_runbook_run_deploy_staging(tmp_path: Path, era: str) -> None:
    profiles = tmp_path / "profiles"
    (profiles / "runbooks").mkdir(parents=True)
    (profiles / "runbooks" / "deploy.staging.yaml").write_text(DEPLOY_STAGING)
    async with connect(tmp_path, era) as c:
        # `plan` renders and runs nothing
        plan = await c.ok("runbook", {"action": "plan", "name": "deploy.staging", "input": {"service": "api"}})
        assert plan["result"]["effects"] == "write"
        assert (await c.ok("state", {"action": "get", "key": "last_deploy"}))["result"]["found"] is False
        body = await c.ok("runbook", {"action": "run", "name": "deploy.staging", "input": {"service": "api"}})
        assert body["effects"] == "write"
        assert body["result"]["status"] == "succeeded"
        assert body["result"]["outputs"] == {"service": "api"}
        assert body["result"]["evidence"].startswith("artifact://runs/deploy.staging/")
        got = await c.ok("state", {"action": "get", "key": "last_deploy"})
        assert got["result"]["found"] is True and got["result"]["value"] == "api"
        # a missing required input is refused with its path
        bad = await c.err("runbook", {"action": "run", "name": "deploy.staging", "input": {}}, "invalid_input")
        assert bad["error"]["path"] == "/input/service"


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_state_set_get_list_unset(tmp_path: Path, era: str) -> None:
    value = {"replicas": 3, "tags": ["a", "b"], "note": "ünïcode"}
    async with connect(tmp_path, era) as c:
        # the original's defaults: `set` persists, `get` looks at the session, then the store
        s = await c.ok("state", {"action": "set", "key": "cfg", "value": value})
        assert s["effects"] == "write"
        assert s["result"]["scope"] == "persistent"
        got = await c.ok("state", {"action": "get", "key": "cfg"})
        assert got["effects"] == "read"
        assert got["result"]["found"] is True and got["result"]["value"] == value
        assert got["result"]["scope"] == "persistent"
        await c.ok("state", {"action": "set", "key": "cfg", "value": "mine", "scope": "session"})
        mine = await c.ok("state", {"action": "get", "key": "cfg"})
        assert mine["result"]["value"] == "mine" and mine["result"]["scope"] == "session"
        await c.ok("state", {"action": "unset", "key": "cfg", "scope": "session"})
        listed = await c.ok("state", {"action": "list"})
        assert listed["result"]["items"] == {"cfg": value}
        await c.ok("state", {"action": "set", "key": "kept", "value": 42, "scope": "persistent"})
        await c.ok("state", {"action": "unset", "key": "cfg"})
        assert (await c.ok("state", {"action": "get", "key": "cfg"}))["result"]["found"] is False
        # the original name is an alias, and says so
        alias = await c.ok("mcp_state", {"action": "get", "key": "kept", "scope": "persistent"})
        assert alias["result"]["value"] == 42
        assert {"from": "mcp_state", "to": "state", "kind": "tool"} in alias["normalized"]
    # persistent state outlives the process; session state does not
    async with connect(tmp_path, era) as c:
        kept = await c.ok("state", {"action": "get", "key": "kept", "scope": "persistent"})
        assert kept["result"]["found"] is True and kept["result"]["value"] == 42
        assert (await c.ok("state", {"action": "get", "key": "cfg"}))["result"]["found"] is False


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_artifacts_list_get_tail(tmp_path: Path, era: str) -> None:
    expected = "".join(f"{i}\n" for i in range(1, 2001))  # 8893 bytes
    async with connect(tmp_path, era, unsafe_local=True) as c:
        res, body = await c.call("local", {"action": "exec", "command": "seq 1 2000"})
        assert not res.is_error, body
        assert body["result"]["exit_code"] == 0
        assert body["result"]["stdout"] == expected
        uri = body["result"]["stdout_uri"]
        assert uri in body["artifacts"]
        assert re.fullmatch(r"artifact://runs/local\.exec/\d{4}-\d\d-\d\dT\d{6}Z-[0-9a-f]{8}/call/stdout", uri), uri

        listed = await c.ok("mcp_artifacts", {"action": "list", "limit": 10})
        assert listed["normalized"] == [{"from": "mcp_artifacts", "to": "artifacts", "kind": "tool"}]
        entries = {a["uri"]: a for a in listed["result"]["artifacts"]}
        assert 1 <= len(entries) <= 10
        assert entries[uri]["bytes"] == len(expected)

        got = await c.ok("mcp_artifacts", {"action": "get", "uri": uri, "max_bytes": 4096})
        r = got["result"]
        assert r["text"] == expected[:4096]
        assert (r["offset"], r["bytes"], r["total_bytes"]) == (0, 4096, len(expected))
        assert r["truncated"] is True and r["next_offset"] == 4096

        tail = await c.ok("mcp_artifacts", {"action": "tail", "uri": uri, "max_bytes": 1024})
        r = tail["result"]
        assert r["text"] == expected[-1024:]
        assert r["offset"] == len(expected) - 1024 and r["bytes"] == 1024

        head = await c.ok("artifacts", {"action": "head", "uri": uri, "max_bytes": 10})
        assert head["result"]["text"] == expected[:10]
        middle = await c.ok("artifacts", {"action": "get", "uri": uri, "offset": 4096, "max_bytes": 100})
        assert middle["result"]["text"] == expected[4096:4196]

        # a second artifact, then the list limit
        await c.ok("local", {"action": "exec", "command": "echo second"})
        assert len((await c.ok("artifacts", {"action": "list", "limit": 1}))["result"]["artifacts"]) == 1
        missing = await c.err("artifacts", {"action": "get", "uri": "artifact://runs/none/x/y/z"}, "not_found")
        assert missing["error"]["path"] == "/uri"


# --- failures -------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_unknown_action_unknown_tool(tmp_path: Path, era: str) -> None:
    async with connect(tmp_path, era) as c:
        e = await c.err("runbook", {"action": "launch"}, "unknown_action")
        assert e["error"]["path"] == "/action"
        e = await c.err("state", {"action": "frob", "key": "x"}, "unknown_action")
        assert e["error"]["path"] == "/action"
        assert "set" in e["error"]["hint"] and "get" in e["error"]["hint"]
        e = await c.err("no_such_tool", {"action": "x"}, "unknown_tool")
        assert "no_such_tool" in e["error"]["message"]
        # still serving, and the refused calls are audited
        audit = await c.ok("audit", {"action": "tail", "limit": 10})
        rejected = [r for r in audit["result"]["records"] if r.get("kind") == "rejected"]
        assert [(r["tool"], r["error"]["kind"]) for r in rejected] == [
            ("runbook", "unknown_action"),
            ("state", "unknown_action"),
            ("no_such_tool", "unknown_tool"),
        ]
        verify = await c.ok("audit", {"action": "verify"})
        assert verify["result"]["intact"] is True


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_invalid_args_with_path(tmp_path: Path, era: str) -> None:
    async with connect(tmp_path, era) as c:
        e = await c.err("state", {"action": "set", "key": 5, "value": "v"}, "invalid_args")
        assert e["error"]["path"] == "/key"
        assert "string" in e["error"]["message"]
        e = await c.err("state", {"action": "get"}, "invalid_args")  # missing required
        assert e["error"]["path"] == "/key"
        e = await c.err("repo", {"action": "log", "repo_path": ".", "limit": "ten"}, "invalid_args")
        assert e["error"]["path"] == "/limit"
        e = await c.err("runbook", {"action": "run", "name": "repo.snapshot", "input": {"limit": "x"}}, "invalid_input")
        assert e["error"]["path"] == "/input/limit"
        # nothing was stored by the refused set
        assert (await c.ok("state", {"action": "list"}))["result"]["items"] == {}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("tool", "args", "path"),
    [
        ("runbook", {"action": "list", "limit": "five"}, "/limit"),
        ("artifacts", {"action": "list", "limit": "x"}, "/limit"),
        ("audit", {"action": "tail", "limit": "x"}, "/limit"),
    ],
    ids=["runbook-list", "artifacts-list", "audit-tail"],
)
async def test_invalid_args_front_end_tools(tmp_path: Path, tool: str, args: dict[str, Any], path: str) -> None:
    async with connect(tmp_path) as c:
        e = await c.err(tool, args, "invalid_args")
        assert e["error"]["path"] == path


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_local_refused_without_opt_in(tmp_path: Path, era: str) -> None:
    made = tmp_path / "made-by-exec"
    written = tmp_path / "made-by-write"
    async with connect(tmp_path, era) as c:
        for tool, args in [
            ("local", {"action": "exec", "command": f"touch {made}"}),
            ("mcp_local", {"action": "exec", "command": "touch", "args": [str(made)]}),
            ("local", {"action": "write", "path": str(written), "content": "x"}),
        ]:
            e = await c.err(tool, args, "refused")
            assert "INFRA_UNSAFE_LOCAL=1" in e["error"]["message"] + e["error"].get("hint", "")
            assert e.get("artifacts", []) == []
        audit = await c.ok("audit", {"action": "tail", "limit": 50})
        refused = [r for r in audit["result"]["records"] if (r.get("error") or {}).get("kind") == "refused"]
        assert len(refused) >= 3, audit["result"]["records"]
    await anyio.sleep(0.2)
    assert not made.exists() and not written.exists(), "a refused call had an effect"


# --- long calls, cancellation ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_cancelled_call_kills_the_process(tmp_path: Path, era: str) -> None:
    pidfile = tmp_path / "sleep.pid"
    try:
        await _cancel_long_call(tmp_path, era, pidfile)
    finally:
        kill_leftover_sleep(pidfile)


def kill_leftover_sleep(pidfile: Path) -> None:
    """A failed test must not leave `sleep 1000` behind."""
    try:
        pid = int(pidfile.read_text())
        if proc_state(pid) not in (None, "Z") and b"sleep" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


async def _cancel_long_call(tmp_path: Path, era: str, pidfile: Path) -> None:
    async with connect(tmp_path, era, unsafe_local=True) as c:
        outcome: list[str] = []

        async def long_call() -> None:
            try:
                await c.session.call_tool(
                    "local", {"action": "exec", "command": f"echo $$ > {pidfile}; exec sleep 1000"}
                )
                outcome.append("returned")
            except anyio.get_cancelled_exc_class():
                outcome.append("cancelled")
                raise

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_call)
            with anyio.fail_after(15):
                while not (pidfile.exists() and pidfile.read_text().strip()):
                    await anyio.sleep(0.05)
            pid = int(pidfile.read_text())
            assert proc_state(pid) not in (None, "Z"), "the sleep is not running"
            # the SDK's way to cancel a request: cancel the scope the call runs in; its dispatcher then
            # writes `notifications/cancelled` for the request (mcp/shared/jsonrpc_dispatcher.py)
            tg.cancel_scope.cancel()
        assert outcome == ["cancelled"]

        deadline = time.monotonic() + 5
        while proc_state(pid) not in (None, "Z") and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        assert proc_state(pid) in (None, "Z"), f"the cancelled command (pid {pid}) still runs"

        # the server is still up, and the run is recorded as cancelled
        assert (await c.ok("state", {"action": "get", "key": "x"}))["result"]["found"] is False
        # the SDK told the server: one `notifications/cancelled` naming the call (it went out before the
        # `state get` above, so the tap has seen it)
        call = next(m for m in c.sent if m.get("method") == "tools/call")
        cancels = [m for m in c.sent if m.get("method") == "notifications/cancelled"]
        assert [m["params"]["requestId"] for m in cancels] == [call["id"]]
        status = None
        while time.monotonic() < deadline + 5:
            audit = await c.ok("audit", {"action": "tail", "limit": 50})
            finished = [
                r for r in audit["result"]["records"]
                if r.get("kind") == "run_finished" and r.get("status") == "cancelled"
            ]  # fmt: skip
            if finished:
                status = "cancelled"
                break
            await anyio.sleep(0.1)
        assert status == "cancelled", "no cancelled run in the audit"


# --- artifacts as resources -----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_artifact_read_as_resource(tmp_path: Path, era: str) -> None:
    async with connect(tmp_path, era, unsafe_local=True) as c:
        res, body = await c.call("local", {"action": "exec", "command": "printf 'alpha\\nbeta\\n'; echo oops >&2"})
        assert not res.is_error, body
        links = [x for x in res.content if x.type == "resource_link"]
        stdout_links = [x for x in links if str(x.uri).endswith("/stdout")]
        assert len(stdout_links) == 1, links
        uri = str(stdout_links[0].uri)
        assert stdout_links[0].name

        read = await c.session.read_resource(uri)
        assert len(read.contents) == 1
        content = read.contents[0]
        assert str(content.uri) == uri
        assert isinstance(content, types.TextResourceContents)
        assert content.text == "alpha\nbeta\n"

        listed = await c.session.list_resources()
        assert uri in [str(r.uri) for r in listed.resources]
        templates = await c.session.list_resource_templates()
        assert any(t.uri_template.startswith("artifact://") for t in templates.resource_templates)

        with pytest.raises(MCPError) as missing:
            await c.session.read_resource("artifact://runs/none/x/y/z")
        # resource not found: -32002 before 2026-07-28, which retired it for -32602 (invalid params)
        assert missing.value.error.code == (-32002 if era == "legacy" else -32602)


@pytest.mark.anyio
async def test_a_runs_evidence_reads_where_it_is_named(tmp_path: Path) -> None:
    async with connect(tmp_path, "modern") as c:
        body = await c.ok("runbook", {"action": "run", "name": "hello.world", "input": {"message": "hi"}})
        evidence = body["result"]["evidence"]
        run_id = body["run_id"]
        assert re.fullmatch(r"artifact://runs/hello\.world/\d{4}-\d\d-\d\dT\d{6}Z-[0-9a-f]{8}", evidence), evidence

        # the run's URI lists what it holds, as a resource and through the tool
        read = await c.session.read_resource(evidence)
        listing = json.loads(read.contents[0].text)
        assert listing["run_id"] == run_id and listing["status"] == "succeeded"
        assert listing["journal"] == evidence + "/journal.jsonl"
        got = await c.ok("artifacts", {"action": "get", "uri": evidence, "max_bytes": 65536})
        assert json.loads(got["result"]["text"]) == listing

        # its journal is an artifact: its records, one per line
        journal = await c.session.read_resource(listing["journal"])
        records = [json.loads(line) for line in journal.contents[0].text.splitlines()]
        assert records[0]["event"] == "run_started" and records[-1]["event"] == "run_finished"
        assert {r["run_id"] for r in records} == {run_id}

        # a single call's journal reads the same way, though it has no directory of its own
        state = await c.ok("state", {"action": "get", "key": "hello"})
        call = await c.ok("artifacts", {"action": "list", "run": state["run_id"]})
        [entry] = call["result"]["artifacts"]
        assert entry["uri"].endswith("/journal.jsonl") and entry["runbook"] == "state.get"
        lines = (await c.session.read_resource(entry["uri"])).contents[0].text.splitlines()
        assert [json.loads(line)["event"] for line in lines] == [
            "run_started", "node_started", "node_finished", "run_finished"]

        # the list filters by runbook
        listed = await c.ok("artifacts", {"action": "list", "runbook": "hello.world"})
        uris = [a["uri"] for a in listed["result"]["artifacts"]]
        assert uris and uris[0] == listing["journal"], uris
        assert all(u.startswith(evidence) for u in uris)


@pytest.mark.anyio
async def test_large_result_is_cut_with_a_link(tmp_path: Path) -> None:
    expected = "".join(f"{i}\n" for i in range(1, 20001))  # 108894 bytes
    async with connect(tmp_path, "legacy", unsafe_local=True) as c:
        res, body = await c.call("local", {"action": "exec", "command": "seq 1 20000"})
        assert not res.is_error, body
        assert body["truncated"] is True
        full_uri = body["result_uri"]
        assert full_uri in body["artifacts"] and full_uri.endswith("/result.json")
        assert body["result_bytes"] > 16 * 1024
        # cut in place: the small fields are whole, the long output is shortened
        assert body["result"]["exit_code"] == 0
        assert body["result"]["stdout"].startswith("1\n2\n3\n")
        assert "more bytes cut" in body["result"]["stdout"]
        assert body["result"]["stdout_uri"].endswith("/stdout")
        full = await c.session.read_resource(full_uri)
        assert json.loads(full.contents[0].text)["stdout"] == expected


@pytest.mark.anyio
async def test_result_text_within_budget(tmp_path: Path) -> None:
    async with connect(tmp_path, "legacy", unsafe_local=True) as c:
        res, body = await c.call("local", {"action": "exec", "command": "seq 1 20000"})
        assert body["truncated"] is True
        text = next(x.text for x in res.content if x.type == "text")
        assert len(text.encode()) <= 16 * 1024, f"{len(text.encode())} bytes"


@pytest.mark.anyio
async def test_client_close_mid_call_leaves_no_process(tmp_path: Path) -> None:
    """A client that goes away (stdin closed, no `notifications/cancelled`) while a call runs."""
    pidfile = tmp_path / "sleep.pid"
    try:
        errors: list[BaseException] = []

        async def long_call(c: Conn) -> None:
            try:
                await c.session.call_tool(
                    "local", {"action": "exec", "command": f"echo $$ > {pidfile}; exec sleep 1000"}
                )
            except MCPError as e:  # the connection closed under the call
                errors.append(e)

        async with anyio.create_task_group() as outer, connect(tmp_path, "legacy", unsafe_local=True) as c:
            outer.start_soon(long_call, c)
            with anyio.fail_after(15):
                while not (pidfile.exists() and pidfile.read_text().strip()):
                    await anyio.sleep(0.05)
            # leaving `connect` closed the session and stdin, then stopped the server the SDK's way
        assert len(errors) == 1
        assert not any(m.get("method") == "notifications/cancelled" for m in c.sent)
        pid = int(pidfile.read_text())
        deadline = time.monotonic() + 5
        while proc_state(pid) not in (None, "Z") and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        assert proc_state(pid) in (None, "Z"), f"the call's process (pid {pid}) outlived the server"
    finally:
        kill_leftover_sleep(pidfile)


@contextmanager
def http_server() -> Iterator[str]:
    """A loopback HTTP server in a thread: `/health` (JSON) and `/big` (100,000 bytes); yields its base URL."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            if self.path == "/health":
                body, ctype = b'{"status": "up", "checks": [1, 2]}', "application/json"
            elif self.path == "/big":
                body, ctype = bytes(i % 251 for i in range(100_000)), "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_http_request_and_the_egress_guard(tmp_path: Path, era: str) -> None:
    with http_server() as base:
        async with connect(tmp_path, era) as c:
            # the original's example, against a local server
            got = await c.ok("http", {"action": "request", "method": "GET", "url": f"{base}/health"})
            assert got["effects"] == "read"
            assert got["result"]["status"] == 200
            assert got["result"]["json"] == {"status": "up", "checks": [1, 2]}
            # a large body is in an artifact, linked and readable as a resource
            res, big = await c.call("http", {"action": "request", "url": f"{base}/big"})
            assert not res.is_error, big
            assert big["result"]["body_bytes"] == 100_000
            uri = big["result"]["body_uri"]
            assert uri in [str(x.uri) for x in res.content if x.type == "resource_link"]
            read = await c.session.read_resource(uri)
            assert str(read.contents[0].uri) == uri
            # cloud metadata is refused before anything is sent
            await c.err("http", {"action": "request", "url": "http://169.254.169.254/latest/meta-data/"}, "refused")
            await c.err("api", {"action": "check", "url": f"{base}/nope"}, "check_failed")


@pytest.mark.anyio
async def test_front_end_reads_are_cut_to_the_budget(tmp_path: Path) -> None:
    async with connect(tmp_path, "legacy", unsafe_local=True) as c:
        # a run with a large argument makes a large journal; `evidence get` returns it cut in place
        run = await c.ok("local", {"action": "exec", "command": "true", "env": {"BIG": "z" * 40_000}})
        res, body = await c.call("evidence", {"action": "get", "run_id": run["run_id"]})
        assert not res.is_error, body
        assert body["truncated"] is True and body["result_bytes"] > 16 * 1024
        assert len(json.dumps(body["result"])) < 16 * 1024
