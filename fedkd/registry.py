"""A named registry so that every pluggable part is chosen by name, never by ``eval``.

A registry made with ``plugins=`` also takes entries from installed packages: the Python entry
points of the group ``fedkd.<kind>s`` (``fedkd.algorithms``, ``fedkd.models``, ``fedkd.datasets``,
``fedkd.metrics``; docs/extending.md). They are loaded once, the first time the registry is
asked for its names or for a name it does not hold, so `import fedkd` never runs a plugin and
every reader of the registry (validation, the CLI, sweeps, reports) sees them. An entry point
names an object (registered under the entry point's name) or a module that registers that
name itself; one that fails to load is a one-line PluginError naming it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Generic, TypeVar

from fedkd.errors import ConfigError, PluginError

T = TypeVar("T")


def plugin_group(kind: str) -> str:
    """The entry-point group plugins of ``kind`` are declared in, e.g. fedkd.algorithms."""
    return f"fedkd.{kind}s"


def installed_plugins(kind: str) -> list[EntryPoint]:
    """The entry points installed packages declare for ``kind``, by name."""
    return sorted(entry_points(group=plugin_group(kind)), key=lambda ep: ep.name)


class Registry(Generic[T]):
    def __init__(self, kind: str, plugins: type | None = None) -> None:
        """``plugins``: the type a plugin's object must have (None: this kind takes no plugins)."""
        self.kind = kind
        self._items: dict[str, T] = {}
        self._plugin_type = plugins
        self._plugins: dict[str, str] = {}  # name -> entry point value, of the plugins loaded
        self._loaded = plugins is None  # every installed plugin registered, or none to load
        self._loading = False  # this thread is loading them (a plugin may ask the registry)
        self._lock = threading.RLock()  # clients on threads wait for one load

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        if name not in self._items:
            self.load_plugins()
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        self.load_plugins()
        return sorted(self._items)

    def plugin_names(self) -> list[str]:
        """The names installed plugins registered (loading them first)."""
        self.load_plugins()
        return sorted(self._plugins)

    def ordered(self) -> list[str]:
        """The names in registration order (built-ins as their modules register them, then the
        installed plugins by name): for readers whose order is part of an output (CSV columns)."""
        self.load_plugins()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self.load_plugins()
        return name in self._items

    def load_plugins(self) -> None:
        """Register every installed plugin of this kind, once; a failure is raised again on the
        next call (the plugins loaded before it stay)."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                for ep in installed_plugins(self.kind):
                    if self._plugins.get(ep.name) != ep.value:
                        self._adopt(ep)
                self._loaded = True
            finally:
                self._loading = False

    def _adopt(self, ep: EntryPoint) -> None:
        where = f"plugin {ep.name} = {ep.value} (entry point group {plugin_group(self.kind)})"
        try:
            item = ep.load()
        except Exception as exc:  # any failure of foreign code, reported in one line
            raise PluginError(
                f"{where} failed to load: {type(exc).__name__}: {' '.join(str(exc).split())}"
            ) from exc
        if isinstance(item, ModuleType):
            if ep.name not in self._items:
                raise PluginError(f"{where}: the module registered no {self.kind} named {ep.name!r}")
        elif not isinstance(item, self._plugin_type):  # type: ignore[arg-type]
            expected = getattr(self._plugin_type, "__name__", "object")
            raise PluginError(f"{where} is a {type(item).__name__}; allowed: a {expected}, or a module")
        elif self._items.setdefault(ep.name, item) is not item:
            raise PluginError(f"{where}: {self.kind} {ep.name!r} exists already; allowed: a new name")
        self._plugins[ep.name] = ep.value
