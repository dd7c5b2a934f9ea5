"""The plugin manager and the component registry it fills.

Built-ins and third-party packages register the same way (:mod:`icezoo.core.hookspecs`): a plugin
module's component classes are registered by being defined there (:func:`defined_components`), and
``icezoo_components`` may add classes defined elsewhere. Names are looked up normalised (case,
``-``/``_``); a miss says "did you mean"; two providers of one (kind, name) is an error that names
both. ``ICEZOO_DISABLE_PLUGINS=a,b`` blocks plugins by name; ``ICEZOO_NO_AUTOLOAD=1`` skips the
entry points (tests use it). The pipeline and study files the plugins ship are collected here too,
and read by :mod:`icezoo.core.pipelines` and :mod:`icezoo.engine.studies`.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import importlib.metadata as metadata
import os
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, Iterable

import pluggy

from icezoo.core import hookspecs
from icezoo.core.components import KINDS, Component
from icezoo.core.errors import IcezooError
from icezoo.core.names import did_you_mean, normalise
from icezoo.core.pipelines import Pipelines

ENTRY_POINT_GROUP = "icezoo"
DISABLE_ENV = "ICEZOO_DISABLE_PLUGINS"
NO_AUTOLOAD_ENV = "ICEZOO_NO_AUTOLOAD"


@dataclass(frozen=True)
class ComponentSpec:
    """A registered component class and who provides it."""

    cls: type[Component]
    plugin: str
    package: str
    version: str

    @property
    def kind(self) -> str:
        return self.cls.kind

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def provider(self) -> str:
        return f"{self.package} {self.version}"


@dataclass
class Registry:
    """The registered components and data formats (looked up here), and what the plugins ship for other
    modules to read: the named pipelines (resolved by :mod:`icezoo.core.pipelines`) and the study files."""

    components: dict[tuple[str, str], ComponentSpec] = field(default_factory=dict)
    pipelines: Pipelines = field(default_factory=Pipelines)  # read by icezoo.core.pipelines
    plugins: dict[str, str] = field(default_factory=dict)  # plugin name -> package
    #: (kind, normalised former name) -> (kind, normalised name) of the component that declares it
    aliases: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    study_files: list[str] = field(default_factory=list)  # read by icezoo.engine.studies
    formats: dict[str, type] = field(default_factory=dict)  # format name -> data-source class
    format_plugins: dict[str, str] = field(default_factory=dict)  # format name -> providing package

    def add_format(self, cls: type, plugin: str, package: str) -> None:
        """A data-source class (``icezoo_formats``): it must name its format and detect paths."""
        name = getattr(cls, "format", "")
        if not isinstance(cls, type) or not name or not callable(getattr(cls, "detect", None)):
            raise IcezooError(f"plugin {plugin} ({package}): {getattr(cls, '__name__', cls)!r} is not a data source "
                              f"(a class with a 'format' name and a detect(path) method)")
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        if missing:
            raise IcezooError(f"plugin {plugin} ({package}): format class {cls.__name__} ('{name}') does not implement "
                              f"{', '.join(missing)}")
        if name in self.formats:
            raise IcezooError(f"format '{name}' is provided twice: by {self.format_plugins[name]} and by {package} "
                              f"(plugin {plugin}); block one with {DISABLE_ENV}")
        self.formats[name] = cls
        self.format_plugins[name] = package

    def with_pipelines(self, pipelines: Pipelines) -> "Registry":
        """The same components holding ``pipelines`` instead (a ``--pipeline-file`` laid over the registered ones)."""
        return replace(self, pipelines=pipelines)

    # ------------------------------------------------------------------ components
    def add_component(self, cls: type[Component], plugin: str, package: str, version: str) -> None:
        if cls.kind not in KINDS or not isinstance(cls, type) or not issubclass(cls, KINDS[cls.kind]):
            raise IcezooError(
                f"plugin {plugin} ({package}): {getattr(cls, '__name__', cls)!r} is not a component "
                f"(kind must be one of {', '.join(KINDS)} and the class a subclass of its base)"
            )
        if not cls.name:
            raise IcezooError(f"plugin {plugin} ({package}): component {cls.__name__} has no name")
        missing = cls.missing_methods()
        if missing:
            raise IcezooError(
                f"plugin {plugin} ({package}): {cls.kind} class {cls.__name__} ('{cls.name}') does not implement "
                f"{', '.join(m + '()' for m in missing)} (abstract in {KINDS[cls.kind].__name__})"
            )
        key = (cls.kind, normalise(cls.name))
        for name in (cls.name, *cls.aliases):
            taken = (cls.kind, normalise(name))
            if taken in self.components or taken in self.aliases:
                other = self.components[self.aliases.get(taken, taken)]
                raise IcezooError(
                    f"{cls.kind} '{name}' is provided twice: by {other.package} (plugin {other.plugin}) "
                    f"and by {package} (plugin {plugin}); block one with {DISABLE_ENV}"
                )
        self.components[key] = ComponentSpec(cls, plugin, package, version)
        self.aliases.update({(cls.kind, normalise(alias)): key for alias in cls.aliases})

    def get(self, kind: str, name: str) -> ComponentSpec:
        if kind not in KINDS:
            raise IcezooError(f"unknown kind '{kind}' (kinds: {', '.join(KINDS)})")
        key = (kind, normalise(name))
        key = self.aliases.get(key, key)
        if key in self.components:
            return self.components[key]
        names = [spec.name for (k, _), spec in self.components.items() if k == kind]
        hint = did_you_mean(name, names)
        listing = "" if hint else f" (known: {', '.join(sorted(names)) or 'none'})"
        raise IcezooError(f"unknown {kind} '{name}'{hint}{listing}")

    def list(self, kind: str | None = None, pattern: str | None = None) -> list[ComponentSpec]:
        """Specs in kind order then name; ``pattern`` is an fnmatch glob on the name, an alias or the kind."""
        order = list(KINDS)
        out = [
            spec for spec in self.components.values()
            if (kind is None or spec.kind == kind)
            and (pattern is None or fnmatch.fnmatch(spec.kind, pattern)
                 or any(fnmatch.fnmatch(normalise(n), normalise(pattern)) for n in (spec.name, *spec.cls.aliases)))
        ]
        return sorted(out, key=lambda s: (order.index(s.kind), normalise(s.name)))


def defined_components(module: ModuleType) -> list[type[Component]]:
    """The component classes ``module`` defines (not imports) and names, in definition order.

    Registering a plugin module registers these: a component is registered by being defined, with
    no list to keep. A class without a ``name`` of its own (a shared base) is left out.
    """
    return [obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Component) and obj.__module__ == module.__name__
            and vars(obj).get("name")]


def _add_components(registry: Registry, pm: pluggy.PluginManager, packages: dict[str, tuple[str, str]],
                    package_of) -> None:
    """Each plugin's components, plugins in registration order (conflicts name the earlier provider
    first): the classes a plugin module defines, then those its ``icezoo_components`` hook returns."""
    hooked = {impl.plugin_name: impl.function for impl in pm.hook.icezoo_components.get_hookimpls()}
    for plugin_name, obj in pm.list_name_plugin():
        if obj is None:  # blocked
            continue
        classes = defined_components(obj) if isinstance(obj, ModuleType) else []
        if plugin_name in hooked:
            classes += [cls for cls in hooked[plugin_name]() or () if cls not in classes]
        package, version = packages[plugin_name] if plugin_name in packages else package_of(obj)
        for cls in classes:
            registry.add_component(cls, plugin_name, package, version)


def _package_of(obj: Any, distributions: dict[str, list[str]]) -> tuple[str, str]:
    """The installed distribution (name, version) that holds ``obj``'s top-level package."""
    module = obj.__name__ if isinstance(obj, ModuleType) else type(obj).__module__
    top = module.split(".")[0]
    for dist in distributions.get(top, []):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return top, "unknown"


