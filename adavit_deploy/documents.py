"""The JSON documents adavit-deploy writes and reads back as untrusted input.

A bundle's ``manifest.json``, its ``tactics.json``, the TensorRT
``engines.json`` and the bench and serving reports are written by one writer
(kind and version first, atomically) and read by one reader: right kind, right version, then
every field checked against the type hints of the dataclass it builds,
whose own ``__post_init__`` checks values. Anything
wrong is one line naming the file, the field and what to do about it, never
a traceback or a silently misread value.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from .errors import AdaViTDeployError, ConfigError


@dataclass(frozen=True)
class Document:
    """One kind of document: its name in errors (``malformed <name>``), its title in schema errors,
    its schema and version, what to do about a bad one, and the error class it raises."""

    name: str
    title: str
    schema: str
    version: int
    fix: str
    error: type[AdaViTDeployError]

    def dumps(self, body: Any) -> str:
        """``body`` (a dataclass, or a dict of fields) as this document's JSON: kind and version first."""
        fields = dataclasses.asdict(body) if dataclasses.is_dataclass(body) else dict(body)
        return json.dumps({"schema": self.schema, "schema_version": self.version, **fields}, indent=2) + "\n"

    def write(self, path: str | Path, body: Any, what: str) -> Path:
        """``dumps(body)`` written atomically to ``path``; ``what`` names it in errors (``--json``)."""
        from .atomic import atomic_file

        with atomic_file(path, what) as tmp:
            tmp.write_text(self.dumps(body))
        return Path(path)

    def read(self, text: str | bytes, where: str, hint: Any, derived: tuple[str, ...] = ()) -> Any:
        """``text`` parsed into ``hint`` (its fields but ``schema``, ``schema_version`` and the
        ``derived`` ones, which are written for readers and recomputed here)."""
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, an int past Python's digit limit, nested too deep
            raise self.error(f"{where}: malformed {self.name} (not UTF-8 JSON: {e}): {self.fix}") from None
        if not isinstance(d, dict):
            raise self.error(f"{where}: malformed {self.name} (a JSON {type(d).__name__}, not an object): {self.fix}")
        what = f"{self.title} ({where})"
        if d.get("schema") != self.schema:
            raise self.error(f"not an adavit-deploy {what}")
        if d.get("schema_version") != self.version:
            raise self.error(f"{what} version {d.get('schema_version')} is not {self.version}: {self.fix}")
        fields = {k: v for k, v in d.items() if k not in ("schema", "schema_version", *derived)}
        return self.parse(hint, fields, "", where)

    def parse(self, hint: Any, value: Any, at: str, where: str) -> Any:
        """``value`` (parsed JSON) checked against type ``hint`` and built into it (dataclasses included)."""

        def wrong(what: str) -> AdaViTDeployError:
            shown = json.dumps(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            return self.error(f"{where}: malformed {self.name}: {at or 'top level'} should be {what}, got {shown}: {self.fix}")

        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint is Any:
            return value
        if origin in (Union, types.UnionType):
            for option in args:
                if _plain(option, value):
                    return value
            for option in args:
                try:
                    return self.parse(option, value, at, where)
                except self.error:
                    pass
            raise wrong(" or ".join(getattr(a, "__name__", str(a)) for a in args))
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise wrong(f"an object ({hint.__name__})")
            hints, known = _fields(hint)
            unknown = sorted(set(value) - set(known))
            missing = [n for n, f in known.items() if n not in value and f.default is f.default_factory is dataclasses.MISSING]
            if unknown or missing:
                raise self.error(
                    f"{where}: malformed {self.name}: {at or 'top level'} "
                    + (f"has unknown keys {unknown}" if unknown else f"lacks {missing}")
                    + f": {self.fix}"
                )
            kwargs = {k: self.parse(hints[k], v, f"{at}.{k}".lstrip("."), where) for k, v in value.items()}
            try:
                return hint(**kwargs)
            except ConfigError as e:
                raise self.error(f"{where}: {at or self.name}: {e}: {self.fix}") from None
        if origin in (list, tuple):
            if not isinstance(value, list):
                raise wrong("a list")
            if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
                if len(value) != len(args):
                    raise wrong(f"a list of {len(args)}")
                return tuple(self.parse(a, v, f"{at}[{i}]", where) for i, (a, v) in enumerate(zip(args, value)))
            items = [self.parse(args[0], v, f"{at}[{i}]", where) for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
        if origin is dict:
            if not isinstance(value, dict):
                raise wrong("an object")
            return {k: self.parse(args[1], v, f"{at}.{k}", where) for k, v in value.items()}
        if hint is type(None):
            if value is not None:
                raise wrong("null")
            return None
        if hint is bool:
            if not isinstance(value, bool):
                raise wrong("true or false")
            return value
        if hint in (int, float):
            ok = isinstance(value, int) or (hint is float and isinstance(value, float))
            if isinstance(value, bool) or not ok:
                raise wrong("an integer" if hint is int else "a number")
            try:
                return hint(value)
            except OverflowError:  # an integer past the largest float
                raise wrong("a number within float range") from None
        if hint is str:
            if not isinstance(value, str):
                raise wrong("a string")
            return value
        raise TypeError(f"{self.name} field type {hint!r} has no parser")  # a programming error, not bad input


@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """A dataclass's resolved type hints and init fields, once per class (a manifest has hundreds of specs)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls) if f.init}


class Saved:
    """A report that is a document: ``save`` and ``load`` through its class's ``DOCUMENT``, both ways typed."""

    DOCUMENT: typing.ClassVar[Document]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.DOCUMENT.dumps(self))

    def save(self, path: str | Path) -> Path:
        """Write the report as JSON, atomically."""
        return self.DOCUMENT.write(path, self, "--json")

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """A saved report, every field checked (one line naming the file and field if not)."""
        return cls.DOCUMENT.read(Path(path).read_bytes(), str(path), cls)


def _plain(hint: Any, value: Any) -> bool:
    """Whether ``value`` already is a JSON scalar of type ``hint`` (the cheap case of a union member)."""
    if hint is str:
        return isinstance(value, str)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return hint is type(None) and value is None
