"""The original product's names and per-call options, strict arguments, annotations, roots and logging,
through the official MCP Python SDK (the helpers are `test_mcp`'s)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from test_mcp import CALL_TIMEOUT, INFRA_BIN, TEST_TIMEOUT, check_envelope, connect, make_git_repo

# --- item 4: no argument is silently ignored ---------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "tool,args,key,suggested",
    [
        ("help", {"query": "x", "limt": 2}, "limt", "limit"),
        ("artifacts", {"action": "list", "include_secret": True}, "include_secret", "include_secrets"),
        ("jobs", {"action": "list", "limits": 2}, "limits", "limit"),
        ("audit", {"action": "tail", "stauts": "error"}, "stauts", "status"),
        ("evidence", {"action": "list", "run": "x"}, "run", None),
        ("context", {"action": "get", "paths": "."}, "paths", "path"),
        ("runbook", {"action": "list", "tagz": ["a"]}, "tagz", "tags"),
    ],
)
async def test_front_end_tools_refuse_unknown_keys(
    tmp_path: Path, tool: str, args: dict[str, Any], key: str, suggested: str | None
) -> None:
    async with connect(tmp_path) as c:
        body = await c.err(tool, args, "invalid_args")
        err = body["error"]
        assert err["path"] == f"/{key}"
        assert f"`{key}`" in err["message"]
        assert f"`{tool}` takes:" in err["hint"], err
        if suggested:
            assert f"did you mean `{suggested}`?" in err["hint"], err
        # the refusal is audited too
        tail = await c.ok("audit", {"action": "tail", "limit": 1, "status": "rejected"})
        assert tail["result"]["records"][-1]["tool"] == tool


@pytest.mark.anyio
async def test_audit_filters_and_paging(tmp_path: Path) -> None:
    async with connect(tmp_path) as c:
        await c.ok("state", {"action": "set", "key": "a", "value": 1})
        await c.err("state", {"action": "sett", "key": "a"}, "unknown_action")
        await c.ok("help", {"query": "ssh"})
        errors = await c.ok("audit", {"action": "tail", "status": "error"})
        records = errors["result"]["records"]
        assert records and all(r.get("ok") is False or r["kind"] in ("refused", "rejected") or
                               r.get("status", "succeeded") != "succeeded" for r in records), records
        only_state = await c.ok("audit", {"action": "list", "tool": "mcp_state", "limit": 100})
        assert only_state["result"]["records"] and all(r["tool"] == "state" for r in only_state["result"]["records"])
        everything = await c.ok("audit", {"action": "list", "limit": 100})
        total = everything["result"]["total"]
        assert total == len(everything["result"]["records"]) >= 4
        page = await c.ok("audit", {"action": "list", "limit": 2, "offset": 1})
        assert [r["seq"] for r in page["result"]["records"]] == [r["seq"] for r in everything["result"]["records"][1:3]]
        newest = await c.ok("audit", {"action": "list", "limit": 2, "reverse": True})
        seqs = [r["seq"] for r in newest["result"]["records"]]
        # the newest first (the audit calls in between added records of their own)
        assert seqs == [seqs[0], seqs[0] - 1] and seqs[0] > everything["result"]["records"][-1]["seq"]
        future = await c.ok("audit", {"action": "tail", "since": "2999-01-01T00:00:00Z"})
        assert future["result"]["records"] == [] and future["result"]["total"] == 0
        bad = await c.err("audit", {"action": "tail", "since": "yesterday"}, "invalid_args")
        assert bad["error"]["path"] == "/since"


@pytest.mark.anyio
async def test_help_q_and_limit(tmp_path: Path) -> None:
    async with connect(tmp_path) as c:
        body = await c.ok("help", {"q": "repo", "limit": 1})
        assert body["normalized"] == [{"from": "q", "to": "query", "kind": "argument"}]
        assert len(body["result"]["runbooks"]) == 1 and len(body["result"]["actions"]) == 1
        more = await c.ok("help", {"query": "repo"})
        assert len(more["result"]["actions"]) > 1
        # `timeout_ms`, which every call takes, is accepted and reported as ignored where nothing waits
        timed = await c.ok("audit", {"action": "tail", "timeout_ms": 1000})
        assert timed["normalized"][0]["kind"] == "ignored" and timed["normalized"][0]["from"] == "timeout_ms"


CANARY = "Sekret-Canary-7f6e5d4c"


async def _artifact_with_a_later_secret(c: Any) -> str:
    """An artifact holding CANARY, written before CANARY became a known secret (a later run's secret
    input), so only the read masks it."""
    body = await c.ok("local", {"action": "exec", "command": f"echo {CANARY}"})
    uri = body["result"]["stdout_uri"]
    inline = {"name": "with.secret", "inputs": {"token": {"type": "string", "secret": True}},
              "steps": [{"id": "s", "tool": "state", "args": {"action": "get", "key": "nothing"}}]}
    await c.ok("runbook", {"action": "run", "runbook": inline, "input": {"token": CANARY}})
    return uri


@pytest.mark.anyio
async def test_include_secrets_needs_the_switch(tmp_path: Path) -> None:
    async with connect(tmp_path, unsafe_local=True) as c:
        uri = await _artifact_with_a_later_secret(c)
        masked = await c.ok("artifacts", {"action": "get", "uri": uri})
        assert CANARY not in json.dumps(masked)
        body = await c.err("artifacts", {"action": "get", "uri": uri, "include_secrets": True}, "refused")
        assert "INFRA_ALLOW_SECRET_EXPORT=1" in body["error"]["hint"]
        assert body["error"]["path"] == "/include_secrets"
        assert CANARY not in json.dumps(body)
        audit = await c.ok("audit", {"action": "tail", "limit": 1, "tool": "artifacts"})
        rec = audit["result"]["records"][-1]
        assert rec["kind"] == "rejected" and rec["args"]["include_secrets"] is True


@pytest.mark.anyio
async def test_include_secrets_reads_raw_when_allowed(tmp_path: Path) -> None:
    async with connect(tmp_path, unsafe_local=True, env={"INFRA_ALLOW_SECRET_EXPORT": "1"}) as c:
        uri = await _artifact_with_a_later_secret(c)
        masked = await c.ok("artifacts", {"action": "get", "uri": uri})
        assert CANARY not in json.dumps(masked)
        raw = await c.ok("artifacts", {"action": "get", "uri": uri, "include_secrets": True})
        assert CANARY in raw["result"]["text"]
        audit = await c.ok("audit", {"action": "tail", "limit": 1, "tool": "artifacts"})
        rec = audit["result"]["records"][-1]
        assert rec["kind"] == "call" and rec["args"]["include_secrets"] is True


# --- item 5: the original's names, normalized and reported ------------------------------------------


@pytest.mark.anyio
async def test_original_action_and_argument_names(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "repo")
    async with connect(tmp_path) as c:
        body = await c.ok("mcp_runbook", {"action": "runbook_list", "q": "repo", "tag": "git", "limit": 5})
        assert {"from": "mcp_runbook", "to": "runbook", "kind": "tool"} in body["normalized"]
        assert {"from": "runbook_list", "to": "list", "kind": "action"} in body["normalized"]
        assert {"from": "q", "to": "query", "kind": "argument"} in body["normalized"]
        assert {"from": "tag", "to": "tags", "kind": "argument"} in body["normalized"]
        names = [r["name"] for r in body["result"]["runbooks"]]
        assert names[0] == "repo.snapshot", names  # a name match comes first
        info = await c.ok("repo", {"action": "repo_info", "repo_path": str(repo), "timeout_s": 2})
        assert {"from": "repo_info", "to": "snapshot", "kind": "action"} in info["normalized"]
        assert {"from": "timeout_s", "to": "timeout_ms", "kind": "argument", "factor": 1000} in info["normalized"]
        diff = await c.ok("repo", {"action": "git_diff", "repo_path": str(repo), "timeoutMs": 5000})
        assert {"from": "timeoutMs", "to": "timeout_ms", "kind": "argument"} in diff["normalized"]
        jobs = await c.ok("mcp_jobs", {"action": "job_list"})
        assert {"from": "job_list", "to": "list", "kind": "action"} in jobs["normalized"]
        ran = await c.ok("runbook", {"action": "runbook_run", "name": "hello.world", "input": {"message": "x"}})
        assert ran["result"]["status"] == "succeeded"
        # psql's `query` is its `sql`: the call gets past argument checking to the connection
        res, sql = await c.call("psql", {"action": "query", "query": "select 1", "connection": "postgresql://u@127.0.0.1:1/db"})
        assert {"from": "query", "to": "sql", "kind": "argument"} in sql["normalized"], sql
        assert sql["error"]["kind"] != "invalid_args", sql
        # http's `params` is its `query`
        res, http = await c.call("http", {"action": "request", "url": "http://127.0.0.1:1/", "params": {"a": "1"}})
        assert {"from": "params", "to": "query", "kind": "argument"} in http["normalized"], http
        # an alias given with its canonical name is refused, and says which to keep
        both = await c.err("repo", {"action": "log", "repo_path": ".", "timeout": 5, "timeout_ms": 5}, "invalid_args")
        assert both["error"]["path"] == "/timeout" and "give only `timeout_ms`" in both["error"]["hint"]


@pytest.mark.anyio
async def test_original_local_names(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("hello\n")
    async with connect(tmp_path, unsafe_local=True) as c:
        read = await c.ok("mcp_local", {"action": "fs_read", "path": str(tmp_path / "f.txt")})
        assert {"from": "fs_read", "to": "read", "kind": "action"} in read["normalized"]
        ran = await c.ok("local", {"action": "exec", "cmd": "pwd", "workdir": str(tmp_path), "timeout_s": 5})
        notes = ran["normalized"]
        assert {"from": "cmd", "to": "command", "kind": "argument"} in notes
        assert {"from": "workdir", "to": "cwd", "kind": "argument"} in notes
        assert ran["result"]["stdout"].strip() == str(tmp_path.resolve())


# --- item 7: output shaping and store_as ---------------------------------------------------------------


@pytest.mark.anyio
async def test_output_shapes_and_store_as_saves(tmp_path: Path) -> None:
    async with connect(tmp_path) as c:
        await c.ok("state", {"action": "set", "key": "cfg", "value": {"a": {"b": [10, 20]}, "c": 1}})
        got = await c.ok("state", {"action": "get", "key": "cfg", "output": {"path": "value.a.b[1]"}})
        assert got["result"] == 20
        picked = await c.ok("state", {"action": "get", "key": "cfg", "output": {"path": "value", "omit": ["a"]}})
        assert picked["result"] == {"c": 1}
        listed = await c.ok("runbook", {"action": "list", "limit": 100, "output": {"path": "runbooks", "map": {"pick": ["name"]}}})
        assert {"name": "repo.snapshot"} in listed["result"]
        missing = await c.err("state", {"action": "get", "key": "cfg", "output": {"path": "value.zz"}}, "invalid_args")
        assert "`value.zz`" in missing["error"]["message"] and missing["error"]["path"] == "/output"
        dflt = await c.ok("state", {"action": "get", "key": "cfg", "output": {"path": "value.zz", "default": 5}})
        assert dflt["result"] == 5
        empty = await c.ok("state", {"action": "get", "key": "cfg", "output": {"path": "value.zz", "missing": "empty"}})
        assert empty["result"] == {}
        bad = await c.err("help", {"query": "x", "output": {"pik": ["a"]}}, "invalid_args")
        assert bad["error"]["path"] == "/output/pik" and "did you mean `pick`?" in bad["error"]["hint"]
        # store_as: the shaped result goes into state, persistent by default
        stored = await c.ok("help", {"query": "repo", "output": {"path": "runbooks[0].name"}, "store_as": "first_rb"})
        assert stored["stored_as"]["key"] == "first_rb" and stored["stored_as"]["scope"] == "persistent"
        back = await c.ok("state", {"action": "get", "key": "first_rb", "scope": "persistent"})
        assert back["result"]["value"] == "repo.snapshot"
        await c.ok("state", {"action": "get", "key": "cfg", "store_as": {"key": "copy", "scope": "session"}})
        copy = await c.ok("state", {"action": "get", "key": "copy", "scope": "session"})
        assert copy["result"]["value"]["value"] == {"a": {"b": [10, 20]}, "c": 1}
    # persistent: a new server sees it
    async with connect(tmp_path) as c:
        back = await c.ok("state", {"action": "get", "key": "first_rb", "scope": "persistent"})
        assert back["result"]["value"] == "repo.snapshot"


@pytest.mark.anyio
async def test_every_tool_lists_output_and_store_as(tmp_path: Path) -> None:
    async with connect(tmp_path) as c:
        tools = (await c.session.list_tools()).tools
        for t in tools:
            assert "output" in t.input_schema["properties"], t.name
            assert "store_as" in t.input_schema["properties"], t.name
        help_body = await c.ok("help", {"tool": "state", "action": "get"})
        assert "path, pick, omit, map, missing, default" in help_body["result"]["options"]["output"]


# --- item 11: annotations are the worst case --------------------------------------------------------


@pytest.mark.anyio
async def test_annotations_are_the_worst_case(tmp_path: Path) -> None:
    async with connect(tmp_path, unsafe_local=True) as c:
        listing = await c.session.list_tools()
        ann = {t.name: t.annotations for t in listing.tools}
        for name in ("k8s", "ssh", "local", "runbook", "http", "psql", "pipeline", "state", "jobs", "repo", "evidence"):
            a = ann[name]
            assert a.read_only_hint is False and a.destructive_hint is True and a.idempotent_hint is False, name
        for name in ("help", "artifacts", "audit", "context"):
            assert ann[name].read_only_hint is True, name
        assert ann["runbook"].open_world_hint is True
        size = len(listing.model_dump_json(by_alias=True, exclude_none=True))
        print(f"tools/list with local: {size} bytes")
        assert size < 20 * 1024


# --- item 12: roots ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_roots_become_the_working_directory(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "my repo")

    async def roots(_ctx: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=repo.as_uri(), name="repo")])

    params = StdioServerParameters(command=str(INFRA_BIN), env={"HOME": str(tmp_path / "home")}, cwd="/")
    with anyio.fail_after(TEST_TIMEOUT), (tmp_path / "stderr.log").open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=CALL_TIMEOUT, list_roots_callback=roots) as s:
                await s.initialize()
                res = await s.call_tool("runbook", {"action": "run", "name": "repo.snapshot", "input": {"repo_path": "."}})
                body = check_envelope(res)
                assert body["ok"] is True, body
                assert body["result"]["outputs"]["root"].rstrip("/") == str(repo)
                ctx = check_envelope(await s.call_tool("context", {"action": "get"}))
                assert ctx["result"]["path"].rstrip("/") == str(repo)


@pytest.mark.anyio
async def test_a_failed_run_reports_one_error(tmp_path: Path) -> None:
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    async with connect(tmp_path, cwd=outside) as c:
        res, body = await c.call("runbook", {"action": "run", "name": "repo.snapshot", "input": {"repo_path": str(outside)}})
        assert res.is_error
        assert "not inside a git repository" in body["error"]["message"]
        result = body["result"]
        full = [s for s in result["steps"] if s["error"] and "message" in s["error"]]
        assert len(full) == 1, result["steps"]
        assert all(s["error"]["same_as"] == full[0]["id"] for s in result["steps"] if s is not full[0] and s["error"])
        assert result["outputs"] == {} and set(result["outputs_unavailable"]) == {"root", "branch", "status", "diffstat", "commits"}


# --- item 13: logging ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_warnings_go_to_the_log_when_a_level_is_set(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    (profiles / "runbooks").mkdir(parents=True)
    (profiles / "runbooks" / "hello.world.yaml").write_text(
        "name: hello.world\ndescription: mine\nsteps:\n  - id: a\n    tool: state\n    args: {action: get, key: k}\n"
    )
    got: list[types.LoggingMessageNotificationParams] = []

    async def log(params: types.LoggingMessageNotificationParams) -> None:
        got.append(params)

    params = StdioServerParameters(command=str(INFRA_BIN), env={"MCP_PROFILES_DIR": str(profiles)}, cwd=str(tmp_path))
    with anyio.fail_after(TEST_TIMEOUT), (tmp_path / "stderr.log").open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=CALL_TIMEOUT, logging_callback=log) as s:
                init = await s.initialize()
                assert init.capabilities.logging is not None
                # no level set: nothing is sent
                await s.call_tool("runbook", {"action": "get", "name": "hello.world"})
                await anyio.sleep(0.3)
                assert got == []
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    await s.set_logging_level("warning")
                with anyio.fail_after(5):
                    while not got:
                        await anyio.sleep(0.05)
                assert got[0].level == "warning" and got[0].logger == "infra"
                assert "overridden-builtin" in str(got[0].data) and "hello.world" in str(got[0].data)
                got.clear()
                await s.call_tool("runbook", {"action": "run", "name": "hello.world"})
                with anyio.fail_after(5):
                    while not got:
                        await anyio.sleep(0.05)
                assert "hello.world" in str(got[0].data)
