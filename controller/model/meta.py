"""Object metadata, label selectors and status conditions shared by every model type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

EMPTY: Mapping[str, str] = MappingProxyType({})


def frozen_map(d: Mapping[str, str] | None) -> Mapping[str, str]:
    """A read-only copy of a str->str mapping."""
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True, slots=True)
class Meta:
    """The parts of ObjectMeta the controller uses."""

    kind: str
    name: str
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY, hash=False, compare=False)
    annotations: Mapping[str, str] = field(default_factory=lambda: EMPTY, hash=False, compare=False)
    generation: int = 1
    creation_timestamp: str = ""  # RFC 3339; "" sorts first
    uid: str = ""
    # the kind as the object spells it when that is not `kind` (a Cilium spelling, such
    # as CiliumLoadBalancerIPPool for a LoadBalancerIPPool); "" otherwise. Where the
    # object comes from, not what it says: two spellings of one object compare equal.
    written_kind: str = field(default="", compare=False)

    @property
    def ref(self) -> str:
        """`kind ns/name` or `kind name` for cluster-scoped objects: used in messages."""
        return f"{self.kind} {self.key}"

    @property
    def written_ref(self) -> str:
        """The object as its own API names it: `ref` with the kind as written."""
        return f"{self.written_kind or self.kind} {self.key}"

    @property
    def key(self) -> str:
        """`ns/name`, or `name` when cluster-scoped."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True, slots=True)
class Requirement:
    """One matchExpressions entry."""

    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        if self.operator == "In":
            return has and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not has or labels[self.key] not in self.values
        if self.operator == "Exists":
            return has
        return not has  # DoesNotExist


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A Kubernetes LabelSelector; an empty one matches everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )


def selects(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """A nil selector selects everything."""
    return selector is None or selector.matches(labels)


@dataclass(frozen=True, slots=True)
class Condition:
    """A standard status condition."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""
    observed_generation: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": self.observed_generation,
        }
