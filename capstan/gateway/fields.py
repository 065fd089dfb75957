"""A strict reader of TRTC request bodies: every field is either read (and so honoured) or refused by
name. Pure: no I/O."""

from __future__ import annotations

from typing import Any

from capstan.gateway.errors import ApiError, invalid, missing, unsupported

_TYPES: dict[type, str] = {int: "an integer", str: "a string", bool: "a boolean", float: "a number",
                           list: "an array", dict: "an object"}


def _is(value: Any, typ: type) -> bool:
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, typ)


class Obj:
    """One JSON object of the request, at `path` (e.g. ``RecordParams``)."""

    def __init__(self, data: Any, path: str = "") -> None:
        if not isinstance(data, dict):
            raise invalid(path or "body", "must be a JSON object")
        self.data, self.path, self.read = data, path, set[str]()

    def at(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def get(self, name: str, typ: type, *, required: bool = False, default: Any = None) -> Any:
        self.read.add(name)
        value = self.data.get(name)
        if value is None:
            if required:
                raise missing(self.at(name))
            return default
        if typ is int and isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)  # the SCF bodies' Int fields arrive as strings from some gateways
        if not _is(value, typ):
            raise invalid(self.at(name), f"must be {_TYPES[typ]}")
        return value

    def integer(self, name: str, *, lo: int | None = None, hi: int | None = None, required: bool = False,
            default: int | None = None) -> int | None:
        value = self.get(name, int, required=required, default=None)
        if value is None:
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise invalid(self.at(name), f"must be in [{lo}, {hi}], not {value}")
        return int(value)

    def text(self, name: str, *, required: bool = False, default: str | None = None) -> str | None:
        value = self.get(name, str, required=required, default=None)
        if value is None or (value == "" and not required):
            return default
        if value == "":
            raise missing(self.at(name))
        return str(value)

    def choice(self, name: str, mapping: dict[Any, Any], *, default: Any = None, why: str = "") -> Any:
        """A field whose values map to Capstan's; a TRTC value with no Capstan meaning is refused."""
        self.read.add(name)
        value = self.data.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or value not in mapping:
            known = ", ".join(repr(k) for k in mapping)
            if isinstance(value, int | str):
                raise unsupported(f"{self.at(name)}={value!r}", why or f"Capstan takes {known}")
            raise invalid(self.at(name), f"must be one of {known}")
        return mapping[value]

    def only(self, name: str, *allowed: Any, why: str) -> None:
        """A TRTC field Capstan honours only at the values given (its own behaviour); none: never."""
        self.read.add(name)
        value = self.data.get(name)
        if value is None:
            return
        if not any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in allowed):
            raise unsupported(f"{self.at(name)}={value!r}" if isinstance(value, int | str) else self.at(name), why)

    def obj(self, name: str, *, required: bool = False) -> Obj | None:
        value = self.get(name, dict, required=required)
        return Obj(value, self.at(name)) if value is not None else None

    def objs(self, name: str, *, max_items: int) -> list[Obj]:
        items = self.get(name, list, default=[])
        if len(items) > max_items:
            raise invalid(self.at(name), f"at most {max_items} items, not {len(items)}")
        return [Obj(item, f"{self.at(name)}[{i}]") for i, item in enumerate(items)]

    def strs(self, name: str, *, max_items: int) -> list[str]:
        items = self.get(name, list, default=[])
        if len(items) > max_items:
            raise invalid(self.at(name), f"at most {max_items} items, not {len(items)}")
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise invalid(f"{self.at(name)}[{i}]", "must be a string")
        return list(items)

    def done(self) -> None:
        """Refuse every field that was not read: Capstan does not know it, so cannot honour it."""
        for name in self.data:
            if name not in self.read and self.data[name] is not None:
                raise unsupported(self.at(name), "no such field in Capstan's mapping")


def require(cond: bool, err: ApiError) -> None:
    if not cond:
        raise err
