"""A run's output as people see it: unchanged text, and a spinner only while the run works without a word."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from labctl.distributed import RankLines
from labctl.ui import LiveOutput, PlainReporter, RichReporter, phase_of
from labctl.workflows.runlab import _output

RUN = [
    "loading the data (synthetic:300) ...\n",
    "training tutorial (62,006 parameters) on cpu for 10 steps\nepoch 0.13 step 10/10 loss 2.3034\n",
    "scoring the 75 test images ...\n",
    "epoch 0.1333: test accuracy 9.33%\n",
    "drawing the loss curve and the confusion matrix ...\n",
    "class   accuracy\nclass0     0.0%\n",
    "status succeeded; results in /tmp/run\n",
]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Watcher(PlainReporter):
    """A reporter with a spinner, as at a terminal, that notes what the screen shows: spinners and text."""

    def __init__(self, screen: io.StringIO) -> None:
        super().__init__(io.StringIO())
        self.screen = screen
        self.events: list[str] = []

    @contextmanager
    def status(self, label: str) -> Iterator[bool]:
        self.events.append(f"spin {label} after {self.screen.getvalue().count(chr(10))} lines")
        yield True
        self.events.append(f"stop {label}")


@pytest.mark.parametrize(
    ("line", "phase"),
    [
        ("drawing the loss curve and the confusion matrix ...\n", "drawing the loss curve and the confusion matrix"),
        ("\r\x1b[Kscoring the 75 test images ...\n", "scoring the 75 test images"),  # after a live progress bar
        ("[rank 0] loading the data (cifar10) ...", "[rank 0] loading the data (cifar10)"),
        ("Downloading the weights\u2026", "Downloading the weights"),
        ("epoch 0.13 step 10/10 loss 2.3034\n", None),
        ("...\n", None),
        ("", None),
    ],
)
def test_a_line_that_ends_in_dots_announces_a_silent_step(line: str, phase: str | None) -> None:
    assert phase_of(line) == phase


def test_where_no_one_watches_the_text_is_the_run_s_own_and_nothing_spins() -> None:
    out = io.StringIO()
    with LiveOutput(PlainReporter(io.StringIO()), out, "Starting Python and PyTorch on the lab") as live:
        for chunk in RUN:
            live.write(chunk)
            assert out.getvalue().endswith(chunk)  # written as it came, announcing lines too
    assert out.getvalue() == "".join(RUN)


def test_at_a_terminal_a_spinner_holds_the_announcing_line_until_the_next_output() -> None:
    screen = Terminal()
    ui = Watcher(screen)
    with LiveOutput(ui, screen, "Starting Python and PyTorch on the lab") as live:
        live.write(RUN[0])
        assert screen.getvalue() == ""  # the spinner shows it while the data loads
        live.write(RUN[1])
        assert screen.getvalue() == RUN[0] + RUN[1]
        live.write("")  # no news (a partial line still buffered upstream): the spinner turns on
        for chunk in RUN[2:]:
            live.write(chunk)
    assert screen.getvalue() == "".join(RUN)  # once each step ended, the screen holds exactly the run's text
    assert ui.events == [
        "spin Starting Python and PyTorch on the lab after 0 lines",
        "stop Starting Python and PyTorch on the lab",
        "spin loading the data (synthetic:300) after 0 lines",
        "stop loading the data (synthetic:300)",
        "spin scoring the 75 test images after 3 lines",
        "stop scoring the 75 test images",
        "spin drawing the loss curve and the confusion matrix after 5 lines",
        "stop drawing the loss curve and the confusion matrix",
    ]


def test_a_spinner_on_the_terminal_leaves_output_that_goes_elsewhere_as_it_comes() -> None:
    piped = io.StringIO()  # stdout into a file or a pipe while stderr, and the spinner, are on the terminal
    ui = Watcher(piped)
    with LiveOutput(ui, piped) as live:
        live.write(RUN[4])
        assert piped.getvalue() == RUN[4]
        assert ui.events == ["spin drawing the loss curve and the confusion matrix after 0 lines"]
    assert ui.events[-1] == "stop drawing the loss curve and the confusion matrix"


def test_a_run_that_ends_on_an_announcing_line_still_shows_it() -> None:
    screen = Terminal()
    with LiveOutput(Watcher(screen), screen) as live:
        live.write("saving the model ...\n")
        assert screen.getvalue() == ""
    assert screen.getvalue() == "saving the model ...\n"


def test_the_lab_s_merged_log_spins_between_whole_lines(capsys: pytest.CaptureFixture[str]) -> None:
    ui = Watcher(io.StringIO())
    lines = RankLines()
    with _output(ui, "Starting Python and PyTorch on the lab") as show:

        def arrive(chunk: str) -> None:  # as cluster.follow_nodes passes a log on: whole merged lines
            if whole := lines.feed(chunk):
                show("\n".join(whole))

        arrive("[rank 0]:loading the da")  # half a line: the run has said nothing whole yet
        assert ui.events == ["spin Starting Python and PyTorch on the lab after 0 lines"]
        arrive("ta (cifar10) ...\n[rank 1]:ready\n")
        arrive("[rank 0]:drawing the plots ...\n")
    assert capsys.readouterr().out == (
        "[rank 0] loading the data (cifar10) ...\n[rank 1] ready\n[rank 0] drawing the plots ...\n"
    )
    assert [e for e in ui.events if e.startswith("spin")] == [
        "spin Starting Python and PyTorch on the lab after 0 lines",
        "spin [rank 0] drawing the plots after 0 lines",
    ]


def test_the_terminal_spinner_shows_its_label_and_the_seconds() -> None:
    from rich.console import Console

    ui = RichReporter()
    drawn = io.StringIO()
    ui.console = Console(file=drawn, force_terminal=True, width=80)
    with ui.status("Starting Python and PyTorch on the lab") as shown:
        time.sleep(0.3)
    assert shown is True
    assert "Starting Python and PyTorch on the lab" in drawn.getvalue() and "(0s)" in drawn.getvalue()
    with PlainReporter(io.StringIO()).status("anything") as shown:
        assert shown is False
