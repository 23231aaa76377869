"""docker/: what can be checked without a Docker engine (this machine has none).

* the compose file is valid under the Compose Specification's JSON schema (vendored);
* the build context is complete: everything the Dockerfile copies exists and survives the
  .dockerignore rules (as Docker applies them), every package pyproject.toml builds is copied,
  the entry point is executable;
* every service's configuration parses with the program's own loader: each node's environment
  and settings file with ``Settings.from_env``, its federation file (rendered by the setup job's
  own code, with test keys) with ``load_federation``, each adapter's with the adapters' parser;
* images are pinned, no secret is in the Dockerfile or the compose file, the CA key volume is
  mounted by the setup job alone, the image runs as an unprivileged user;
* the compose file and the setup job's plan (docker/federation.toml) describe the same nodes,
  halls and volumes.

The setup job itself runs for real in tests/e2e/test_docker_setup.py.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shlex
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from docker.utils.build import PatternMatcher
from dockerfile_parse import DockerfileParser
from jsonschema import Draft7Validator

from adapters.cli import build_parser as adapter_parser
from hub.bootstrap import witness_name
from hub.pki import init_ca
from hub.relay.config import load_federation
from hub.settings import Settings
from ledger import Signer
from ledger.cosignature import Cosigner
from tests.harness.compose import (
    DOCKERFILE,
    PLAN_FILE,
    ROOT,
    SETUP_ROOT,
    SETUP_SERVICES,
    host_paths,
    image_environment,
    load_compose,
    mounts,
    service_environment,
    setup_module,
    setup_mount_of,
)

SCHEMA_DIR = ROOT / "tests" / "data" / "compose-spec"
SCHEMA_SHA256 = "1f91e091f16b2dd50ab8860e02bb391d22df553d91c145eacedb1b6eff9c3f0e"

setup = setup_module()
COMPOSE = load_compose()
SERVICES: dict[str, Any] = COMPOSE["services"]
PLAN = setup.load_plan(PLAN_FILE)
NODES = {node.name: node for node in PLAN.nodes}
HALLS = {hall.hall_id: (node, hall) for node in PLAN.nodes for hall in node.halls}
ADAPTER_SERVICES = sorted(
    name for name, service in SERVICES.items() if service.get("command", [""])[0] == "adapter"
)
NODE_IMAGE = "tongban/node:"


def uses_node_image(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith(NODE_IMAGE)


# ------------------------------------------------------------------------- the specification


def test_the_vendored_schema_is_the_one_its_readme_names() -> None:
    schema = SCHEMA_DIR / "compose-spec.json"
    assert hashlib.sha256(schema.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert SCHEMA_SHA256 in (SCHEMA_DIR / "README.md").read_text()


def test_the_compose_file_is_valid_under_the_compose_specification() -> None:
    schema = json.loads((SCHEMA_DIR / "compose-spec.json").read_text())
    Draft7Validator.check_schema(schema)
    errors = sorted(Draft7Validator(schema).iter_errors(COMPOSE), key=lambda e: list(e.path))
    assert [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors] == []


def test_the_schema_check_catches_a_mistake() -> None:
    # So the test above could fail: a misspelt key is refused.
    schema = json.loads((SCHEMA_DIR / "compose-spec.json").read_text())
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["node-hunan"]["healthcheck"]["intervall"] = "5s"
    assert not Draft7Validator(schema).is_valid(broken)


# ------------------------------------------------------------------------- the build context


def _dockerfile() -> DockerfileParser:
    return DockerfileParser(str(DOCKERFILE))


def _copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY/ADD from the build context (not --from a stage)."""
    found = []
    for instruction in _dockerfile().structure:
        if instruction["instruction"] not in ("COPY", "ADD"):
            continue
        words = shlex.split(instruction["value"])
        if any(word.startswith("--from=") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        found.append((paths[:-1], paths[-1]))
    return found


def _build_context() -> Path:
    build = SERVICES["node-hunan"]["build"]
    assert build["dockerfile"] == "docker/Dockerfile"
    return (ROOT / "docker" / build["context"]).resolve()


def _ignored(context: Path) -> PatternMatcher:
    lines = (context / ".dockerignore").read_text().splitlines()
    return PatternMatcher([line.strip() for line in lines if line.strip() and line[0] != "#"])


def _tracked_files(directory: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--", str(directory.relative_to(ROOT))],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if line]


def test_every_file_the_dockerfile_copies_is_in_the_build_context() -> None:
    context = _build_context()
    assert context == ROOT
    ignored = _ignored(context)
    sources = [source for sources, _ in _copies() for source in sources]
    assert sources, "the Dockerfile copies nothing?"
    problems = []
    for source in sources:
        path = context / source
        if not path.exists():
            problems.append(f"{source}: missing")
            continue
        # Every tracked file under a copied directory reaches the build (not ignored).
        files = _tracked_files(path) if path.is_dir() else [source]
        problems += [
            f"{name}: excluded by .dockerignore" for name in files if ignored.matches(name)
        ]
    assert problems == []


def test_the_dockerignore_check_sees_an_exclusion() -> None:
    # The matcher is Docker's rules, not a guess: a source under an ignored pattern is caught.
    matcher = PatternMatcher(["hub", "!hub/keep.py", "**/*.key"])
    assert matcher.matches("hub/domain/case.py")
    assert not matcher.matches("hub/keep.py")
    assert matcher.matches("adapters/x/hall.key")


def test_the_image_builds_every_package_pyproject_installs() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = {Path(source).parts[0] for sources, _ in _copies() for source in sources}
    assert pyproject["project"]["readme"] in copied  # `pip install .` reads it
    assert "pyproject.toml" in copied
    where = pyproject["tool"]["setuptools"]["packages"]["find"]["where"]
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        homes = [d for d in where if (ROOT / d / package / "__init__.py").exists()]
        assert homes, f"package {package} not found"
        top = Path(homes[0], package).parts[0]
        assert top in copied, f"package {package} ({top}/) is not copied into the image"


def test_the_entrypoint_and_the_helpers_are_copied_and_executable() -> None:
    copies = dict((tuple(sources), destination) for sources, destination in _copies())
    assert copies[("docker/entrypoint.sh",)] == "/usr/local/bin/tongban-entrypoint"
    entrypoint = ROOT / "docker" / "entrypoint.sh"
    assert entrypoint.stat().st_mode & stat.S_IXUSR
    # The mode the image gets is the one in git (a fresh clone has no other).
    staged = subprocess.run(["git", "ls-files", "-s", "docker/entrypoint.sh"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert staged.startswith("100755 ")
    assert json.loads(_instruction("ENTRYPOINT")) == ["tongban-entrypoint"]
    helpers = next(d for s, d in copies.items() if "docker/federation_setup.py" in s)
    for service in SERVICES.values():
        for word in [
            *service.get("entrypoint", []),
            *service.get("healthcheck", {}).get("test", []),
        ]:
            if str(word).startswith("/opt/tongban/docker/"):
                assert str(word).startswith(helpers), word
                copied = {Path(s).name for sources in copies for s in sources}
                assert Path(word).name in copied, f"{word} is not copied into the image"


def _instruction(name: str) -> str:
    values = [i["value"] for i in _dockerfile().structure if i["instruction"] == name]
    return str(values[-1])


# ------------------------------------------------------------------------- pinned images


def test_every_image_is_pinned_by_version() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    images = {name: str(service["image"]) for name, service in SERVICES.items()}
    assert set(images) == set(SERVICES), "a service without an image name"
    bases = _dockerfile().parent_images
    for reference in [*images.values(), *bases]:
        name, _, tag = reference.partition("@")[0].rpartition(":")
        assert name and "/" not in tag, f"{reference}: no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{reference}: not a version"
    for name, reference in images.items():
        if uses_node_image(SERVICES[name]):
            assert reference == f"{NODE_IMAGE}{pyproject['project']['version']}"
            assert SERVICES[name]["build"]["dockerfile"] == "docker/Dockerfile"


def test_the_image_runs_as_an_unprivileged_user_with_a_fixed_uid() -> None:
    assert _instruction("USER") == "tongban"
    assert "--uid 10001" in _instruction("RUN").replace("\n", " ")
    # Only the setup jobs start as root, and they drop to that user (--as-user) at once.
    for name, service in SERVICES.items():
        if not uses_node_image(service):
            continue
        if name in SETUP_SERVICES:
            assert service["user"] == "0:0"
            assert service["command"][-2:] == ["--as-user", "tongban"]
        else:
            assert "user" not in service, name


# ------------------------------------------------------------------------- secrets


_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|KEYS$|CREDENTIAL", re.IGNORECASE)


def test_no_secret_is_in_the_dockerfile() -> None:
    for instruction in _dockerfile().structure:
        if instruction["instruction"] in ("ENV", "ARG", "LABEL"):
            assert not _SECRET_NAME.search(instruction["value"]), instruction["value"]
    for sources, _ in _copies():
        for source in sources:
            assert not re.search(r"\.(key|pem)$|secret", source), source
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert {"**/*.key", "**/*.pem", "**/secrets"} <= set(ignore)


def test_no_secret_is_in_the_compose_file() -> None:
    text = (ROOT / "docker" / "compose.yaml").read_text()
    assert not re.search(r"postgres(ql)?://[^/\s]*:[^/\s]*@", text), "a password in a URL"
    for name, service in SERVICES.items():
        for variable, value in (service.get("environment") or {}).items():
            if _SECRET_NAME.search(variable):
                # Only the names of files in volumes: the secrets themselves are in the files.
                assert variable.endswith("_FILE") or variable.startswith("TONGBAN_ADAPTER_"), (
                    f"{name}: {variable}"
                )
                assert str(value).startswith("/"), f"{name}: {variable} is not a file"
        assert "TONGBAN_DATABASE_URL" not in (service.get("environment") or {}), name
        assert "TONGBAN_CIPHER_KEYS" not in (service.get("environment") or {}), name


def test_the_ca_keys_volume_is_mounted_by_the_setup_job_alone() -> None:
    ca_volume = next(m.source for m in mounts(SERVICES["setup"]) if m.target == f"{SETUP_ROOT}/ca")
    layout = setup.Layout(Path(SETUP_ROOT))
    for node in PLAN.nodes:
        assert layout.ca(node).is_relative_to(f"{SETUP_ROOT}/ca")  # every CA is in that volume
    for name, service in SERVICES.items():
        if name != "setup":
            assert ca_volume not in {m.source for m in mounts(service)}, name
    # And nothing else the job writes is under /setup/ca (so no other volume holds a CA key).
    points = layout.mount_points(PLAN)
    assert [p for p in points if p.is_relative_to(f"{SETUP_ROOT}/ca")] == [Path(SETUP_ROOT, "ca")]


# ------------------------------------------------------------------------- broker, databases


def test_kafka_runs_in_kraft_mode_with_a_data_volume_and_a_healthcheck() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    environment = kafka["environment"]
    assert "controller" in environment["KAFKA_PROCESS_ROLES"]
    assert not [v for v in environment if "ZOOKEEPER" in v]
    cluster_id = base64.urlsafe_b64decode(environment["CLUSTER_ID"].split()[0] + "==")
    assert len(cluster_id) == 16  # what kafka-storage format accepts
    assert [m.target for m in mounts(kafka)] == [environment["KAFKA_LOG_DIRS"]]
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])
    # Topics are made on first use (the broker's default), with 6 partitions.
    assert "KAFKA_AUTO_CREATE_TOPICS_ENABLE" not in environment
    assert environment["KAFKA_NUM_PARTITIONS"] == 6
    bootstrap = [f"{name}:9092" for name in ("kafka",)]
    assert list(PLAN.kafka["bootstrap"]) == bootstrap
    assert environment["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{bootstrap[0]}"


def test_each_node_has_its_own_postgresql_reachable_only_by_it_and_the_setup_job() -> None:
    layout = setup.Layout(Path(SETUP_ROOT))
    for node in PLAN.nodes:
        postgres = SERVICES[f"postgres-{node.name}"]
        assert postgres["image"].startswith("postgres:")
        assert "pg_isready" in postgres["healthcheck"]["test"]
        environment = postgres["environment"]
        assert "POSTGRES_PASSWORD" not in environment
        assert environment["POSTGRES_USER"] == node.database.user
        assert environment["POSTGRES_DB"] == node.database.dbname
        # Its password file is the one the setup job writes, in a volume both mount.
        password = Path(environment["POSTGRES_PASSWORD_FILE"])
        [volume] = [m for m in mounts(postgres) if m.target == str(password.parent)]
        assert volume.read_only
        setup_path = Path(setup_mount_of(COMPOSE, volume.source) or "") / password.name
        assert setup_path == setup.password_file(layout, node)
        # Its network is internal and joined by its node and the setup job only.
        [network] = postgres["networks"]
        assert COMPOSE["networks"][network] == {"internal": True}
        members = {n for n, s in SERVICES.items() if network in s.get("networks", [])}
        assert members == {f"postgres-{node.name}", f"node-{node.name}", "setup"}
        assert node.database.host == f"postgres-{node.name}"


# ------------------------------------------------------------------------- the nodes


def _render_node(tmp_path: Path, node: Any) -> dict[str, str]:
    """What the setup job writes for ``node`` (with test keys), and its mapped environment."""
    layout = setup.Layout(tmp_path)
    identities = {}
    for member in PLAN.nodes:
        data = layout.data(member)
        origin = member.origin
        signer = Signer.generate(origin)
        (data / "secrets").mkdir(parents=True, exist_ok=True)
        (data / "log.vkey").write_text(signer.verifier_key() + "\n")
        witness = Cosigner.generate(witness_name(origin))
        (data / "secrets" / "witness.key").write_text(witness.key_string() + "\n")
        raw = X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        (data / "secrets" / "encryption.key").write_bytes(base64.b64encode(raw) + b"\n")
        if not (layout.ca(member) / "ca.pem").exists():
            init_ca(layout.ca(member), member.name)
        identities[member.name] = setup.publish_identity(layout, member)
    setup.write_federation_files(PLAN, layout, identities)
    setup.make_passwords(PLAN, layout)
    return service_environment(COMPOSE, f"node-{node.name}", tmp_path)


@pytest.mark.parametrize("name", sorted(NODES))
def test_each_node_configuration_parses_with_the_nodes_own_loaders(
    tmp_path: Path, name: str
) -> None:
    node = NODES[name]
    environment = _render_node(tmp_path, node)
    settings = Settings.from_env(environment)  # refuses an unknown TONGBAN_* variable
    layout = setup.Layout(tmp_path)
    assert settings.node_region == node.region
    assert settings.origin == node.origin
    assert settings.data_dir == layout.data(node)
    # The database is the node's own PostgreSQL, with the password the setup job made.
    password = setup.password_file(layout, node).read_text().strip()
    assert settings.database_url == node.database.url(password)
    assert settings.listen.endswith(":7443")
    # The federation file is the one the setup job writes for this node, and it loads.
    assert settings.federation == setup.federation_file(layout, node)
    federation = load_federation(
        settings.federation, own_region=settings.node_region, own_origin=settings.origin
    )
    assert sorted(p.region for p in federation.peers) == sorted(
        other.region for other in PLAN.nodes if other is not node
    )
    assert federation.bootstrap == tuple(PLAN.kafka["bootstrap"])
    for peer in federation.peers:
        other = next(o for o in PLAN.nodes if o.region == peer.region)
        assert peer.address == other.address
        assert f"node-{other.name}" in SERVICES


def test_the_node_services_match_the_plan() -> None:
    layout = setup.Layout(Path(SETUP_ROOT))
    nodes = sorted(n for n, s in SERVICES.items() if s.get("command") == ["serve"])
    assert nodes == sorted(f"node-{name}" for name in NODES)
    data_dir = image_environment()["TONGBAN_DATA_DIR"]
    for node in PLAN.nodes:
        service = SERVICES[f"node-{node.name}"]
        assert service["environment"]["TONGBAN_NODE_REGION"] == node.region
        paths = host_paths(COMPOSE, f"node-{node.name}", Path(SETUP_ROOT))
        assert paths[data_dir] == layout.data(node)
        [federation] = [m for m in mounts(service) if m.source == "federation"]
        assert federation.read_only
        assert node.host == f"node-{node.name}" and node.address.endswith(":7443")
        assert "healthcheck.py" in " ".join(service["healthcheck"]["test"])
        conditions = {k: v["condition"] for k, v in service["depends_on"].items()}
        assert conditions == {
            "setup": "service_completed_successfully",
            f"postgres-{node.name}": "service_healthy",
            "kafka": "service_healthy",
        }
        # The setup job writes into every volume of the node it must.
        for point in (layout.data(node), layout.db(node)):
            assert any(m.target == str(point) for m in mounts(SERVICES["setup"])), (
                f"setup does not mount {point}"
            )
        assert any(m.target == str(layout.data(node)) for m in mounts(SERVICES["setup-passwords"]))
        assert any(m.target == str(layout.db(node)) for m in mounts(SERVICES["setup-passwords"]))


def test_the_setup_jobs_run_in_order() -> None:
    assert SERVICES["setup"]["depends_on"]["setup-passwords"]["condition"] == (
        "service_completed_successfully"
    )
    for node in PLAN.nodes:
        assert SERVICES["setup"]["depends_on"][f"postgres-{node.name}"] == {
            "condition": "service_healthy"
        }
        assert SERVICES[f"postgres-{node.name}"]["depends_on"] == {
            "setup-passwords": {"condition": "service_completed_successfully"}
        }
    plan_config = COMPOSE["configs"]["federation-plan"]["file"]
    assert (ROOT / "docker" / plan_config).resolve() == PLAN_FILE
    for name in SETUP_SERVICES:
        assert SERVICES[name]["configs"] == [
            {"source": "federation-plan", "target": f"{SETUP_ROOT}/plan.toml"}
        ]
        # `python federation_setup.py STEP --plan FILE --root DIR --as-user tongban`
        assert SERVICES[name]["entrypoint"] == ["python", "/opt/tongban/docker/federation_setup.py"]
        assert (
            SERVICES[name]["command"][0] == {"setup-passwords": "passwords", "setup": "init"}[name]
        )
        assert SERVICES[name]["command"][1:5] == ["--plan", f"{SETUP_ROOT}/plan.toml",
                                                  "--root", SETUP_ROOT]  # fmt: skip


# ------------------------------------------------------------------------- the adapters


def _adapter_variables() -> set[str]:
    """Every variable the adapters' parser reads (its help names each as [$NAME])."""
    parser = adapter_parser({})
    names: set[str] = set()

    def walk(p: Any) -> None:
        for action in p._actions:
            names.update(re.findall(r"\[\$(\w+)\]", action.help or ""))
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(parser)
    return names


def test_every_hall_of_the_plan_has_an_adapter_and_every_adapter_a_hall() -> None:
    served = sorted(
        SERVICES[name]["environment"]["TONGBAN_ADAPTER_HALL_ID"] for name in ADAPTER_SERVICES
    )
    assert served == sorted(HALLS)


@pytest.mark.parametrize("name", ADAPTER_SERVICES)
def test_each_adapter_configuration_parses_with_the_adapters_own_parser(name: str) -> None:
    service = SERVICES[name]
    environment = service_environment(COMPOSE, name)
    known = _adapter_variables()
    ours = {v for v in environment if v.startswith("TONGBAN_ADAPTER_") or v.startswith(
        ("TONGBAN_GATEWAY_", "TONGBAN_VILLAGE_"))}  # fmt: skip
    assert ours <= known, f"unknown adapter variables: {sorted(ours - known)}"
    args = adapter_parser(environment).parse_args(service["command"][1:])
    node, hall = HALLS[args.hall_id]
    assert args.region == hall.region
    assert args.node == node.origin
    assert args.target == node.address
    # The files it names are the ones the setup job writes into the hall's volume.
    hall_dir = Path("/var/lib/tongban-hall")
    [volume] = [m for m in mounts(service) if m.target == str(hall_dir)]
    assert volume.read_only
    layout = setup.Layout(Path(SETUP_ROOT))
    assert setup_mount_of(COMPOSE, volume.source) == str(layout.hall(hall))
    assert Path(args.ca) == hall_dir / "ca.pem"
    assert Path(args.cert) == hall_dir / f"{hall.hall_id}.pem"
    assert Path(args.key) == hall_dir / f"{hall.hall_id}.key"
    assert Path(args.signing_key) == hall_dir / setup.SIGNING_KEY
    if service["command"][1] == "gateway":
        assert hall.gateway
        assert environment["GATEWAY_TOKEN_FILE"] == str(hall_dir / setup.GATEWAY_TOKEN)
        assert args.listen.startswith("0.0.0.0:")
        assert "gateway" in service["healthcheck"]["test"]
    else:
        assert args.village_command == "forward"
        [outbox] = [m for m in mounts(service) if Path(args.db).parent == Path(m.target)]
        assert not outbox.read_only and setup_mount_of(COMPOSE, outbox.source) is None
    assert service["depends_on"] == {f"node-{node.name}": {"condition": "service_healthy"}}


# ------------------------------------------------------------------------- the plan


def test_the_plan_refuses_mistakes_naming_the_entry(tmp_path: Path) -> None:
    text = PLAN_FILE.read_text()
    cases = {
        'region = "43"': ('region = "4"', "nodes[0].region"),
        'name = "hunan"': ('name = "Hunan!"', "nodes[0].name"),
        'region = "430902104201"': ('region = "420102000000"', "nodes[0].halls[1].region"),
        'address = "node-hubei:7443"': ('address = "node-hubei"', "nodes[1].address"),
        'id = "sn-baihe-county"': ('id = "hn-shatou-town"', "halls.id"),
    }
    for original, (replacement, named) in cases.items():
        plan = tmp_path / "plan.toml"
        assert original in text
        plan.write_text(text.replace(original, replacement, 1))
        with pytest.raises(setup.SetupError, match=re.escape(named)):
            setup.load_plan(plan)


# ------------------------------------------------------------------------- the documentation


def _generic(name: str) -> str:
    """A service or volume name as docker/README.md writes it (NAME, HALL)."""
    for hall in HALLS:
        name = name.replace(hall, "HALL")
    for node in NODES:
        name = re.sub(rf"(^|-){node}(-|$)", r"\1NAME\2", name)
    return name


def test_the_readme_describes_every_service_and_volume() -> None:
    readme = (ROOT / "docker" / "README.md").read_text()
    for name in [*SERVICES, *COMPOSE["volumes"]]:
        generic = _generic(name)
        assert f"`{generic}`" in readme or f"`{name}`" in readme, name
    # The images it names are the ones the compose file runs.
    for service in SERVICES.values():
        if not uses_node_image(service):
            assert f"`{service['image']}`" in readme
    assert f"`{_dockerfile().baseimage}`" in readme
