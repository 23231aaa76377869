"""docker/compose.yaml and docker/Dockerfile as the tests read them, without Docker.

The compose file's services run the node image with volumes; the tests run the same programs on
this machine with those volumes replaced by directories. :func:`host_paths` maps each path a
service sees onto the directory the setup job (``docker/federation_setup.py``) writes for the
same volume, so a test gives a process the very environment compose would give it.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
PLAN_FILE = DOCKER / "federation.toml"
#: Where the setup services mount the volumes (their ``--root``).
SETUP_ROOT = "/setup"
SETUP_SERVICES = ("setup-passwords", "setup")


def load_compose() -> dict[str, Any]:
    """The compose file, with YAML anchors and merge keys resolved (as Compose does)."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text("utf-8"))
    return document


def setup_module() -> ModuleType:
    """``docker/federation_setup.py``, imported as the setup job runs it."""
    if "federation_setup" in sys.modules:
        return sys.modules["federation_setup"]
    spec = importlib.util.spec_from_file_location(
        "federation_setup", DOCKER / "federation_setup.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["federation_setup"] = module
    spec.loader.exec_module(module)
    return module


def image_environment() -> dict[str, str]:
    """The ``ENV`` of the node image's final stage (without PATH)."""
    envs = dict(DockerfileParser(str(DOCKERFILE)).envs)
    envs.pop("PATH", None)
    return envs


@dataclass(frozen=True)
class Mount:
    """One volume or bind mount of a service."""

    source: str
    target: str
    read_only: bool


def mounts(service: Mapping[str, Any]) -> list[Mount]:
    """A service's mounts, short (``src:dst[:ro]``) or long syntax."""
    found = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            parts = entry.split(":")
            found.append(Mount(parts[0], parts[1], len(parts) > 2 and "ro" in parts[2]))
        else:
            found.append(
                Mount(entry["source"], entry["target"], bool(entry.get("read_only", False)))
            )
    return found


def setup_mount_of(compose: Mapping[str, Any], volume: str) -> str | None:
    """Where a setup service mounts ``volume`` (under /setup), or None."""
    for name in SETUP_SERVICES:
        for mount in mounts(compose["services"][name]):
            if mount.source == volume:
                return mount.target
    return None


def host_paths(compose: Mapping[str, Any], service: str, root: Path) -> dict[str, Path]:
    """Container path → the directory under ``root`` the setup job writes for that volume."""
    mapping = {}
    for mount in mounts(compose["services"][service]):
        setup_target = setup_mount_of(compose, mount.source)
        if setup_target is not None:
            mapping[mount.target] = root / Path(setup_target).relative_to(SETUP_ROOT)
    return mapping


def translate(value: str, mapping: Mapping[str, Path]) -> str:
    """``value`` with a mapped container path prefix replaced by its directory."""
    for container, host in sorted(mapping.items(), key=lambda item: -len(item[0])):
        if value == container or value.startswith(container + "/"):
            return str(host) + value[len(container) :]
    return value


def service_environment(
    compose: Mapping[str, Any], service: str, root: Path | None = None
) -> dict[str, str]:
    """The environment a service's container gets: the image's ``ENV``, then the service's
    ``environment``; with ``root``, its paths mapped onto the setup job's directories."""
    environment = {**image_environment()}
    environment.update(
        {key: str(value) for key, value in compose["services"][service]["environment"].items()}
    )
    if root is None:
        return environment
    mapping = host_paths(compose, service, root)
    return {key: translate(value, mapping) for key, value in environment.items()}
