"""The first hour of a new user: no silent traps in queue URLs and settings, and a demo that
shows what really happened (where each job ran, priorities, the lane), with or without the
progress extra, run after run on its durable file, without reinstalling each time."""

from __future__ import annotations

import itertools
import json
import os
import pty
import re
import subprocess
import sys
import sysconfig
import textwrap
import threading
from pathlib import Path

import pytest

import conveyor
from conveyor import demo, demo_report

ROOT = Path(__file__).resolve().parents[2]

#: run in a fresh interpreter: tqdm cannot be imported (a meta path finder refuses it), then
#: the command line runs with the arguments that follow
WITHOUT_TQDM = textwrap.dedent(
    """
    import sys

    class NoTqdm:
        def find_spec(self, name, path=None, target=None):
            if name == "tqdm" or name.startswith("tqdm."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTqdm())
    try:
        import tqdm
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("tqdm was importable")
    from conveyor.cli import main
    main(sys.argv[1:], prog_name="conveyor")
    """
)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}


# ------------------------------------------------------------------------- queue URLs
def test_sqlite_url_without_its_slashes_is_refused_and_creates_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a folder / when a queue is built on sqlite:relative.db (no //)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(conveyor.ConveyorError) as raised:
        conveyor.Queue("sqlite:relative.db", workers=0)
    # then it is refused saying how to write it, and no file was created (not lative.db)
    assert "sqlite:///relative.db" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_sqlite_url_with_an_absolute_path_but_no_slashes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(conveyor.ConveyorError) as raised:
        conveyor.Queue(f"sqlite:{tmp_path}/jobs.db", workers=0)
    assert f"sqlite:///{tmp_path}/jobs.db" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_sqlite_url_with_three_slashes_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    conveyor.Queue("sqlite:///relative.db", workers=0).close()
    assert (tmp_path / "relative.db").exists()
    assert not (tmp_path / "lative.db").exists()


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"lease": -1}, "invalid setting lease = -1 (keyword argument): expected a number of"),
        ({"serializer": "yaml"}, "serializer = 'yaml' (keyword argument): expected 'json',"),
        ({"max_size": 0}, "max_size = 0 (keyword argument): expected an int >= 1"),
        ({"prefetch": 1.5}, "prefetch = 1.5 (keyword argument): expected an int >= 0"),
        ({"file_mode": 0o400}, "file_mode (keyword argument): a mode from 0o600 to 0o777"),
    ],
)
def test_a_bad_setting_reads_as_conveyors_own_message(
    given: dict[str, object], expected: str
) -> None:
    # given a bad value / when a queue is built with it
    with pytest.raises(conveyor.ConveyorError) as raised:
        conveyor.Queue(workers=0, **given)  # type: ignore[arg-type]
    # then the message is conveyor's: the setting, the value, what is allowed; no pydantic
    message = str(raised.value)
    assert expected in message
    assert "pydantic" not in message and "Input should" not in message
    assert "\n" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_a_bad_setting_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_LEASE", "soon")
    monkeypatch.setenv("REPORTS_MAX_SIZE", "-3")
    with pytest.raises(conveyor.ConveyorError) as raised:
        conveyor.Queue(workers=0, name="reports")
    message = str(raised.value)
    assert "lease = 'soon' (from CONVEYOR_LEASE): expected a number of seconds > 0" in message
    assert "max_size = '-3' (from REPORTS_MAX_SIZE): expected an int >= 1" in message


def test_a_bad_secret_is_never_repeated() -> None:
    with pytest.raises(conveyor.ConveyorError) as raised:
        conveyor.Queue(workers=0, secret=12345678)
    assert "secret = <hidden>" in str(raised.value)
    assert "12345678" not in str(raised.value)


def test_every_setting_says_what_it_allows() -> None:
    from conveyor.settings import ALLOWED, Settings

    assert set(ALLOWED) == set(Settings.model_fields)


def test_the_command_line_prints_a_bad_setting_without_pydantic(tmp_path: Path) -> None:
    # given an app and a bad CONVEYOR_ variable / when a command loads the app
    (tmp_path / "app.py").write_text(
        'import conveyor\nq = conveyor.Queue("sqlite:///jobs.db", workers=0)\n', encoding="utf-8"
    )
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "status", "app:q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean_env(), "CONVEYOR_LEASE": "abc"},
        check=False,
    )
    # then it fails with conveyor's message, one short error and no traceback
    assert done.returncode != 0
    assert "invalid setting lease = 'abc' (from CONVEYOR_LEASE)" in done.stderr
    assert "pydantic" not in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------------------ demo
