"""LB-IPAM service rules: which families a service wants and which services may share an IP.

Pure helpers used by the planner in `controller.desired.lbipam`.
"""

from __future__ import annotations

from controller.model.k8s import Service

SINGLE_STACK = "SingleStack"
PREFER_DUAL_STACK = "PreferDualStack"
REQUIRE_DUAL_STACK = "RequireDualStack"
WILDCARD_NAMESPACE = "*"

Port = tuple[int, str]  # (port, protocol)


def wanted_families(svc: Service) -> tuple[int, ...]:
    """IP versions to allocate, in order of preference.

    SingleStack: the first of ipFamilies (IPv4 when unset). Either dual-stack policy:
    ipFamilies in order, completed with the other family.
    """
    families = list(dict.fromkeys(svc.ip_families)) or [4]
    if svc.ip_family_policy not in (PREFER_DUAL_STACK, REQUIRE_DUAL_STACK):
        return (families[0],)
    if len(families) == 1:
        families.append(6 if families[0] == 4 else 4)
    return tuple(families)


def family_rank(svc: Service, version: int) -> int:
    """Position of a version in the service's family order (unknown ones last)."""
    families = wanted_families(svc)
    return families.index(version) if version in families else len(families)


def ports_of(svc: Service) -> set[Port]:
    return {(p.port, p.protocol) for p in svc.ports}


def allows(svc: Service, namespace: str) -> bool:
    allowed = svc.sharing_cross_namespace
    return namespace == svc.meta.namespace or namespace in allowed or WILDCARD_NAMESPACE in allowed


def share_conflict(
    a: Service, b: Service, *, ports: bool = True, namespaces: bool = True
) -> str | None:
    """Why services `a` and `b` may not share one IP; None when they may.

    `ports=False` / `namespaces=False` leave that rule to the caller (see `Holders`).
    """
    if a.sharing_key is None or a.sharing_key != b.sharing_key:
        return f"sharing keys differ ({a.sharing_key or 'none'} vs {b.sharing_key or 'none'})"
    overlap = sorted(ports_of(a) & ports_of(b)) if ports else []
    if overlap:
        port, proto = overlap[0]
        return f"both use port {port}/{proto}"
    if a.external_traffic_policy != b.external_traffic_policy:
        return (
            f"externalTrafficPolicy differs ({a.external_traffic_policy} "
            f"vs {b.external_traffic_policy})"
        )
    if a.external_traffic_policy == "Local" and (
        not a.selector or dict(a.selector) != dict(b.selector)
    ):
        return "externalTrafficPolicy Local needs equal, non-empty selectors"
    if namespaces and not (allows(a, b.meta.namespace) and allows(b, a.meta.namespace)):
        return namespace_conflict(a, b)
    return None


def namespace_conflict(a: Service, b: Service) -> str:
    """The message for two services whose namespaces do not both allow each other."""
    return (
        f"namespaces {a.meta.namespace} and {b.meta.namespace} do not both allow "
        "each other in lbipam.rackroute.io/sharing-cross-namespace"
    )


def same_key(a: Service, b: Service) -> bool:
    """Both services carry the same sharing key."""
    return a.sharing_key is not None and a.sharing_key == b.sharing_key
