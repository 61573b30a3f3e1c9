"""The compose stack runs exactly the binaries and settings the native tests exercise:
every service built from the Dockerfile runs a binary the Dockerfile builds, and every
environment name compose gives it is one that binary reads."""

import json
import os
import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
BIN_DIR = Path(os.environ.get("SWITCHBOARD_BIN_DIR", ROOT / "target" / "debug"))


def compose():
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile", "demo", "config"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    return yaml.safe_load(out)["services"]


def dockerfile_binaries():
    text = (ROOT / "Dockerfile").read_text()
    packages = set(re.findall(r"-p ([\w-]+)", text))
    copied = set(re.findall(r"target/release/([\w-]+)", text))
    return packages, copied


def test_the_dockerfile_builds_the_binaries_it_copies():
    packages, copied = dockerfile_binaries()
    meta = json.loads(subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"],
                                     check=True, capture_output=True, text=True, cwd=ROOT).stdout)
    built = {t["name"] for p in meta["packages"] if p["name"] in packages for t in p["targets"] if "bin" in t["kind"]}
    assert copied == built, f"Dockerfile copies {copied} but its packages build {built}"


def test_every_compose_service_runs_a_built_binary_with_settings_it_reads():
    _, copied = dockerfile_binaries()
    services = {name: s for name, s in compose().items() if "build" in s}
    assert {"ingest", "transform", "loader", "simulate"} <= services.keys()
    for name, service in services.items():
        binary = service["command"][0]
        assert binary in copied, f"{name} runs {binary}, which the Dockerfile does not build"
        args = service["command"][1:]
        # Settings of the binary and of its subcommand, if the service runs one.
        help_text = "".join(
            subprocess.run([str(BIN_DIR / binary), *argv, "--help"], check=True, capture_output=True, text=True).stdout
            for argv in ([], args) if argv is not None
        )
        for env in service.get("environment", {}):
            assert f"[env: {env}" in help_text, f"{name}: {binary} does not read {env}"
