"""Where task bodies run: local processes and threads (the default), or Ray."""

from fanflow.executors.base import Executor, TaskResult, TaskSpec

__all__ = ["Executor", "TaskResult", "TaskSpec", "create_executor"]


def create_executor(name: str = "local", **options) -> Executor:
    if name == "local":
        from fanflow.executors.local import LocalExecutor

        return LocalExecutor(**options)
    if name == "ray":
        from fanflow.executors.ray import RayExecutor

        return RayExecutor(**options)
    raise ValueError(f"unknown executor {name!r} (expected local or ray)")
