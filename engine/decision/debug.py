"""Tracebacks of generated code told at the `.rules` lines they were written for.

An exception inside the evaluator would otherwise show frames of
`<arbiter plan retail_web 1a2b…>` at line 812, which means nothing to the person
who wrote the rule. As Jinja does for templates (`jinja2/debug.py`), every frame of
generated code is replaced by a frame that "raises" at the rule's file and line,
so `traceback` prints the `.rules` source line itself, and the frame's name says
which rule it was.
"""

from __future__ import annotations

import linecache
import sys
from types import CodeType, TracebackType

from arbiter.engine.plan import Plan


def rewrite_traceback(exc: BaseException, plan: Plan) -> BaseException:
    """Point every frame of `plan`'s generated code in `exc`'s traceback at its `.rules` line.

    Frames of other code are kept as they are. Returns `exc`, its traceback replaced.
    """
    frames: list[TracebackType] = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    rebuilt: TracebackType | None = None
    for frame in reversed(frames):
        span = None
        if frame.tb_frame.f_code.co_filename == plan.filename:
            index = frame.tb_lineno - 1
            span = plan.line_spans[index] if 0 <= index < len(plan.line_spans) else None
        if span is None:
            frame.tb_next = rebuilt
            rebuilt = frame
        else:
            rebuilt = _fake_frame(exc, span.file, span.line, f"rule at {span}", rebuilt)
    return exc.with_traceback(rebuilt)


def _fake_frame(
    exc: BaseException, filename: str, line: int, name: str, tb_next: TracebackType | None
) -> TracebackType:
    """A traceback entry at `filename:line`, made by raising `exc` from code compiled there."""
    # The raise spans the whole `.rules` line, so tracebacks print the line without
    # carets under a part of it that has nothing to do with the error.
    width = len(linecache.getline(filename, line).rstrip())
    statement = "raise (__exc" + " " * max(0, width - 13) + ")"
    code: CodeType = compile("\n" * (line - 1) + statement, filename, "exec")
    code = code.replace(co_name=name)
    saved = exc.__traceback__
    fake: TracebackType | None = None
    try:
        exec(code, {"__exc": exc})
    except BaseException:
        fake = sys.exc_info()[2]
    finally:
        exc.__traceback__ = saved
    assert fake is not None and fake.tb_next is not None
    entry = fake.tb_next  # the first entry is this function's own frame
    entry.tb_next = tb_next
    return entry