def build_registry(
    builtins: Iterable[str | ModuleType] = (),
    extra_plugins: Iterable[tuple[str, Any]] = (),
    autoload: bool | None = None,
    builtin_package: tuple[str, str] | None = None,
) -> Registry:
    """Make the plugin manager, register plugins, collect their components and pipeline files.

    ``builtins`` are module names or modules registered first; ``extra_plugins`` are
    ``(name, plugin_object)`` pairs (tests); entry points of group ``icezoo`` load unless
    ``autoload`` is False or ``ICEZOO_NO_AUTOLOAD`` is set.
    """
    pm = pluggy.PluginManager("icezoo")
    pm.add_hookspecs(hookspecs)
    blocked = {normalise(b) for b in os.environ.get(DISABLE_ENV, "").split(",") if b.strip()}
    for name in blocked:
        pm.set_blocked(name)
    packages: dict[str, tuple[str, str]] = {}
    # packages_distributions() walks every installed distribution's file list (about a second on a
    # busy machine): once per registry, and only for a plugin whose package is not known otherwise
    distributions = functools.cache(metadata.packages_distributions)

    def package_of(obj: Any) -> tuple[str, str]:
        return _package_of(obj, distributions())

    for module in builtins:
        name = module if isinstance(module, str) else module.__name__
        if normalise(name) in blocked or normalise(name.rsplit(".", 1)[-1]) in blocked:
            continue
        obj = importlib.import_module(module) if isinstance(module, str) else module
        pm.register(obj, name=name)
        packages[name] = builtin_package or package_of(obj)

    if autoload is None:
        autoload = not os.environ.get(NO_AUTOLOAD_ENV)
    if autoload:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if normalise(ep.name) in blocked or pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken third-party plugin must not take the tool down silently
                raise IcezooError(f"plugin '{ep.name}' ({ep.value}) failed to load: {exc}") from None
            pm.register(obj, name=ep.name)
            dist = ep.dist
            packages[ep.name] = (dist.name, dist.version) if dist is not None else package_of(obj)

    for name, obj in extra_plugins:
        if normalise(name) in blocked:
            continue
        pm.register(obj, name=name)
        packages[name] = package_of(obj)

    registry = Registry()
    for plugin_name, _ in pm.list_name_plugin():
        registry.plugins[plugin_name] = packages.get(plugin_name, ("unknown", ""))[0]
    _add_components(registry, pm, packages, package_of)
    for impl in pm.hook.icezoo_pipeline_files.get_hookimpls():
        for path in impl.function() or ():
            registry.pipelines.add_file(path)
    for impl in pm.hook.icezoo_formats.get_hookimpls():
        package = packages.get(impl.plugin_name, ("unknown", ""))[0]
        for cls in impl.function() or ():
            registry.add_format(cls, impl.plugin_name, package)
    for impl in pm.hook.icezoo_study_files.get_hookimpls():
        registry.study_files.extend(str(path) for path in impl.function() or ())
    return registry
