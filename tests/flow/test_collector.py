"""The garbage collector's first threshold while a job's flow runs (flow/collector.py): raised
for the duration, given back when the last job flow of the process ends, and never forced on a
process that set its own."""

from __future__ import annotations

import gc
import threading
import uuid

import pytest

from bacalhau_flow import run
from bacalhau_flow.flow.collector import JOB_THRESHOLD, fewer_collections


@pytest.fixture(autouse=True)
def _default_thresholds():
    before, enabled = gc.get_threshold(), gc.isenabled()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)
    (gc.enable if enabled else gc.disable)()


def test_raised_while_it_runs_and_given_back_after():
    with fewer_collections():
        assert gc.get_threshold() == (JOB_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_given_back_only_when_the_last_of_jobs_side_by_side_ends():
    first_in, second_out = threading.Event(), threading.Event()
    seen = {}

    def first():
        with fewer_collections():
            first_in.set()
            second_out.wait(10)
            seen["after the second ended"] = gc.get_threshold()[0]

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(10)
    with fewer_collections():
        seen["both running"] = gc.get_threshold()[0]
    second_out.set()
    thread.join(10)
    assert seen == {"both running": JOB_THRESHOLD, "after the second ended": JOB_THRESHOLD}
    assert gc.get_threshold() == (700, 10, 10)


def test_an_exception_gives_them_back_too():
    with pytest.raises(RuntimeError):
        with fewer_collections():
            raise RuntimeError("a job that failed")
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("setting", ["disabled", "higher"])
def test_a_process_with_its_own_setting_is_left_as_it_is(setting):
    if setting == "disabled":
        gc.disable()
    else:
        gc.set_threshold(2 * JOB_THRESHOLD, 5, 5)
    own = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold() == own
    assert gc.get_threshold() == own
    assert gc.isenabled() == (setting != "disabled")


def test_thresholds_changed_during_the_job_are_kept():
    with fewer_collections():
        gc.set_threshold(1234, 7, 7)
    assert gc.get_threshold() == (1234, 7, 7)


def test_a_job_flow_runs_with_the_raised_threshold(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("a")
    seen = []
    spec = (f"pipeline: gc-{uuid.uuid4().hex[:8]}\ninput: {{url: {tmp_path / 'd'}, glob: '/*'}}\n"
            "transform: {cmd: ['true']}\n")
    (tmp_path / "p.yaml").write_text(spec)
    from bacalhau_flow.flow import job_run

    record = job_run.JobRun._record

    def spy(self, result, final):
        seen.append(gc.get_threshold()[0])
        return record(self, result, final)

    monkeypatch.setattr(job_run.JobRun, "_record", spy)
    job = run(str(tmp_path / "p.yaml"))
    assert job.state == "completed"
    assert seen == [JOB_THRESHOLD]
    assert gc.get_threshold() == (700, 10, 10)
