"""``streams.progress``: plain periodic lines when stderr is not a terminal, a bar when it is."""

from __future__ import annotations

import io

import pytest

from streams.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_short_step_prints_nothing() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress("simulate", 10, unit="payloads", live=False, stream=out, clock=clock) as bar:
        for _ in range(10):
            clock.now += 0.1
            bar.advance()
    assert out.getvalue() == ""


def test_a_long_step_prints_a_line_per_interval_and_a_last_one() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress(
        "train", 20, unit="epochs", live=False, every_s=5.0, stream=out, clock=clock
    ) as bar:
        for epoch in range(20):
            clock.now += 1.0
            bar.advance(note=f"val_loss {0.5 - epoch / 100:.2f}")
    lines = out.getvalue().splitlines()
    assert lines == [
        "train: 25% | 5/20 epochs | val_loss 0.46 | 5s elapsed",
        "train: 50% | 10/20 epochs | val_loss 0.41 | 10s elapsed",
        "train: 75% | 15/20 epochs | val_loss 0.36 | 15s elapsed",
        "train: 100% | 20/20 epochs | val_loss 0.31 | 20s elapsed",
    ]


def test_the_final_state_is_written_on_exit_when_lines_were_written() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress("train", 20, unit="epochs", live=False, stream=out, clock=clock) as bar:
        for _ in range(7):  # early stopping after 7 epochs
            clock.now += 1.0
            bar.advance()
    assert out.getvalue().splitlines() == [
        "train: 25% | 5/20 epochs | 5s elapsed",
        "train: 35% | 7/20 epochs | 7s elapsed",
    ]


def test_an_unknown_total_shows_the_count_and_no_percentage() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress("import-taobao", unit="rows", live=False, stream=out, clock=clock) as bar:
        clock.now += 6
        bar.update(1234)
    assert out.getvalue().splitlines()[0] == "import-taobao: 1,234 rows | 6s elapsed"


def test_no_last_line_when_the_step_fails() -> None:
    out, clock = io.StringIO(), Clock()
    with (
        pytest.raises(RuntimeError),
        Progress("evaluate", 4, live=False, stream=out, clock=clock) as bar,
    ):
        clock.now += 6
        bar.advance()
        raise RuntimeError("boom")
    assert out.getvalue().splitlines() == ["evaluate: 25% | 6s elapsed"]


def test_disabled_prints_nothing() -> None:
    out, clock = io.StringIO(), Clock()
    with Progress("simulate", 4, enabled=False, stream=out, clock=clock) as bar:
        clock.now += 60
        bar.advance(4)
    assert out.getvalue() == "" and bar.completed == 4


def test_the_bar_runs_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws as on a terminal
    with Progress("train", 3, unit="epochs") as bar:
        assert bar.live
        bar.advance(note="loss 0.5")
        bar.update(3, note="loss 0.4")
    err = capsys.readouterr().err
    assert "train" in err and "3/3 epochs" in err and "loss 0.4" in err
