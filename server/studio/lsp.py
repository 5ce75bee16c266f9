"""`arbiter lsp`: a language server for `.rules` files, over stdio (pygls).

Diagnostics on open and on every change, completion of declared names,
hover (a name's kind and type, a segment's definition), go-to-definition and
whole-document formatting. It runs the same code as `arbiter check` and
`arbiter fmt` (`dsl.diagnose`, the ONNX input checks, `dsl.format_ruleset`),
on the editor's unsaved text; includes resolve next to the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from arbiter import dsl
from arbiter.dsl.diagnose import diagnose
from arbiter.dsl.errors import Diagnostic
from arbiter.dsl.formatter import format_ruleset
from arbiter.dsl.outline import Symbol, find, outline
from arbiter.dsl.reparse import Reparser

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADS = {"profile": "profile", "context": "context", "experiment": "experiment"}


@dataclass
class _Doc:
    """What the server knows of one open document: its last outline and sources."""

    symbols: list[Symbol] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)


def _path(uri: str) -> Path:
    return Path(to_fs_path(uri) or uri)


def _range(d: Diagnostic) -> lsp.Range:
    line = max(d.span.line - 1, 0)
    col = max(d.span.column - 1, 0)
    end_line = max(d.span.end_line - 1, line)
    end_col = d.span.end_column - 1
    if end_line == line and end_col <= col:
        end_col = col + 1
    return lsp.Range(lsp.Position(line, col), lsp.Position(end_line, end_col))


def to_lsp(d: Diagnostic) -> lsp.Diagnostic:
    """One Arbiter diagnostic as LSP sees it (0-based range, code, hint in the message)."""
    severity = (
        lsp.DiagnosticSeverity.Error if d.severity == "error" else lsp.DiagnosticSeverity.Warning
    )
    message = d.message + (f"\n{d.hint}" if d.hint else "")
    return lsp.Diagnostic(_range(d), message, severity=severity, code=d.code, source="arbiter")


def _word_at(text: str, pos: lsp.Position) -> tuple[str, str]:
    """(the word under the cursor, the word before a `.` in front of it, or '')."""
    lines = text.splitlines()
    if pos.line >= len(lines):
        return "", ""
    line = lines[pos.line]
    for m in _WORD.finditer(line):
        if m.start() <= pos.character <= m.end():
            head = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\.$", line[: m.start()])
            return m.group(), head.group(1) if head else ""
    return "", ""


def build_server() -> LanguageServer:
    """The language server with its features registered (started by `arbiter lsp`)."""
    server = LanguageServer(
        "arbiter", "0.1.0", text_document_sync_kind=lsp.TextDocumentSyncKind.Full
    )
    docs: dict[str, _Doc] = {}
    reparser = Reparser()  # didChange sends the whole text; most declarations are unchanged

    def refresh(ls: LanguageServer, uri: str) -> None:
        from arbiter.engine.scoring.loading import check_models

        text = ls.workspace.get_text_document(uri).source
        path = _path(uri)
        diagnosis = diagnose(path, text, reparser)
        if diagnosis.checked is not None:
            diagnosis.diagnostics += check_models(diagnosis.checked, path.parent)
        doc = docs.setdefault(uri, _Doc())
        if diagnosis.ruleset is not None:
            doc.symbols = outline(diagnosis.ruleset)
            doc.sources = diagnosis.sources
        mine = [d for d in diagnosis.diagnostics if d.span.file == str(path)]
        ls.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[to_lsp(d) for d in mine])
        )

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: LanguageServer, params: lsp.DidOpenTextDocumentParams) -> None:
        refresh(ls, params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: LanguageServer, params: lsp.DidChangeTextDocumentParams) -> None:
        refresh(ls, params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: LanguageServer, params: lsp.DidSaveTextDocumentParams) -> None:
        refresh(ls, params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: LanguageServer, params: lsp.DidCloseTextDocumentParams) -> None:
        docs.pop(params.text_document.uri, None)

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=["."]))
    def completion(ls: LanguageServer, params: lsp.CompletionParams) -> lsp.CompletionList:
        text = ls.workspace.get_text_document(params.text_document.uri).source
        lines = text.splitlines()
        line = lines[params.position.line] if params.position.line < len(lines) else ""
        before = line[: params.position.character]
        symbols = docs.get(params.text_document.uri, _Doc()).symbols
        head = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\.[A-Za-z0-9_]*$", before)
        if head:
            kind = _HEADS.get(head.group(1))
            chosen = [s for s in symbols if s.kind == kind] if kind else []
        elif re.search(r"\boffer\s+[A-Za-z0-9_]*$", before):
            chosen = [s for s in symbols if s.kind == "action"]
        elif re.search(r"\b(count|sum|min|max|avg|last_seen)\(\s*[A-Za-z0-9_]*$", before):
            chosen = [s for s in symbols if s.kind == "event"]
        else:
            chosen = [s for s in symbols if s.kind in {"segment", "model", "action"}]
        kinds = {
            "action": lsp.CompletionItemKind.Constant,
            "segment": lsp.CompletionItemKind.Variable,
            "event": lsp.CompletionItemKind.Event,
            "model": lsp.CompletionItemKind.Function,
        }
        items = [
            lsp.CompletionItem(
                s.name,
                kind=kinds.get(s.kind, lsp.CompletionItemKind.Field),
                detail=f"{s.kind} {s.detail}".strip(),
            )
            for s in chosen
        ]
        return lsp.CompletionList(is_incomplete=False, items=items)

    def lookup(uri: str, pos: lsp.Position, text: str) -> Symbol | None:
        word, head = _word_at(text, pos)
        if not word:
            return None
        symbols = docs.get(uri, _Doc()).symbols
        if head in _HEADS:
            return find(symbols, word, (_HEADS[head],))
        if head:
            return None
        return find(symbols, word, ("segment", "action", "model", "bandit", "event", "experiment"))

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: LanguageServer, params: lsp.DefinitionParams) -> lsp.Location | None:
        uri = params.text_document.uri
        symbol = lookup(uri, params.position, ls.workspace.get_text_document(uri).source)
        if symbol is None:
            return None
        span = symbol.span
        target = uri if span.file == str(_path(uri)) else Path(span.file).resolve().as_uri()
        start = lsp.Position(span.line - 1, span.column - 1)
        return lsp.Location(target, lsp.Range(start, start))

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    def hover(ls: LanguageServer, params: lsp.HoverParams) -> lsp.Hover | None:
        uri = params.text_document.uri
        symbol = lookup(uri, params.position, ls.workspace.get_text_document(uri).source)
        if symbol is None:
            return None
        lines = [
            f"**{symbol.kind}** `{symbol.name}`" + (f": `{symbol.detail}`" if symbol.detail else "")
        ]
        source = docs.get(uri, _Doc()).sources.get(symbol.span.file, "")
        if symbol.kind == "segment" and source:
            text = source.splitlines()[symbol.span.line - 1 : symbol.span.end_line]
            lines.append("```rules\n" + "\n".join(text) + "\n```")
        return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, "\n\n".join(lines)))

    @server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
    def formatting(ls: LanguageServer, params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit]:
        uri = params.text_document.uri
        text = ls.workspace.get_text_document(uri).source
        try:
            new = format_ruleset(dsl.parse(text, str(_path(uri))))
        except dsl.RulesError:
            return []  # the diagnostics already show the syntax error
        if new == text:
            return []
        end = lsp.Position(len(text.splitlines()) + 1, 0)
        return [lsp.TextEdit(lsp.Range(lsp.Position(0, 0), end), new)]

    return server


def main() -> int:
    """Serve LSP over stdin/stdout until the client exits."""
    build_server().start_io()
    return 0
