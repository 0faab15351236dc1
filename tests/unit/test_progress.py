"""The progress line's figures from plain values: images, bytes, rate, ETA."""

from __future__ import annotations

import pytest

from replicator.cli.progress import Progress, clock, eta_seconds, progress_text


class TestEta:
    @pytest.mark.parametrize(
        ("done", "total", "elapsed", "expected"),
        [
            (5, 10, 10.0, 10.0),
            (1, 4, 3.0, 9.0),
            (10, 10, 5.0, 0.0),
            (0, 10, 5.0, None),
            (3, None, 5.0, None),
            (1, 10, 0.5, None),
        ],
        ids=["half", "quarter", "finished", "nothing-yet", "total-unknown", "too-early"],
    )
    def test_eta(
        self, done: int, total: int | None, elapsed: float, expected: float | None
    ) -> None:
        """Remaining work at the average pace so far; unknown until it can be told."""
        assert eta_seconds(done, total, elapsed) == expected

    @pytest.mark.parametrize(
        ("seconds", "text"), [(0, "0:00"), (7.4, "0:07"), (125, "2:05"), (3725, "1:02:05")]
    )
    def test_clock(self, seconds: float, text: str) -> None:
        """m:ss, and h:mm:ss from an hour on."""
        assert clock(seconds) == text


class TestText:
    def test_everything_known(self) -> None:
        """Images done of total, failures, megabytes, rate and ETA."""
        text = progress_text(
            images_done=3, images_total=12, failed=1, bytes_done=30_000_000, elapsed=6.0
        )
        assert text == "3/12 images (1 failed), 30.0 MB, 5.0 MB/s, ETA 0:18"

    def test_total_unknown(self) -> None:
        """Before the listing is read: no total, no ETA."""
        text = progress_text(images_done=0, images_total=None, failed=0, bytes_done=0, elapsed=0.0)
        assert text == "0 images, 0.0 MB, 0.0 MB/s, ETA ?"

    def test_observer_counts(self) -> None:
        """The copier's observers add to the counts the line is made of."""
        progress = Progress(started=0.0)
        progress.plan(2)
        progress.add_bytes("copied", 2_000_000)
        progress.image_done()
        progress.image_done(failed=True)
        assert progress.text(now=4.0) == "2/2 images (1 failed), 2.0 MB, 0.5 MB/s, ETA 0:00"


class TestBackfillLine:
    def test_scan_counts_then_jobs(self) -> None:
        """backfill's line: the scan's counts, then its jobs as images with bytes and rate."""
        from replicator.cli.backfill_output import progress_line
        from replicator.scan.backfill_run import BackfillReport
        from replicator.scan.scanning import ScanCounts

        report = BackfillReport(ScanCounts())
        report.counts.repositories, report.counts.tags, report.counts.copies = 2, 9, 4
        report.bytes_copied = 8_000_000
        line = progress_line(report, elapsed=4.0)
        assert line.startswith("backfill: 2 repositories, 9 tags, 0 up to date, 0 denied; ")
        assert line.endswith("0/4 images, 8.0 MB, 2.0 MB/s, ETA ?")
