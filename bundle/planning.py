"""Components that read their files on first use, not when the config is built.

A MONAI client resolves a bundle's config (`ConfigWorkflow.check_properties`) before any data
exists; the datasets and the streamed segmentation therefore keep their constructor's arguments
and plan (open the volumes, check the splits, size the slabs) when something first needs the
result, or when `plan()` is called (`bundle.data.PlanAtStart` does so when a run starts).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PlannedOnFirstUse"]


class PlannedOnFirstUse:
    """Mixin: `PLANNED` names the attributes `_plan(**arguments)` sets; reading one of them plans first.

    Other missing names (what MONAI's `set_rnd` or pickling probe for) are simply absent. A plan
    that fails stays pending, so the next use raises the same clear error again.
    """

    PLANNED: frozenset[str] = frozenset()

    def _defer(self, arguments: dict[str, Any]) -> None:
        """Keep the constructor's `arguments` (its `locals()`) for `_plan`."""
        self._arguments = {k: v for k, v in arguments.items() if k not in ("self", "__class__")}
        self._plan_state = "pending"

    def _plan(self, **arguments: Any) -> None:
        raise NotImplementedError

    def plan(self) -> PlannedOnFirstUse:
        """Read the files and check them now (once); returns the component, planned."""
        if self.__dict__.get("_plan_state") == "pending":
            self._plan_state = "planning"
            try:
                self._plan(**self._arguments)
            except BaseException:
                self._plan_state = "pending"
                raise
            self._plan_state = "done"
        return self

    @property
    def planned(self) -> bool:
        return self.__dict__.get("_plan_state") == "done"

    def __getattr__(self, name: str) -> Any:
        if name in type(self).PLANNED and self.__dict__.get("_plan_state") == "pending":
            self.plan()
            return getattr(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
