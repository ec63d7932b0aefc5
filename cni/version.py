"""Spec versions this plugin speaks, and which verbs each one allows."""

from __future__ import annotations

from .client import SUPPORTED_VERSIONS as SUPPORTED_VERSIONS  # the lean client answers VERSION
from .errors import INCOMPATIBLE_VERSION, CniError

LATEST = SUPPORTED_VERSIONS[-1]

# The first spec version that defines each verb (CHECK came with 0.4.0, GC/STATUS with 1.1.0).
VERB_SINCE = {"ADD": "0.3.0", "DEL": "0.3.0", "CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}


def parse(version: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(p) for p in version.split("."))
    except (AttributeError, ValueError):
        raise CniError(INCOMPATIBLE_VERSION, f"malformed cniVersion {version!r}") from None
    if len(parts) != 3:
        raise CniError(INCOMPATIBLE_VERSION, f"malformed cniVersion {version!r}")
    return parts  # type: ignore[return-value]


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def require_supported(version: str, verb: str) -> None:
    """Code 1 for a version we do not speak, or one whose spec has no such verb."""
    if version not in SUPPORTED_VERSIONS:
        parse(version)
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"cniVersion {version} is not supported",
            f"supported: {', '.join(SUPPORTED_VERSIONS)}",
        )
    since = VERB_SINCE.get(verb)
    if since and not at_least(version, since):
        raise CniError(INCOMPATIBLE_VERSION, f"{verb} needs cniVersion >= {since}, config has {version}")


def version_result(requested: str | None) -> dict:
    """The VERSION verb's answer: our versions, labelled with the version the caller asked in."""
    cni_version = requested if requested in SUPPORTED_VERSIONS else LATEST
    return {"cniVersion": cni_version, "supportedVersions": list(SUPPORTED_VERSIONS)}
