"""The activity options the run workflow's phases share: the timeout of a short activity and
the retry policy of every activity they call (unchanged values keep recorded histories replaying)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# start_to_close_timeout of an activity that only reads or writes a few rows.
SHORT = timedelta(seconds=30)
# Retried with backoff from 1 s up to 30 s between attempts.
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
