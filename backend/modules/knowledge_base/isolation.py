"""Parsing in child processes: bounded in time and memory, and stoppable.

A file is the attacker's choice, and a parser's cost is not always linear in its size (pypdf on
one large page, `html.parser` on repeated `<a`). In a thread, a slow parse holds the GIL and
stalls the event loop that serves the API or the worker's probes; a parse that inflates
gigabytes takes the whole process down. So each parse runs in a child process that:

- answers within PARSE_TIMEOUT_SECONDS, or is killed and the document fails with that reason;
- may take at most PARSE_MEMORY_MB more address space than it starts with (Linux: `RLIMIT_AS`):
  past it the parse fails, and if the kernel kills the child instead, the document fails, never
  the worker;
- is killed when the parse is cancelled (its document or knowledge base was deleted, the worker
  is stopping);
- is replaced after a large document, so memory returns to where it was.

A child is `python -m backend.modules.knowledge_base.isolation`: a new interpreter that imports
the parsers, not the app (no fork of a process with an event loop and threads; the same on Windows),
talking over `multiprocessing.connection` with a one-time key. Children are reused between small
documents: starting one costs about half a second of imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import subprocess
import sys
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

from backend.modules.knowledge_base.exceptions import ParserUnavailable, UnreadableDocument
from backend.modules.knowledge_base.parsing import Kind, Section, parse
from backend.modules.knowledge_base.settings import KnowledgeBaseSettings

# A child that read a file larger than this, or returned more text, is not reused.
RECYCLE_BYTES = 1024 * 1024


def main() -> None:
    """The child: says where it listens, takes one connection, parses until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle
    memory_mb = int(sys.argv[1])
    authkey = sys.stdin.buffer.read(32)
    with Listener(authkey=authkey) as listener:
        print(listener.address, flush=True)
        conn = listener.accept()
    _limit_memory(memory_mb)
    _serve(conn)


def _limit_memory(memory_mb: int) -> None:
    """At most `memory_mb` more address space than the interpreter and the parsers take."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        with open("/proc/self/status") as status:
            size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
        limit = size + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _serve(conn: Connection) -> None:
    while True:
        try:
            kind, raw, max_pages, max_chars = conn.recv()
        except EOFError:
            return
        answer: tuple[str, Any]
        try:
            answer = ("ok", parse(kind, raw, max_pages=max_pages, max_chars=max_chars))
        except UnreadableDocument as exc:
            answer = ("unreadable", exc.detail)
        except MemoryError:
            answer = ("memory", None)
        del raw
        try:
            conn.send(answer)
        except MemoryError:
            conn.send(("memory", None))


class _Child:
    def __init__(self, memory_mb: int) -> None:
        """Start a child and connect to it (blocking: run it in a thread)."""
        authkey = secrets.token_bytes(32)
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(authkey)
        self.process.stdin.close()
        address = self.process.stdout.readline().decode().strip()
        if not address:
            raise EOFError("the parser process did not start")
        self.conn = Client(address, authkey=authkey)

    def exchange(self, job: tuple[Any, ...], timeout: float) -> tuple[str, Any] | None:
        """Send a job and wait for its answer (blocking: run it in a thread); None on timeout.
        EOFError when the child died (or was killed by `kill`)."""
        self.conn.send(job)
        if not self.conn.poll(timeout):
            return None
        answer: tuple[str, Any] = self.conn.recv()
        return answer

    def kill(self) -> None:
        """Stop the child; a thread waiting in `exchange` then sees EOF and returns."""
        with contextlib.suppress(Exception):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.process.wait(0.1)  # no zombie, usually; the OS reaps it otherwise at exit

    def reap(self) -> int | None:
        """Wait (briefly) for the dead child; its exit code."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        return self.process.returncode


class Parsers:
    """A few parse children, started on demand and reused while they stay small."""

    def __init__(self, settings: KnowledgeBaseSettings) -> None:
        self.settings = settings
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()

    async def parse(self, kind: Kind, raw: bytes) -> list[Section]:
        """The file's sections (as `parsing.parse`), or `UnreadableDocument` with the reason:
        unreadable, too slow, too much memory, or the parser crashed."""
        settings = self.settings
        timeout, memory_mb = settings.parse_timeout_seconds, settings.parse_memory_mb
        loop = asyncio.get_running_loop()
        if self._idle:
            child = self._idle.pop()
        else:
            try:
                child = await loop.run_in_executor(None, _Child, memory_mb)
            except (EOFError, OSError) as exc:  # no process, no parse: worth another attempt
                raise ParserUnavailable(f"The parser process could not start ({exc})") from None
        self._busy.add(child)
        job = (kind, raw, settings.max_document_pages, settings.max_document_chars)
        try:
            answer = await loop.run_in_executor(None, child.exchange, job, timeout)
        except (EOFError, OSError):  # the child died
            code = await loop.run_in_executor(None, child.reap)
            raise UnreadableDocument(_crash_reason(code)) from None
        except BaseException:  # cancelled: the document went away, or the worker is stopping
            child.kill()
            raise
        finally:
            self._busy.discard(child)
        if answer is None:  # still parsing
            child.kill()
            raise UnreadableDocument(
                f"Reading the {kind} file took longer than {timeout:g} s "
                f"(PARSE_TIMEOUT_SECONDS): it was stopped"
            )
        outcome, value = answer
        large = len(raw) > RECYCLE_BYTES or (
            outcome == "ok" and sum(len(section.text) for section in value) > RECYCLE_BYTES
        )
        if outcome == "memory" or large:
            child.kill()  # its memory goes back to the system with it
        else:
            self._idle.append(child)
        if outcome == "unreadable":
            raise UnreadableDocument(value)
        if outcome == "memory":
            raise UnreadableDocument(
                f"Reading the {kind} file needs more than {memory_mb} MB (PARSE_MEMORY_MB)"
            )
        sections: list[Section] = value
        return sections

    def close(self) -> None:
        """Stop every child (those in a parse too: their parse ends with EOFError)."""
        for child in [*self._idle, *self._busy]:
            child.kill()
        self._idle.clear()


def _crash_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (most likely out of memory)" if -code == signal.SIGKILL else ""
        return f"The parser stopped on this file: killed by {name}{hint}"
    return f"The parser stopped on this file (exit code {code})"


if __name__ == "__main__":
    main()
