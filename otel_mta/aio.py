"""asyncio helpers through which a cancellation always gets, so that SIGTERM
ends the sidecar even when a task misbehaves.

On Python 3.11, `asyncio.wait_for()` loses a cancellation that arrives just
as the awaited coroutine finishes (fixed in 3.12): a poll whose collect raised
at once then turned `stop()`'s cancel into an ordinary failure, and the loop
went on. Code that must stop on cancel uses `asyncio.timeout()` instead; these
helpers bound what is left: a task that swallows cancellations anyway (a
client library's bug) is cancelled again and again, then abandoned.
"""
from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("otel_mta")
RETRY_S = 0.1   # how often a task that swallowed a cancel is cancelled again
# tasks given up on (each named in a warning): not waited for again at exit
ABANDONED: set = set()


async def cancel_and_wait(task: asyncio.Task, timeout_s: float) -> bool:
    """Cancel `task` and wait until it has ended, at most `timeout_s` seconds.

    A task that swallowed the cancel is cancelled again every RETRY_S. True if
    it ended; False if it was still running at the deadline (it is left to
    itself). Never raises the task's exception; a cancel of the caller goes
    through (asyncio.wait neither cancels nor swallows).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done():
        task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            ABANDONED.add(task)
            return False
        await asyncio.wait((task,), timeout=min(RETRY_S, left))
    if not task.cancelled() and task.exception() is not None:
        log.debug("task %s ended with an error while stopping", task.get_name(), exc_info=task.exception())
    return True


def run(main, grace_s: float = 2.0):
    """asyncio.run(main), except that tasks still running when `main` returns
    get `grace_s` seconds to end after their cancel, not forever.

    asyncio.run() cancels what is left and then waits for all of it: one task
    that swallows its cancel keeps the process alive until Kubernetes kills it
    (and what the exporter held is lost). Here such a task is named in a
    warning and abandoned, and the process exits with main's result.
    """
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            leftovers = [t for t in asyncio.all_tasks(loop) if not t.done() and t not in ABANDONED]
            if leftovers:
                stuck = loop.run_until_complete(_cancel_all(leftovers, grace_s))
                for task in stuck:
                    log.warning("task %s did not stop within %.0f s of its cancel; exiting without it",
                                task.get_name(), grace_s)
                ABANDONED.update(stuck)
            for task in ABANDONED:
                task._log_destroy_pending = False   # named in a warning already
            loop.run_until_complete(loop.shutdown_asyncgens())
            # joins the default executor's threads: bounded too
            loop.run_until_complete(_bounded(loop.shutdown_default_executor(), grace_s))
        finally:
            asyncio.set_event_loop(None)
            loop.close()


async def _cancel_all(tasks: list, grace_s: float) -> list:
    done = await asyncio.gather(*(cancel_and_wait(t, grace_s) for t in tasks))
    return [t for t, ended in zip(tasks, done) if not ended]


async def _bounded(coro, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await coro
    except TimeoutError:
        log.warning("threads of the default executor still busy after %.0f s; exiting without them", timeout_s)
