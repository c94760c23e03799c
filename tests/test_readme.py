"""The README runs as written.

Every ```python block is saved to a file in a fresh folder and run with ``python file.py``, as a
user would (a block whose first line is ``# name.py`` is saved under that name: it is the app
the shell examples name); it must exit 0 and print what its comments promise
(``print(x)   # expected``). The ```bash blocks run line by line where they can: ``conveyor``
commands against the README's app in that folder, a worker that runs until stopped is stopped
with SIGTERM once it is up. Lines that cannot run inside the test suite are listed in NOT_RUN
with the reason, so that every line is either run or accounted for.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import conveyor
from conveyor.backends import SCHEMES

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUARD = 'if __name__ == "__main__":'

#: seconds a README script may take (each runs in well under 10 s)
SCRIPT_TIMEOUT = 45

#: shell lines that do not run here, and why
#: commands whose JOB_ID the README means to be a job that has ended (failed or cancelled)
ENDED_JOB_COMMANDS = {"retry", "forget"}

NOT_RUN = {
    "bash scripts/test": "it runs this test suite (CI runs it: .ci/run)",
    "bash scripts/demo": "it installs into the repository's .venv and reads the whole standard"
    " library; tests/api/test_first_hour.py runs the script (no reinstall) and the demo",
}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def file_name(block: str, index: int) -> str:
    first = block.splitlines()[0] if block.strip() else ""
    named = re.fullmatch(r"# (\w+\.py)", first.strip())
    return named.group(1) if named else f"readme_block_{index}.py"


def clean_env() -> dict[str, str]:
    """The caller's environment without conveyor settings that would change the examples."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}


