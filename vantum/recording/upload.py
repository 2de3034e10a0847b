"""Recordings copied to S3-compatible storage after the call, by one actor.

boto3 (AWS's own SDK: S3 and every S3-compatible store, multipart uploads for
large files, the standard credential chain: ``AWS_ACCESS_KEY_ID`` and friends,
profiles, instance roles) blocks, so each upload runs in a worker thread. The
actor runs beside the server, never inside a call: a finished call's recording
is handed over with ``submit`` (a bounded channel, never blocking; full: the
file stays local and that is logged). The object's location is fixed before
the upload (``s3://bucket/prefix<call id>.wav``), so the call's record and its
``call.ended`` webhook name it at once; ``recording.uploaded`` is added to the
record once it is there. Uploads queued when the server stops are not resumed
(the files stay in ``VANTUM_RECORDINGS_DIR``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import trio

from ..errors import ConfigError
from ..records.store import RecordError, RecordWriter

log = logging.getLogger("vantum.recording")

UPLOADED_KIND = "recording.uploaded"
ATTEMPTS = 3


@attrs.frozen
class S3Target:
    bucket: str
    prefix: str
    endpoint_url: str | None = None
    """An S3-compatible store's URL (MinIO, R2, …); None: AWS."""

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None) -> S3Target:
        """``s3://bucket`` or ``s3://bucket/some/prefix/``."""
        if not url.startswith("s3://") or not url[5:].split("/", 1)[0]:
            raise ConfigError(f"VANTUM_RECORDINGS_S3_URL={url!r}: use s3://bucket/prefix/")
        bucket, _, prefix = url[5:].partition("/")
        return cls(bucket, prefix, endpoint_url)

    def key(self, call_id: str) -> str:
        return f"{self.prefix}{call_id}.wav"

    def url(self, call_id: str) -> str:
        return f"s3://{self.bucket}/{self.key(call_id)}"


@attrs.frozen
class UploadReport:
    call_id: str
    url: str | None
    """None: it failed (the local file stays)."""


class RecordingUploader:
    def __init__(
        self,
        target: S3Target,
        store: RecordWriter | None,
        *,
        keep_local: bool = True,
        queue_size: int = 64,
        retry_s: float = 2.0,
        reports: trio.MemorySendChannel[UploadReport] | None = None,
    ) -> None:
        self.target = target
        self.store = store
        self.keep_local = keep_local
        self._retry_s = retry_s
        self._reports = reports
        self._tx, self._rx = trio.open_memory_channel[tuple[str, Path]](queue_size)

    def submit(self, call_id: str, path: Path) -> bool:
        """Queue ``path`` for upload; False (and the file stays local) if full."""
        try:
            self._tx.send_nowait((call_id, path))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            log.warning("call %s: recording upload queue full; kept at %s only", call_id, path)
            return False
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        client = await trio.to_thread.run_sync(self._client)
        task_status.started()
        async with self._rx:
            async for call_id, path in self._rx:
                url = await self._upload(client, call_id, path)
                if self._reports is not None:
                    await self._reports.send(UploadReport(call_id, url))

    def _client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.target.endpoint_url)

    async def _upload(self, client: Any, call_id: str, path: Path) -> str | None:
        key = self.target.key(call_id)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await trio.to_thread.run_sync(
                    lambda: client.upload_file(
                        str(path), self.target.bucket, key, ExtraArgs={"ContentType": "audio/wav"}
                    )
                )
                break
            except Exception as exc:  # botocore's errors, OSError: all mean "not uploaded"
                log.warning(
                    "call %s: recording upload attempt %d failed: %s", call_id, attempt, exc
                )
                if attempt == ATTEMPTS:
                    return None
                await trio.sleep(self._retry_s * 2 ** (attempt - 1))
        url = self.target.url(call_id)
        size = (await trio.to_thread.run_sync(path.stat)).st_size
        if self.store is not None:
            try:
                payload = {"url": url, "bytes": size}
                await self.store.add_event(call_id, UPLOADED_KIND, payload, _now())
            except RecordError as exc:
                log.warning("call %s: upload not noted in the record: %s", call_id, exc)
        if not self.keep_local:
            await trio.to_thread.run_sync(path.unlink)
        return url


def _now() -> float:
    import time

    return time.time()