def make_source(root: Path) -> Path:
    """A small Python source tree whose packages' names and sizes are in different orders;
    its docstrings and comments repeat words that are not identifiers of the code."""
    sizes = {"alpha": 1, "beta": 9, "delta": 4, "epsilon": 12, "gamma": 6}
    for package, functions in sizes.items():
        folder = root / package
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text('"""the the the words"""\n', encoding="utf-8")
        body = ['"""' + "the words of a docstring " * 40 + '"""', "# the the the comment words"]
        for n in range(functions * 20):
            body.append(f"def zebra_{package}_{n}(value):\n    return value + zebra_total\n")
        (folder / "code.py").write_text("\n".join(body), encoding="utf-8")
    (root / "tests").mkdir()
    (root / "tests" / "test_skipped.py").write_text("skipped_name = 1\n", encoding="utf-8")
    return root


def test_count_counts_identifiers_of_the_code_not_words_of_docstrings(tmp_path: Path) -> None:
    # given a file whose docstring and comments say "the" more often than the code has names
    source = tmp_path / "mod.py"
    source.write_text(
        '"""The the the the the the the the the the."""\n'
        "# the the the the the the the the the the the\n"
        "def zebra(value):\n"
        '    """the the the"""\n'
        "    return zebra(value) + value  # the\n",
        encoding="utf-8",
    )
    part = tmp_path / "part.json"
    # when the count task reads it
    demo.count([str(source)], str(part))
    counts = json.loads(part.read_text(encoding="utf-8"))
    # then it counted the names of the code, keywords left out
    assert counts["names"] == {"zebra": 2, "value": 3}
    assert counts["identifiers"] == 5
    assert counts["files"] == 1 and counts["lines"] == 5


def test_demo_without_tqdm_on_a_terminal_shows_a_plain_progress_line(tmp_path: Path) -> None:
    # given tqdm that cannot be imported and standard error on a terminal
    source = make_source(tmp_path / "src")
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", WITHOUT_TQDM, "demo", "--dir", str(tmp_path / "run"),
         "--source", str(source), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=secondary,
        text=True,
        env=clean_env(),
    )  # fmt: skip
    os.close(secondary)
    chunks: list[bytes] = []
    reader = threading.Thread(target=read_all, args=(primary, chunks), daemon=True)
    reader.start()
    # when the demo runs
    out, _ = process.communicate(timeout=60)
    reader.join(10)
    os.close(primary)
    terminal = b"".join(chunks).decode(errors="replace")
    # then it ends well, with a plain progress line instead of a traceback
    assert process.returncode == 0, terminal
    assert "Traceback" not in terminal and "MissingExtra" not in terminal
    total = int(re.search(r"Run 1: (\d+) jobs put", out).group(1))  # type: ignore[union-attr]
    assert f"\rjobs ended: {total}/{total}" in terminal
    assert "ok  every job finished" in out and "NOT" not in out


