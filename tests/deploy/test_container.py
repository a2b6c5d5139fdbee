"""The image definition (deploy/container/Dockerfile), read statically where no container engine
runs: two stages, the llama.cpp wheel built in the builder by the same lock and scripts a
newcomer's set-up uses, a non-root numeric user, a health check on /healthz, a command the CLI
accepts, and every file it copies present and let through by .dockerignore, which keeps the
virtual environment, tests and secrets out. The Helm chart runs it as the same user and port."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from chart_support import ROOT, find, objects, parse_command

DOCKERFILE = ROOT / "deploy" / "container" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    """One FROM of a Dockerfile: its base, name and instructions (keyword, arguments)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """The arguments of every ``keyword`` instruction of the stage, in order."""
        return [arguments for word, arguments in self.instructions if word == keyword]


def stages(text: str) -> list[Stage]:
    """The stages of a Dockerfile (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    found: list[Stage] = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        keyword, _, arguments = line.strip().partition(" ")
        keyword, arguments = keyword.upper(), " ".join(arguments.split())
        if keyword == "FROM":
            words = arguments.split()
            found.append(Stage(words[0], words[2] if len(words) > 2 else None))
        elif found:
            found[-1].instructions.append((keyword, arguments))
    return found


def exec_form(arguments: str) -> list[str]:
    """The words of an exec-form (JSON array) instruction."""
    words = json.loads(arguments)
    assert isinstance(words, list) and all(isinstance(w, str) for w in words), arguments
    return words


def pattern_regex(glob: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression over slash-separated paths (``**``: any
    folders, ``*`` and ``?``: within one name)."""
    text = ""
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", glob.strip("/")):
        text += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            token, re.escape(token))
    return re.compile(text)


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's ``patterns`` keep ``path`` (relative to the context) out: the
    last pattern matching the path or a folder above it decides; ``!`` lets it back in."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    out = False
    for pattern in patterns:
        regex = pattern_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            out = not pattern.startswith("!")
    return out


def ignore_patterns() -> list[str]:
    """.dockerignore's patterns, in order."""
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY of ``stage`` from the build context."""
    found = []
    for arguments in stage.all("COPY"):
        words = shlex.split(arguments)
        if any(word.startswith("--from=") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        found.append((words[:-1], words[-1]))
    return found


IMAGE = stages(DOCKERFILE.read_text())


def test_the_image_builds_in_a_builder_stage_and_runs_from_a_slim_one() -> None:
    builder, final = IMAGE[0], IMAGE[-1]
    assert len(IMAGE) == 2 and builder.name == "builder" and final.name is None
    assert builder.base == final.base  # the venv's interpreter is the same in both
    assert any("gcc" in run and "g++" in run for run in builder.all("RUN"))
    assert not any("gcc" in run for run in final.all("RUN"))  # no compiler in the image
    copied = [arguments for arguments in final.all("COPY") if "--from=builder" in arguments]
    assert [arguments.split()[1] for arguments in copied] == ["/opt/switchgear/.venv",
                                                              "/opt/switchgear/src"]


def test_the_builder_installs_from_the_lock_with_the_newcomers_set_up() -> None:
    builder = IMAGE[0]
    sources = [source for sources, _ in copies(builder) for source in sources]
    for needed in ("requirements/serve.txt", "requirements/build.txt", "scripts/setup",
                   "scripts/llama-cmake-args", "pyproject.toml"):
        assert needed in sources, needed
    [setup] = [run for run in builder.all("RUN") if "scripts/setup" in run]
    assert re.search(r"scripts/setup(\s|$)", setup) and "--dev" not in setup  # the serve lock
    assert not any(re.search(r"pip3? install|pip wheel|uv pip", run)
                   for run in builder.all("RUN"))  # nothing installed around the lock
    setup_script = (ROOT / "scripts" / "setup").read_text()
    assert "--require-hashes" in setup_script and "requirements/$mode.txt" in setup_script


def test_every_copied_file_exists_and_the_context_lets_it_in() -> None:
    patterns = ignore_patterns()
    for stage in IMAGE:
        for sources, _ in copies(stage):
            for source in sources:
                path = ROOT / source
                assert path.exists(), source
                files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
                assert files, source
                for file in files:
                    relative = str(file.relative_to(ROOT))
                    assert not ignored(relative, patterns), relative


def test_the_context_keeps_the_venv_tests_and_secrets_out() -> None:
    patterns = ignore_patterns()
    for path in (".venv/bin/python", "tests/conftest.py", ".git/config", ".env",
                 "deploy/.env.production", "switchgear.db", "src/switchgear/x.db",
                 "switchgear.db.audit-key", "src/switchgear/__pycache__/config.cpython-311.pyc",
                 "benchmarks/README.md", "requirements/dev.txt", "node_modules/x/index.js"):
        assert ignored(path, patterns), path
    for path in ("pyproject.toml", "src/switchgear/config.py", "scripts/setup",
                 "src/switchgear/gateway/console/index.html"):
        assert not ignored(path, patterns), path


def test_it_runs_a_real_switchgear_command_as_a_non_root_user_with_a_health_check() -> None:
    final = IMAGE[-1]
    user = final.all("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or (gid.isdigit() and int(gid) > 0))
    [entrypoint], [command] = final.all("ENTRYPOINT"), final.all("CMD")
    words = exec_form(entrypoint) + exec_form(command)
    assert words[0] == "switchgear"
    assert parse_command(words[1:]).name == "serve"
    port = words[words.index("--port") + 1]
    assert final.all("EXPOSE") == [port] and words[words.index("--host") + 1] == "0.0.0.0"
    [health] = final.all("HEALTHCHECK")
    probe = health.partition(" CMD ")[2]
    assert f"http://127.0.0.1:{port}/healthz" in probe and "python" in exec_form(probe)[0]
    # The chart runs the image as the same user, on the same port, with a serve command.
    items = objects()
    pod = find(items, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    gateway_container = pod["containers"][0]
    assert gateway_container["ports"][0]["containerPort"] == int(port)
    assert "command" not in gateway_container  # the image's ENTRYPOINT, switchgear
    assert parse_command(gateway_container["args"]).name == "serve"
