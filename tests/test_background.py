"""alviz.report.background: a drawing job in a spawned process, or inline, with the same result."""
import numpy as np
import pytest

from alviz.report import background as bg


def _job(a, b, *, scale=1.0, log):
    log(f"summing {len(a)} values")
    return {"sum": float((np.asarray(a) + b).sum() * scale)}


def _fails(*, log):
    raise ValueError("a bug in the drawing code")


def _expected():
    return {"sum": float((np.arange(5) + 2).sum() * 3.0)}


@pytest.mark.parametrize("enabled", [True, False])
def test_result_and_log_lines_are_the_same_in_a_process_or_inline(enabled):
    lines = []
    job = bg.Background(_job, np.arange(5), 2, scale=3.0, log=lines.append, enabled=enabled)
    assert (job.future is not None) == (enabled and bg.cores() >= 2)
    assert job.result() == _expected()
    assert lines == ["summing 5 values"]


def test_an_error_of_the_job_reaches_the_caller():
    with pytest.raises(ValueError, match="a bug in the drawing code"):
        bg.Background(_fails, log=lambda s: None).result()


def test_a_process_that_cannot_start_falls_back_to_drawing_inline(monkeypatch):
    import concurrent.futures

    class NoProcesses:
        def __init__(self, *a, **k):
            raise OSError("no more processes")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", NoProcesses)
    monkeypatch.setattr(bg, "cores", lambda: 2)
    lines = []
    job = bg.Background(_job, np.arange(5), 2, scale=3.0, log=lines.append)
    assert job.future is None
    assert job.result() == _expected()
    assert lines[0].startswith("drawing in a second process failed (OSError: no more processes)")


def test_a_dead_worker_falls_back_to_drawing_inline(monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    class Dead:
        def result(self):
            raise BrokenProcessPool("killed")

    class Pool:
        def shutdown(self, **k):
            pass

    monkeypatch.setattr(bg, "cores", lambda: 1)  # no real process: the broken one is put in place below
    job = bg.Background(_job, np.arange(5), 2, scale=3.0, log=lambda s: None)
    job.future, job.pool = Dead(), Pool()
    assert job.result() == _expected()
