"""Save-time checks of tenant input in a pool of subprocesses, off the API's event loop.

Saving or validating a config, creating a campaign and previewing it compile and render tenant
templates (and parse tenant YAML). The sandbox bounds every operation before it runs
(core/content/templating.py); this pool is the backstop for what a bound missed: each check runs
in a child process with an address-space limit, killed at a deadline, and a check that is killed
is a 422 naming the template it was on, never a 500 and never a stalled event loop.

Each child is its own one-process `ProcessPoolExecutor`, so a check that kills its process
breaks only its own executor (a shared executor fails every check in flight when one worker
dies); the broken one is replaced. Children come from a forkserver that has the checking code
imported, so a replacement costs a fork, not an interpreter start.

Workers render at send time in-process: there the sandbox's bounds hold, and a bound that fails
fails that one message (RenderError → `render_error`), not the batch.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import resource
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from core.content.templating import TemplateError, set_progress_hook

# A check of a whole config (every template of every locale, every segment) takes tens of
# milliseconds; two seconds is far past any honest config and short enough that a bomb costs
# one child two seconds of CPU at most.
CHECK_DEADLINE_SECONDS = 2.0
# The child's address space: the interpreter with the checking code is about 150 MB; a check
# that needs more than this is building something no message needs.
CHECK_MEMORY_BYTES = 512 * 1024 * 1024
# Children checking at once. Checks are short; more would only compete with the API for CPU.
CHECK_PROCESSES = 2
# How much lower than the API the children run (nice(2) increment).
CHILD_NICENESS = 10
# The parent's own wait: the child's deadline plus time to start a child (a fork from the
# forkserver, or the forkserver itself on first use). The child's alarm normally fires first.
_PARENT_GRACE_SECONDS = 30.0
# Imported once in the forkserver, so each child starts with them.
_PRELOAD = ["core.content.check_pool", "core.tenants.config_store", "core.campaigns.spec", "core.content.rendering"]
_PROGRESS_BYTES = 512

T = TypeVar("T")

# -- in the child ---------------------------------------------------------------------------------

_child_progress: Any = None


def _init_child(progress: Any) -> None:
    global _child_progress
    _child_progress = progress
    resource.setrlimit(resource.RLIMIT_AS, (CHECK_MEMORY_BYTES, CHECK_MEMORY_BYTES))
    # Below the API in the scheduler: a check spinning to its deadline must not take the CPU
    # from /healthz and other tenants' requests (two cores, two children).
    os.nice(CHILD_NICENESS)
    set_progress_hook(_note)


def _note(path: str) -> None:
    _child_progress.value = path.encode("utf-8", "replace")[: _PROGRESS_BYTES - 1]


@dataclass(frozen=True)
class _Refused:
    """A check's located errors, carried back as data: exceptions whose __init__ takes a list
    do not survive pickling (their args are the joined message)."""

    error_type: type[Exception]
    errors: list[str]


def _run_in_child(where: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _note(where)
    # SIGALRM's default action ends the process: that interrupts even a single C-level
    # operation, which no Python-level handler or tracer could.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, CHECK_DEADLINE_SECONDS)
    try:
        return fn(*args, **kwargs)
    except MemoryError:
        return _Refused(TemplateError, [f"{_child_progress.value.decode()}: needs more memory than a check may use"])
    except RecursionError:
        return _Refused(TemplateError, [f"{_child_progress.value.decode()}: nested too deeply"])
    except Exception as exc:
        errors = getattr(exc, "errors", None)
        if isinstance(errors, list) and all(isinstance(e, str) for e in errors):
            return _Refused(type(exc), errors)
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


# -- in the parent --------------------------------------------------------------------------------


class _Child:
    """One child process behind its own executor, and where its current check is."""

    def __init__(self, context: Any) -> None:
        self.progress: Any = context.Array("c", _PROGRESS_BYTES, lock=False)  # a ctypes char array
        self.executor = ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=_init_child, initargs=(self.progress,)
        )

    def kill(self) -> None:
        # A check past the parent's wait: end its process (the executor has no public way).
        for process in list(getattr(self.executor, "_processes", {}).values()):
            try:
                os.kill(process.pid, signal.SIGKILL)
            except (ProcessLookupError, TypeError):
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)


class CheckPool:
    """Children that run checks one at a time each; see the module docstring."""

    def __init__(self, processes: int = CHECK_PROCESSES) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(_PRELOAD)
        self._processes = processes
        self._children: list[_Child] = []
        self._free: asyncio.Queue[_Child] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _queue(self) -> asyncio.Queue[_Child]:
        # An asyncio.Queue belongs to one event loop; a process that runs another (tests) gets a
        # queue of its own over the same children.
        loop = asyncio.get_running_loop()
        if self._free is None or self._loop is not loop:
            if not self._children:
                self._children = [_Child(self._context) for _ in range(self._processes)]
            self._free, self._loop = asyncio.Queue(), loop
            for child in self._children:
                self._free.put_nowait(child)
        return self._free

    async def run(self, where: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` in a child. A located error it raises (ConfigError,
        TemplateError, …) is raised here; a child killed at the deadline or the memory limit is
        a TemplateError naming the path it was checking (`where` before any template)."""
        free = self._queue()
        child = await free.get()
        loop = asyncio.get_running_loop()
        try:
            call = functools.partial(_run_in_child, where, fn, args, kwargs)
            try:
                result = await asyncio.wait_for(
                    loop.run_in_executor(child.executor, call), CHECK_DEADLINE_SECONDS + _PARENT_GRACE_SECONDS
                )
            except (BrokenProcessPool, TimeoutError):
                path = child.progress.value.decode("utf-8", "replace") or where
                child.kill()
                replacement = _Child(self._context)
                self._children = [replacement if c is child else c for c in self._children]
                child = replacement
                raise TemplateError(
                    [
                        f"{path}: the check was stopped: it took longer than {CHECK_DEADLINE_SECONDS:g} s "
                        f"or needed more than {CHECK_MEMORY_BYTES // 2**20} MB"
                    ]
                ) from None
        finally:
            free.put_nowait(child)
        if isinstance(result, _Refused):
            try:
                error = result.error_type(result.errors)
            except Exception:
                error = TemplateError(result.errors)
            raise error
        return cast(T, result)

    async def warm(self) -> None:
        """Start every child now (the forkserver on first use), so the first check is not slow."""
        await asyncio.gather(*(self.run("warm-up", os.getpid) for _ in range(self._processes)))


_pool: CheckPool | None = None


def check_pool() -> CheckPool:
    """The process's check pool, made on first use."""
    global _pool
    if _pool is None:
        _pool = CheckPool()
    return _pool


async def run_check(where: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one save-time check in the process's check pool (see CheckPool.run)."""
    return await check_pool().run(where, fn, *args, **kwargs)