def read_all(fd: int, chunks: list[bytes]) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # the other end closed
            return
        if not data:
            return
        chunks.append(data)


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "demo", "--dir", str(tmp_path / "run"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_demo_on_its_durable_file_lists_the_earlier_runs(tmp_path: Path) -> None:
    source = str(make_source(tmp_path / "src"))
    # given a first run / when the demo runs again on the same folder
    first = run_demo(tmp_path, "--source", source)
    second = run_demo(tmp_path, "--source", source)
    # then the second lists the first, all of its jobs finished, and runs its own
    assert "Earlier runs" not in first.stdout
    assert "Earlier runs, still in" in second.stdout
    jobs = int(re.search(r"Run 1: (\d+) jobs put", first.stdout).group(1))  # type: ignore[union-attr]
    assert re.search(rf"^\s+1\s+{jobs}\s+{jobs} finished", second.stdout, re.M)
    assert f"Run 2: {jobs} jobs put" in second.stdout
    assert "NOT" not in second.stdout
    # and the report files say the identifiers of the code, none from the skipped tests
    assert "zebra_total" in second.stdout and "skipped_name" not in second.stdout


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_demo_records_where_each_job_really_ran(tmp_path: Path, mode: str) -> None:
    # given many short jobs and 3 slots (so that a worker claims jobs ahead for its slots)
    source = make_source(tmp_path / "src")
    # when the demo's pipeline runs
    done = demo.run(3, mode, tmp_path / "run", source, progress=False, echo=lambda _: None)
    # then each job says where it ran, and no place ran two jobs at once
    spans: dict[str, list[tuple[float, float]]] = {}
    for record in done.records:
        assert record.status is conveyor.Status.FINISHED, record
        assert record.started is not None and record.ended is not None
        where = record.result["ran_in"]
        assert where.startswith("process " if mode == "process" else "thread-"), where
        spans.setdefault(where, []).append((record.started.timestamp(), record.ended.timestamp()))
    for found in spans.values():
        found.sort()
        for (_, end), (start, _) in itertools.pairwise(found):
            assert end <= start
    # and the table shows those places, not the slot that claimed the job
    table = demo_report.timeline(done.records)
    for where in spans:
        assert where in table


def test_demo_shows_priorities_and_the_lane_at_work(tmp_path: Path) -> None:
    # given one slot (so that the order of starts is the order of claims)
    source = make_source(tmp_path / "src")
    done = demo.run(1, "thread", tmp_path / "run", source, progress=False, echo=lambda _: None)
    counts = [r for r in done.records if r.task == "count"]
    appends = sorted((r for r in done.records if r.task == "append"), key=lambda r: r.meta["place"])
    # then the counts started by priority (biggest batch first), not in the order put
    by_start = sorted(counts, key=lambda r: (r.started, r.priority))
    assert [r.priority for r in by_start] == sorted(r.priority for r in counts)
    assert [r.id for r in by_start] != sorted(r.id for r in counts)
    assert by_start[0].meta["kb"] == max(r.meta["kb"] for r in counts)
    # and the appends ran one at a time (the lane), each after its count
    ids = {r.id: r for r in done.records}
    ran = sorted(appends, key=lambda r: r.started)  # type: ignore[arg-type, return-value]
    for earlier, later in itertools.pairwise(ran):
        assert earlier.ended <= later.started  # type: ignore[operator]
    for append in appends:
        assert ids[append.after[0]].ended <= append.started  # type: ignore[operator]
    # and the table and the checks show it to the reader
    shown = demo_report.show(done, source)
    assert "prio" in shown and "nth" in shown and "lane 'report'" in shown
    assert "NOT" not in shown
    assert "-> priority: the counts were put by name, and started by size" in shown
    for rule, held in demo_report.check_rules(done.records):
        assert held, rule


# -------------------------------------------------------------------------- scripts/demo
def installed_record() -> Path:
    found = sorted(Path(sysconfig.get_paths()["purelib"]).glob("conveyor-*.dist-info/RECORD"))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_scripts_demo_does_not_reinstall_on_every_run() -> None:
    # scripts/demo manages the repository's .venv: only meaningful when the tests run from it
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("the tests do not run from the repository's .venv")
    # given scripts/demo run once (it installs if it must)
    first = subprocess.run(
        ["bash", "scripts/demo", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert first.returncode == 0, first.stderr
    before = installed_record().stat()
    # when it runs again
    second = subprocess.run(
        ["bash", "scripts/demo", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    # then it did not install again: the installed distribution is the same files
    assert second.returncode == 0, second.stderr
    after = installed_record().stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert "installing" not in second.stderr
    assert "Usage: conveyor demo" in second.stdout


# ----------------------------------------------------------------- conveyor worker, SIGTERM
#: a worker whose SIGTERM is taken by a thread other than the main one (as the kernel may pick
#: any thread for a signal sent to the process): here a thread of the script sends it to itself
#: once the worker's slots run
SIGNAL_FROM_ANOTHER_THREAD = textwrap.dedent(
    """
    import signal, sys, threading, time
    import conveyor
    from conveyor.runner import run_worker

    q = conveyor.Queue(sys.argv[1], workers=0)

    def stop_from_this_thread():
        while not any(t.name.startswith("conveyor-thread") for t in threading.enumerate()):
            time.sleep(0.01)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=stop_from_this_thread, daemon=True).start()
    print("stopped; ran", run_worker(q, workers=2, mode="thread"))
    """
)


def test_a_worker_stops_on_sigterm_taken_by_any_of_its_threads(tmp_path: Path) -> None:
    # given a running worker / when its SIGTERM lands on a thread other than the main one
    process = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_FROM_ANOTHER_THREAD, f"sqlite:///{tmp_path}/jobs.db"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the worker ignored its SIGTERM\n{err[-3000:]}")
    # then it stops as it would on a SIGTERM to its main thread
    assert process.returncode == 0, err[-3000:]
    assert "stopped; ran 0" in out


# ------------------------------------------------------ worker processes that cannot start
UNGUARDED_TASK_IN_PROCESSES = textwrap.dedent(
    """
    import conveyor

    q = conveyor.Queue(workers=1)

    @q.task(mode="process")
    def double(x):
        return 2 * x

    try:
        print("result:", double.enqueue(21).result(timeout=20))
    except conveyor.ConveyorError as exc:
        print("refused:", exc)
        print("jobs in the queue:", q.size())
    q.close()
    """
)


def test_a_process_task_put_from_an_unguarded_script_is_refused_at_put(tmp_path: Path) -> None:
    # given a script without the __main__ guard whose task runs in processes
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_TASK_IN_PROCESSES, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, script.name],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        start_new_session=True,
    )
    # when it puts a job of that task
    try:
        out, err = process.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        out, err = process.communicate()
        pytest.fail(f"the script hung\n{out}\n{err[-3000:]}")
    # then the put is refused at once, naming the guard, and nothing was put
    assert "refused: worker processes cannot start" in out, err[-3000:]
    assert 'if __name__ == "__main__":' in out
    assert "jobs in the queue: 0" in out
    assert process.returncode == 0
