"""Workers opening one SQLite records database side by side (``--workers N``)."""

from __future__ import annotations

import threading
from pathlib import Path

from vantum.records.sqlite import _connect


def test_many_processes_opening_one_database_at_once_all_open(tmp_path: Path) -> None:
    path = str(tmp_path / "calls.db")
    _connect(path, "NORMAL").close()  # exists already, as after the supervisor's orphan sweep
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def open_one() -> None:
        start.wait()
        try:
            for _ in range(20):
                _connect(path, "NORMAL").close()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
