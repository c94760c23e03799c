"""The Gantt timeline: a PNG of the right size with bars of the expected colours, or a Figure;
bad keys refused; without matplotlib, an ImportError naming the extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import imread

import conveyor
from tests.observe.records import add, boom


def pixels_of(image: np.ndarray, colour: object) -> int:
    """How many pixels of ``image`` (RGBA floats) have ``colour``, within rounding."""
    rgb = np.array(to_rgb(colour))  # type: ignore[arg-type]
    return int((np.abs(image[:, :, :3] - rgb).max(axis=2) < 0.02).sum())


@pytest.fixture
def ran(make_queue) -> conveyor.Queue:
    """A queue where 4 add jobs finished and 2 boom jobs failed."""
    q = make_queue(workers=2)
    for n in range(4):
        q.put(add, args=(n,), lane="numbers")
    for n in range(2):
        q.put(boom, args=(f"no {n}",))
    q.wait(timeout=30)
    return q


def test_a_png_of_the_jobs_coloured_by_task(ran: conveyor.Queue, tmp_path: Path) -> None:
    # when plotting to a path
    target = tmp_path / "timeline.png"
    written = ran.plot(target)
    # then the path is returned and the PNG has the figure's size
    assert written == target
    image = imread(target)
    height, width = image.shape[:2]
    assert width == 1000 and height >= 200
    # and it holds bars in the first two colours (add, boom: in the order they started)
    first, second = colormaps["tab10"](0), colormaps["tab10"](1)
    assert pixels_of(image, first) > 200
    assert pixels_of(image, second) > 200


def test_coloured_by_status_and_split_by_lane(ran: conveyor.Queue, tmp_path: Path) -> None:
    # when plotting by status, one panel per lane
    image = imread(ran.plot(tmp_path / "t.png", color_by="status", facet_by="lane"))
    # then finished bars are green, failed ones red, and no other status colour shows
    assert pixels_of(image, "tab:green") > 200
    assert pixels_of(image, "tab:red") > 100
    assert pixels_of(image, "tab:orange") == 0


def test_conveyor_plot_takes_records_and_returns_a_figure(ran: conveyor.Queue) -> None:
    figure = conveyor.plot(ran.jobs(), color_by="worker")
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 1
    # every job has a solid bar (some also a faint wait bar)
    solid = [p for p in figure.axes[0].patches if p.get_alpha() in (None, 1.0)]
    assert len(solid) == 6


def test_no_jobs_still_draws(tmp_path: Path) -> None:
    path = conveyor.plot([], tmp_path / "empty.png")
    assert imread(path).shape[1] == 1000


@pytest.mark.parametrize(
    ("options", "word"),
    [({"color_by": "colour"}, "color_by"), ({"facet_by": "id"}, "facet_by")],
)
def test_an_unknown_key_is_refused(ran: conveyor.Queue, tmp_path: Path, options, word) -> None:
    with pytest.raises(ValueError, match=word):
        ran.plot(tmp_path / "x.png", **options)
    assert not (tmp_path / "x.png").exists()


def test_without_matplotlib_the_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import conveyor\n"
        "try:\n"
        "    conveyor.plot([])\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "MissingExtra" in done.stdout and "pip install 'conveyor[plot]'" in done.stdout


def test_the_demo_draws_its_timeline_beside_its_queue(tmp_path: Path) -> None:
    from conveyor import demo, demo_report

    # given a demo run on a small source folder
    source = Path(demo.__file__).parent / "observe"
    done = demo.run(2, "thread", tmp_path / "run", source, progress=False, echo=lambda _: None)
    # when its report's picture is drawn
    said = demo_report.picture(done)
    # then timeline.png lies beside queue.db, with a bar per task's colour, and is named
    target = tmp_path / "run" / "timeline.png"
    assert said.startswith("timeline: ") and said.endswith("timeline.png")
    image = imread(target)
    for n in range(3):  # count, append, summarise
        assert pixels_of(image, colormaps["tab10"](n)) > 20, n
