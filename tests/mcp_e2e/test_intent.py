"""Intents over MCP with the official Python SDK: from `workspace summary` to `intent explain` to
`intent execute` on a real repository, without naming a runbook; `execute` of a write intent refused
without `apply`, of an irreversible one without `confirm`, with the refusals in the audit log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_mcp import ERAS, connect, make_git_repo

GATED = """version: 1
capabilities:
  greet:
    runbook: hello.world
    inputs: {required: [message]}
    effects: {kind: write, requires_apply: true}
  greet.forever:
    runbook: hello.world
    effects: {kind: write, requires_apply: true, irreversible: true}
"""


@pytest.mark.anyio
@pytest.mark.parametrize("era", ERAS)
async def test_summary_explain_execute_a_read_intent(tmp_path: Path, era: str) -> None:
    repo = make_git_repo(tmp_path / "repo")
    # the client's working directory is the repository: no path needed
    async with connect(tmp_path, era, cwd=repo) as c:
        listed = {t.name: t for t in (await c.session.list_tools()).tools}
        actions = set(listed["intent"].input_schema["properties"]["action"]["enum"])
        assert {"list", "explain", "compile", "dry_run", "execute", "get", "resolve", "suggest"} <= actions
        assert listed["intent"].annotations.read_only_hint is False
        assert {"get", "refresh", "targets", "summary"} <= set(listed["context"].input_schema["properties"]["action"]["enum"])
        summary = await c.ok("workspace", {"action": "summary"})
        result = summary["result"]
        assert len(json.dumps(result)) < 4096, result
        assert "git" in result["tags"]
        assert any(s["intent"] == "repo.snapshot" for s in result["capabilities"]), result

        explained = await c.ok("intent", {"action": "explain", "intent": "repo.snapshot"})
        assert explained["result"]["capability"] == "repo.snapshot"
        assert explained["result"]["steps"][0]["inputs"]["repo_path"].rstrip("/") == str(repo)

        done = await c.ok("intent", {"action": "execute", "intent": {"type": "repo.snapshot"}})
        assert done["effects"] == "read"
        outputs = done["result"]["outputs"]["repo.snapshot"]
        assert outputs["root"].rstrip("/") == str(repo)
        assert outputs["branch"] == "main"
        assert done["result"]["evidence"].startswith("artifact://runs/intent.repo.snapshot/")
        runs = await c.ok("evidence", {"action": "get", "run_id": done["run_id"]})
        assert runs["ok"] is True


@pytest.mark.anyio
async def test_execute_refused_without_apply_or_confirm(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "capabilities.yaml").write_text(GATED)
    async with connect(tmp_path, profiles=profiles) as c:
        body = await c.err("intent", {"action": "execute", "intent": "greet", "inputs": {"message": "hi"}}, "refused")
        assert body["error"]["path"] == "/apply" and "apply: true" in body["error"]["message"]
        body = await c.err(
            "intent",
            {"action": "execute", "intent": "greet.forever", "inputs": {"message": "hi"}, "apply": True},
            "refused",
        )
        assert body["error"]["path"] == "/confirm" and "confirm: true" in body["error"]["message"]
        missing = await c.err("intent", {"action": "execute", "intent": "greet", "apply": True}, "missing_inputs")
        assert missing["error"]["missing"] == ["greet.message"]
        state = await c.ok("state", {"action": "get", "key": "hello"})
        assert "hi" not in json.dumps(state["result"])
        tail = await c.ok("audit", {"action": "list", "tool": "intent", "limit": 20})
        kinds = [r.get("kind") for r in tail["result"]["records"]]
        assert kinds.count("refused") == 2, tail["result"]
        assert not (profiles / "runs" / "intent.greet").exists()
