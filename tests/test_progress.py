"""Progress suits where it goes: plain periodic lines when the output is a pipe or a file, a bar on a terminal.
(A whole run logged to a pipe is checked on `test_crash_safety`'s uninterrupted run.)"""
import io
import os
import re
import time
from pathlib import Path


from w2s_jax.progress import Lines

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(?P<desc>\S[^:]*): (step|batch) (?P<n>\d+)/(?P<total>\d+) \(\d+%\) (loss=\S+ )?\| [\d.e+]+ "
                  r"(step|batch)/s \| \d+:\d\d elapsed, ~\d+:\d\d left$")
DONE = re.compile(r"^(?P<desc>\S[^:]*): done (?P<n>\d+)/(?P<total>\d+) (step|batch) in \d+:\d\d \([\d.e+]+ "
                  r"(step|batch)/s\)( loss=\S+)?$")


def test_lines_every_interval_with_rate_and_remaining_time():
    out = io.StringIO()
    bar = Lines(range(6), desc="m", unit="step", interval=0.05, stream=out)
    for k in bar:
        bar.set_postfix(loss=1.0 / (k + 1))
        time.sleep(0.03)
    lines = out.getvalue().splitlines()
    # 6 steps of 30 ms with a line at most every 50 ms: 1 to 3 running lines, then exactly one "done" line
    assert 1 <= len(lines) - 1 <= 3, lines
    assert all(LINE.match(x) for x in lines[:-1]), lines
    assert DONE.match(lines[-1]) and lines[-1].startswith("m: done 6/6 step") and "loss=0.1667" in lines[-1]


def test_a_stage_stopped_by_an_error_writes_no_done_line():
    out = io.StringIO()
    bar = Lines(range(5), desc="m", unit="step", interval=1e9, stream=out)
    try:
        for k in bar:
            if k == 2:
                raise FloatingPointError("loss is nan")
    except FloatingPointError:
        pass
    del bar
    import gc

    gc.collect()
    assert out.getvalue() == ""


def test_a_library_bar_becomes_two_plain_lines_off_a_terminal(monkeypatch, capsys):
    """transformers' GGUF dequantisation draws a tqdm bar of its own: off a terminal it is dropped for one line
    before and one after; on a terminal it is left alone. Hugging Face bars are switched off by environment."""
    from tqdm import tqdm

    from w2s_jax.progress import library_bars_as_a_line, quiet_library_bars

    monkeypatch.setenv("W2S_PROGRESS", "lines")
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    with library_bars_as_a_line("dequantising m.gguf"):
        for _ in tqdm(range(50), desc="Converting"):
            pass
    err = capsys.readouterr().err
    assert "\r" not in err and "Converting" not in err
    assert re.fullmatch(r"dequantising m.gguf \.\.\.\ndequantising m.gguf: done in 0:0\d\n", err), err
    quiet_library_bars()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.setenv("W2S_PROGRESS", "bar")
    with library_bars_as_a_line("x"):
        for _ in tqdm(range(3), desc="Converting"):
            pass
    assert "Converting" in capsys.readouterr().err
