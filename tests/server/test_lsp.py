"""`arbiter lsp` through its protocol: a JSON-RPC client over the process's stdio."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from queue import Empty, Queue
from typing import Any

import pytest
from support.paths import RULESETS_DIR

TEXT = (RULESETS_DIR / "retail.rules").read_text(encoding="utf-8")
TIMEOUT = 60


class Client:
    """A minimal LSP client: Content-Length framing, requests matched by id."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.next_id = 0
        self.messages: Queue[dict[str, Any]] = Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            length = 0
            while True:
                line = out.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            self.messages.put(json.loads(out.read(length)))

    def send(self, message: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **message}).encode()
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        stdin.flush()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        message = self.wait(lambda m: m.get("id") == self.next_id and "method" not in m)
        assert "error" not in message, message
        return message["result"]

    def wait(self, match: Any) -> dict[str, Any]:
        while True:
            try:
                message = self.messages.get(timeout=TIMEOUT)
            except Empty:
                pytest.fail(f"no matching message from arbiter lsp within {TIMEOUT}s")
            if match(message):
                return message

    def diagnostics(self, uri: str) -> list[dict[str, Any]]:
        found = self.wait(
            lambda m: (
                m.get("method") == "textDocument/publishDiagnostics" and m["params"]["uri"] == uri
            )
        )
        result: list[dict[str, Any]] = found["params"]["diagnostics"]
        return result


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """One `arbiter lsp` process for the module (each test opens its own document)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "arbiter.server.cli", "lsp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    c = Client(proc)
    c.request("initialize", {"processId": None, "rootUri": None, "capabilities": {}})
    c.notify("initialized", {})
    try:
        yield c
    finally:
        c.request("shutdown", {})
        c.notify("exit", {})
        proc.wait(timeout=TIMEOUT)
        c.reader.join(timeout=TIMEOUT)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()


def open_doc(client: Client, text: str, name: str) -> str:
    """Open `text` as if it were `rulesets/<name>` (its model paths resolve there)."""
    uri = (RULESETS_DIR / name).resolve().as_uri()
    item = {"uri": uri, "languageId": "arbiter-rules", "version": 1, "text": text}
    client.notify("textDocument/didOpen", {"textDocument": item})
    return uri


def position_of(text: str, needle: str, offset: int = 0) -> dict[str, int]:
    index = text.index(needle) + offset
    line = text.count("\n", 0, index)
    return {"line": line, "character": index - (text.rfind("\n", 0, index) + 1)}


def test_diagnostics_on_open_and_change_at_the_right_range(client: Client) -> None:
    bad = TEXT.replace("offer welcome_offer priority 1", "offer welcom_offer priority 1")
    uri = open_doc(client, bad, "draft-a.rules")
    [d] = [d for d in client.diagnostics(uri) if d["severity"] == 1]
    start = position_of(bad, "welcom_offer priority 1")
    assert d["range"]["start"] == start
    assert d["range"]["end"] == {
        "line": start["line"],
        "character": start["character"] + len("welcom_offer"),
    }
    assert d["code"] == "unknown-action" and "did you mean 'welcome_offer'?" in d["message"]
    change = {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": TEXT}]}
    client.notify("textDocument/didChange", change)
    assert [d for d in client.diagnostics(uri) if d["severity"] == 1] == []


def test_completion_definition_hover_formatting(client: Client) -> None:
    uri = open_doc(client, TEXT, "draft-b.rules")
    client.diagnostics(uri)
    doc = {"uri": uri}
    at = position_of(TEXT, "profile.orders_90d >= 3", len("profile."))
    items = client.request("textDocument/completion", {"textDocument": doc, "position": at})[
        "items"
    ]
    labels = {i["label"] for i in items}
    assert {"orders_90d", "lifetime_value", "loyalty_tier"} <= labels and "vip" not in labels
    use = position_of(TEXT, "segment high_intent = browsing", len("segment high_intent = "))
    where = client.request("textDocument/definition", {"textDocument": doc, "position": use})
    assert where["uri"] == uri
    assert where["range"]["start"] == position_of(TEXT, "segment browsing =")
    hover = client.request("textDocument/hover", {"textDocument": doc, "position": use})
    assert "**segment** `browsing`" in hover["contents"]["value"]
    assert "count(product_view within 24h) >= 3" in hover["contents"]["value"]
    messy = TEXT.replace("segment vip = profile", "segment   vip=profile")
    change = {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": messy}]}
    client.notify("textDocument/didChange", change)
    client.diagnostics(uri)
    options = {"tabSize": 2, "insertSpaces": True}
    [edit] = client.request("textDocument/formatting", {"textDocument": doc, "options": options})
    assert edit["newText"] == TEXT and edit["range"]["start"] == {"line": 0, "character": 0}
