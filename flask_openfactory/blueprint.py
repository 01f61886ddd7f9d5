"""``AssetBlueprint``: attributes and methods declared in modules, Flask's way.

A Flask blueprint that also carries OpenFactory declarations. Registering it on
an app (``app.register_blueprint``) declares them on that app's asset, so a
larger app splits its methods over modules like it splits its views.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask
from flask.sansio.blueprints import BlueprintSetupState

from .runtime.attributes import Attribute
from .runtime.subscriptions import SubscriptionSpec, subscribe, subscription_of
from .runtime.tasks import TaskSpec, background_task, task_of
from .state import get_state
from .wire.methods import MethodSpec, ofa_method, spec_of

A = TypeVar("A", bound=Attribute)
F = TypeVar("F", bound=Callable[..., Any])


class AssetBlueprint(Blueprint):
    def __init__(self, name: str, import_name: str, **kwargs: Any) -> None:
        super().__init__(name, import_name, **kwargs)
        self.ofa_attributes: list[Attribute] = []
        self.ofa_methods: list[MethodSpec] = []
        self.ofa_tasks: list[TaskSpec] = []
        self.ofa_subscriptions: list[SubscriptionSpec] = []
        self.record_once(self._declare)

    def attribute(self, attribute: A) -> A:
        """Declare an attribute; returns it, so ``x = bp.attribute(SampleAttribute(...))``."""
        if not isinstance(attribute, Attribute):
            raise TypeError(f"expected an EventAttribute, SampleAttribute or ConditionAttribute, got {attribute!r}")
        self.ofa_attributes.append(attribute)
        return attribute

    def method(self, func: F) -> F:
        """Register a function already decorated with ``@ofa_method()``."""
        self.ofa_methods.append(spec_of(func))
        return func

    def ofa_method(
        self,
        name: str | None = None,
        *,
        description: str | None = None,
        param_description: dict[str, str] | None = None,
    ) -> Callable[[F], F]:
        """``@ofa_method(...)`` and registration on this blueprint in one decorator."""
        decorate = ofa_method(name, description=description, param_description=param_description)

        def register(func: F) -> F:
            return self.method(decorate(func))

        return register

    def background_task(
        self, name: str | None = None, *, backoff: float = 1.0, max_backoff: float = 60.0,
        healthy_after: float = 30.0,
    ) -> Callable[[F], F]:
        """A long-running ``func(stop)``, sync or ``async``, in the one executing process.

        It runs in an app context, should return soon after ``stop`` is set
        (``stop.wait(s)`` / ``await stop.sleep(s)`` instead of sleeping), is
        restarted with backoff when it raises, and reports through the
        Condition attribute ``<name>_task``.
        """
        decorate = background_task(name, backoff=backoff, max_backoff=max_backoff, healthy_after=healthy_after)

        def register(func: F) -> F:
            self.ofa_tasks.append(task_of(decorate(func)))
            return func

        return register

    def subscribe(
        self, asset: str | Callable[[], str], *, attribute: str | None = None, type: str | None = None,
        every_worker: bool = False, name: str | None = None,
    ) -> Callable[[F], F]:
        """Call ``handler(record)`` for each update of another asset's attributes.

        Runs in the executing process, in order, each update at least once,
        starting with the current state; ``every_worker=True`` for caches.
        ``asset`` may be a function, called in the app context at start.
        """
        decorate = subscribe(asset, attribute=attribute, type=type, every_worker=every_worker, name=name)

        def register(handler: F) -> F:
            self.ofa_subscriptions.append(subscription_of(decorate(handler)))
            return handler

        return register

    def _declare(self, setup: BlueprintSetupState) -> None:
        try:
            state = get_state(cast(Flask, setup.app))  # a sansio App in the types, a Flask app here
        except RuntimeError:
            raise RuntimeError(
                f"AssetBlueprint {self.name!r} was registered on an app without the OpenFactory "
                "extension: call 'ofa.init_app(app)' before 'app.register_blueprint(...)'"
            ) from None
        state.declare(attributes=self.ofa_attributes, methods=self.ofa_methods,
                      tasks=self.ofa_tasks, subscriptions=self.ofa_subscriptions)