def run_script(
    path: Path, timeout: float = SCRIPT_TIMEOUT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python path`` in its folder (``env`` added to its environment); a script still running
    after ``timeout`` is killed with everything it started (its process group) and the test
    fails saying it hung."""
    process = subprocess.Popen(
        [sys.executable, path.name],
        cwd=path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean_env(), **(env or {})},
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"{path.name} hung: still running after {timeout} s\n{out}\n{err[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


# ------------------------------------------------------------------------ python blocks
#: the database of the Redis test server the README's Redis examples use
README_REDIS_DB = 4


def redis_database(request: pytest.FixtureRequest, db: int) -> str:
    """The URL of database ``db`` of the Redis test server, emptied."""
    import redis

    url = f"{request.getfixturevalue('redis_url')}/{db}"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


def test_readme_has_its_examples() -> None:
    assert blocks("python"), "the README lost its python examples"
    assert any(file_name(b, i) == "myapp.py" for i, b in enumerate(blocks("python")))


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_readme_python_block_runs_as_a_script_and_prints_what_it_says(
    index: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # given a README example saved as a file / when run as `python file.py`
    source = blocks("python")[index]
    script = tmp_path / file_name(source, index)
    script.write_text(source, encoding="utf-8")
    # (an example on Redis reads REDIS_URL: the test's own server, an emptied database)
    env = {"REDIS_URL": redis_database(request, README_REDIS_DB)} if "REDIS_URL" in source else {}
    done = run_script(script, env=env)
    # then it exits 0 and prints what its comments promise
    assert done.returncode == 0, done.stderr[-3000:]
    for expected in re.findall(r"print\(.*?\)\s+# (.+)$", source, re.M):
        assert expected.strip() in done.stdout, (expected, done.stdout)


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_every_readme_example_with_processes_has_the_guard(index: int) -> None:
    source = blocks("python")[index]
    if 'mode="process"' in source or "mode='process'" in source:
        assert GUARD in source


def test_the_quickstart_without_its_guard_fails_fast_naming_the_guard(tmp_path: Path) -> None:
    # given the quickstart with its guard taken away: main() runs at import, so every worker
    # process would run the script again (before the fix it hung forever)
    quickstart = next(b for b in blocks("python") if 'mode="process"' in b)
    unguarded = re.sub(
        r"^if __name__ == \"__main__\":.*\n    main\(\)$", "main()", quickstart, flags=re.M
    )
    assert GUARD not in unguarded and "\nmain()" in unguarded
    script = tmp_path / "quickstart.py"
    script.write_text(unguarded, encoding="utf-8")
    # when run as a script
    done = run_script(script, timeout=40)
    # then it stops at once (no hang), in the script the user started, naming the guard
    assert done.returncode != 0
    assert "worker processes cannot start" in done.stderr
    assert GUARD in done.stderr.splitlines()[-1]


# ------------------------------------------------------------------------- shell blocks
def shell_lines() -> list[str]:
    """The commands of the README's bash blocks, a line ending in a backslash joined to the
    next as the shell joins them."""
    lines = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.strip().startswith("#"):
                lines.append(line.strip())
    return lines


def command(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def test_every_shell_line_is_run_or_says_why_not() -> None:
    for line in shell_lines():
        argv = command(line)
        assert argv[0] == "conveyor" or " ".join(argv[:2]) in NOT_RUN, line


def conveyor_command() -> list[str]:
    """The ``conveyor`` command a user types: the console script next to this Python."""
    script = Path(sys.executable).with_name("conveyor")
    return [str(script)] if script.exists() else [sys.executable, "-m", "conveyor"]


def test_readme_shell_commands_run_against_the_readme_app(tmp_path: Path) -> None:
    # given the README's app, myapp.py, in a folder
    app = next(b for b in blocks("python") if file_name(b, 0) == "myapp.py")
    (tmp_path / "myapp.py").write_text(app, encoding="utf-8")
    job_id: str | None = None
    ran = 0
    for line in shell_lines():
        argv = command(line)
        if argv[0] != "conveyor":
            continue
        if any(arg in ("JOB_ID", "ID") for arg in argv) and (
            job_id is None or argv[1] in ENDED_JOB_COMMANDS
        ):
            job_id = run_conveyor(["enqueue", "myapp:q", "resize"], tmp_path).stdout.strip()
            if argv[1] in ENDED_JOB_COMMANDS:  # the line is about a job that has ended
                run_conveyor(["cancel", "myapp:q", job_id], tmp_path)
        argv = [job_id if arg in ("JOB_ID", "ID") and job_id else arg for arg in argv[1:]]
        # when each conveyor line of the README runs, in order
        if argv[0] == "worker" and not {"--burst", "--max-jobs"} & set(argv):
            run_until_stopped(argv, tmp_path)
        elif argv[0] == "dashboard":
            run_until_served(argv, tmp_path)
        else:
            done = run_conveyor(argv, tmp_path)
            if argv[0] == "enqueue":
                job_id = done.stdout.strip().splitlines()[-1]
        ran += 1
    # then every one exited 0 (checked in run_conveyor), and there were some
    assert ran >= 5


def run_conveyor(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*conveyor_command(), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == 0, (argv, done.stdout, done.stderr[-3000:])
    return done


def run_until_stopped(argv: list[str], cwd: Path) -> None:
    """A worker that runs until told to stop: wait until it is registered, SIGTERM it, and
    expect it to exit 0."""
    worker = subprocess.Popen(
        [*conveyor_command(), *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        start_new_session=True,
    )
    try:
        with conveyor.Queue(f"sqlite:///{cwd}/jobs.db", workers=0) as q:
            deadline = time.monotonic() + SCRIPT_TIMEOUT
            while not q.backend.workers():
                assert worker.poll() is None, worker.communicate()
                assert time.monotonic() < deadline, "the worker never registered"
                time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=SCRIPT_TIMEOUT)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.communicate()
    assert worker.returncode == 0, (argv, out, err[-3000:])


def run_until_served(argv: list[str], cwd: Path) -> None:
    """``conveyor dashboard`` on a free port (the README's is replaced): wait until it answers,
    SIGTERM it, and expect it to exit 0."""
    import httpx

    from tests.web.test_dashboard_command import free_port, up

    port = free_port()
    argv = [*argv[: argv.index("--port") + 1], str(port), *argv[argv.index("--port") + 2 :]]
    server = subprocess.Popen(
        [*conveyor_command(), *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + SCRIPT_TIMEOUT
        while not up(f"http://127.0.0.1:{port}"):
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "the dashboard never answered"
            time.sleep(0.05)
        assert httpx.post(f"http://127.0.0.1:{port}/api/purge", json={}).status_code == 401
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=SCRIPT_TIMEOUT)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.communicate()
    assert server.returncode == 0, (argv, out, err[-3000:])


# -------------------------------------------------------------------------- README truth
def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: p.name)
def test_links_stay_inside_the_repository_and_resolve(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert "../" not in text, "a path that leaves the repository"
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        assert "://" not in target, f"{doc.name} links outside the repository: {target}"
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        assert linked.is_relative_to(ROOT) and linked.exists(), target
        if anchor:
            assert anchor in anchors(linked), target


def anchors(doc: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", doc.read_text(encoding="utf-8"), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_the_readme_names_only_backends_that_exist() -> None:
    # every scheme://-URL the README shows outside its "not built yet" line is a built backend
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("Not built yet"):
            continue
        for scheme in re.findall(r"\b([a-z][a-z0-9+]*):///?", line):
            assert scheme in SCHEMES or scheme == "http", line  # http: the HTTP API's address


def test_the_package_describes_what_is_built() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    description = re.search(r'^description = "(.*)"$', pyproject, re.M)
    assert description is not None
    for text in (description.group(1), conveyor.__doc__ or ""):
        assert "fleet" not in text and "hosts" not in text, text
        assert "SQLite" in text, text
