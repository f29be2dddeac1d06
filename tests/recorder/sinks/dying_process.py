"""What a database process that cannot stay up runs (test_sink_process.py): it ends at once,
as one whose set-up fails does. Apart from the tests so that a spawned process can import it
without Django."""

import os


def dies_at_start(*arguments: object) -> None:
    os._exit(3)
