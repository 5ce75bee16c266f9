"""What the studio's forkserver loads once, before it forks any studio process.

Every process it forks (the checker's worker, each job slot) starts as a copy
of it. Importing the job code is not enough: Lark builds the `.rules` parser
on the first parse, about a third of a second of CPU, which each new process
would pay again on its first check or its first try (on a loaded machine, many
times that; the first try of a studio waited on it). Built here, once, every
process starts with it.
"""

from __future__ import annotations

from arbiter.dsl import parser
from arbiter.server.studio import jobs, worker

__all__ = ["jobs", "worker"]

parser.prepare()
