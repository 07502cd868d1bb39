"""Change control over MCP, through the official MCP Python SDK (the helpers are `test_mcp`'s): a
destructive call is refused with `approval_required` (the rendered plan, its effects and digest) and
nothing is sent; the agent has no argument or tool that approves; a person approves the digest with
`infra approve` and the same call then runs once; read-only mode refuses writes."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import types

from test_mcp import INFRA_BIN, connect

PASS = "correct horse battery staple"


def setup_approver(profiles: Path, keys: Path) -> Path:
    """An approver key made with the binary, and a policy that lists it."""
    profiles.mkdir(parents=True, exist_ok=True)
    keys.mkdir(parents=True, exist_ok=True)
    key = keys / "approver.pem"
    env = {"MCP_PROFILES_DIR": str(profiles), "PATH": os.environ.get("PATH", "")}
    out = subprocess.run(
        [str(INFRA_BIN), "approvals", "keygen", "--out", str(key), "--passphrase-stdin"],
        input=f"{PASS}\n", capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    public = out.stdout.splitlines()[0]
    (profiles / "policy.yaml").write_text(f'approvers:\n  - {{name: alice, key: "{public}"}}\n')
    return key


def person_approves(profiles: Path, key: Path, digest: str) -> subprocess.CompletedProcess[str]:
    env = {
        "MCP_PROFILES_DIR": str(profiles),
        "PATH": os.environ.get("PATH", ""),
        "INFRA_APPROVER_KEY_FILE": str(key),
    }
    return subprocess.run(
        [str(INFRA_BIN), "approve", digest, "--note", "e2e", "--passphrase-stdin"],
        input=f"{PASS}\n", capture_output=True, text=True, env=env,
    )  # fmt: skip


@contextmanager
def deleting_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records the paths of the DELETE requests it gets."""
    import http.server

    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_DELETE(self) -> None:  # noqa: N802 (the stdlib's name)
            seen.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.anyio
async def test_a_destructive_call_needs_a_persons_approval_of_its_digest(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    key = setup_approver(profiles, tmp_path / "keys")
    with deleting_server() as (base, seen):
        call = {"action": "request", "method": "DELETE", "url": f"{base}/items"}
        async with connect(tmp_path, profiles=profiles) as c:
            refused = await c.err("http", call, "approval_required")
            approval = refused["result"]["approval"]
            digest = approval["digest"]
            assert approval["effects"] == "destructive"
            assert approval["rule"] == "default.destructive"
            assert approval["plan"]["digest"] == digest
            assert approval["plan"]["nodes"][0]["args"]["method"] == "DELETE"
            assert "infra approve" in approval["how"]
            assert seen == [], "nothing was sent"
            # nothing the agent can pass approves: an unknown key is refused, not ignored
            await c.err("http", {**call, "approved": True}, "invalid_args")
            await c.err("runbook", {"action": "run", "name": "x", "approve": digest}, "invalid_args")
            assert seen == []

            done = person_approves(profiles, key, digest)
            assert done.returncode == 0, done.stderr
            ran = await c.ok("http", call)
            assert ran["result"]["status"] == 204
            assert seen == ["/items"]
            # single-use
            again = await c.err("http", call, "approval_required")
            assert "already used" in again["error"]["message"]
            assert seen == ["/items"]

            audit = await c.ok("audit", {"action": "tail", "limit": 50})
            records = audit["result"]["records"]
            refusals = [r for r in records if r.get("kind") == "refused"]
            assert refusals and all(r["policy"]["rule"] == "default.destructive" for r in refusals), refusals
            assert any(r.get("kind") == "approved" and r["approval"]["approver"] == "alice" for r in records)


@pytest.mark.anyio
async def test_read_only_mode_refuses_writes_and_runs_reads(tmp_path: Path) -> None:
    async with connect(tmp_path, env={"INFRA_READ_ONLY": "1"}) as c:
        e = await c.err("state", {"action": "set", "key": "k", "value": 1}, "refused")
        assert "INFRA_READ_ONLY" in e["error"]["message"]
        got = await c.ok("state", {"action": "get", "key": "k"})
        assert got["effects"] == "read"
        run = await c.err("runbook", {"action": "run", "name": "hello.world", "input": {"message": "x"}}, "refused")
        assert "INFRA_READ_ONLY" in run["error"]["message"]
        upsert = {"action": "upsert", "name": "mine", "runbook": {"steps": [{"id": "s", "tool": "state", "args": {"action": "get", "key": "k"}}]}}
        e = await c.err("runbook", upsert, "refused")
        assert "INFRA_READ_ONLY" in e["error"]["message"]
        assert not (tmp_path / "profiles" / "runbooks").exists(), "nothing was written"


@pytest.mark.anyio
async def test_a_person_approves_in_the_client_when_the_policy_opts_in(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "policy.yaml").write_text("elicitation: true\n")
    asked: list[str] = []
    answers = [
        types.ElicitResult(action="accept", content={"approve": True, "note": "ticket 7"}),
        types.ElicitResult(action="decline"),
    ]

    async def person(_ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return answers.pop(0)

    with deleting_server() as (base, seen):
        call = {"action": "request", "method": "DELETE", "url": f"{base}/items"}
        async with connect(tmp_path, profiles=profiles, elicitation=person) as c:
            ran = await c.ok("http", call)
            assert ran["result"]["status"] == 204
            assert seen == ["/items"]
            assert len(asked) == 1 and "http.request" in asked[0] and "/items" in asked[0], asked
            # used once: asked again, and a no leaves the refusal with nothing sent
            refused = await c.err("http", call, "approval_required")
            assert refused["result"]["approval"]["elicitation"] == "declined"
            assert seen == ["/items"] and len(asked) == 2
            audit = await c.ok("audit", {"action": "tail", "limit": 50})
            approved = [r for r in audit["result"]["records"] if r.get("kind") == "approved"]
            assert len(approved) == 1, approved
            assert approved[0]["approval"]["via"] == "elicitation"
            assert approved[0]["approval"]["note"] == "ticket 7"
