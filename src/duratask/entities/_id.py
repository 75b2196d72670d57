"""Entity ids: ``@name@key``."""

from __future__ import annotations

from dataclasses import dataclass

from duratask.backends.base import split_entity_id


@dataclass(frozen=True, slots=True, order=True)
class EntityInstanceId:
    """Identifies one durable entity: its ``name`` (case-insensitive, kept lower-case; no
    ``@``) and its ``key``. ``str(id)`` is ``@name@key``, the form stores and the Durable Task
    Framework use; :meth:`parse` reads it back. Ids sort by that form: the global lock order.

    Attributes:
        name: The entity's name, lower-case.
        key: Which entity of that name.
    """

    name: str
    key: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "@" in self.name:
            raise ValueError(
                f"entity name must be a non-empty string without '@', not {self.name!r}"
            )
        if not isinstance(self.key, str):
            raise ValueError(f"entity key must be a string, not {self.key!r}")
        object.__setattr__(self, "name", self.name.lower())

    def __str__(self) -> str:
        return f"@{self.name}@{self.key}"

    @classmethod
    def parse(cls, text: str) -> EntityInstanceId:
        """The id written as ``@name@key``; ValueError naming that form otherwise."""
        if not isinstance(text, str):
            raise ValueError(f"an entity id is '@name@key' or an EntityInstanceId, not {text!r}")
        return cls(*split_entity_id(text))

    @classmethod
    def of(cls, value: EntityInstanceId | str) -> EntityInstanceId:
        """``value`` as an id: an id as it is, a string parsed as ``@name@key``."""
        return value if isinstance(value, EntityInstanceId) else cls.parse(value)
