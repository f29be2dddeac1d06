"""The recordings' bucket: django-storages' S3Storage with the reads playback needs.

S3File, what S3Storage.open() returns, downloads the whole object at its first read (into
memory, with the default AWS_S3_MAX_MEMORY_SIZE of 0). A player seeking into an hour-long
call would have Django fetch 115 MB to send 64 KB. These reads are GETs of the bytes asked
for alone (RFC 9110 section 14, which S3 honours for one range), read as they are sent.
"""

from __future__ import annotations

from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

NOT_FOUND = 404


class RecordingsBucket(S3Storage):
    """S3Storage, plus open_range() and open_stream(): streaming reads of one object."""

    def open_range(self, name: str, first: int, last: int) -> StreamingBody:
        """Bytes `first` to `last` (inclusive) of the object, as a stream to read."""
        return self._get(name, Range=f"bytes={first}-{last}")

    def open_stream(self, name: str) -> StreamingBody:
        """The whole object as a stream, read once from the start (a hash, say)."""
        return self._get(name)

    def _get(self, name: str, **request: str) -> StreamingBody:
        key = self._normalize_name(clean_name(name))
        try:
            return self.bucket.Object(key).get(**request)["Body"]
        except ClientError as error:
            if error.response["ResponseMetadata"]["HTTPStatusCode"] == NOT_FOUND:
                raise FileNotFoundError(f"no object {key!r} in the recordings' bucket") from None
            raise
