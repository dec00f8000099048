"""Admission: how many images the service holds, from a request's arrival until its images are
taken into a model run. A request reserves room when it arrives (before its body is read), the
endpoint resizes the reservation to its image count once the body is parsed, and the room moves
into the batch queue as its images are queued. Beyond `max_queue_size` a request is refused at
once with a Retry-After estimate, so overload is cheap to refuse and never piles up unbounded in
the upload, decode or batch stages.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


class QueueFullError(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the queue is full; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class AdmissionClosedError(Exception):
    """The service is shutting down: nothing new is admitted."""


@dataclass(slots=True)
class Reservation:
    """Room held for one request's images that are not yet queued."""

    remaining: int
    uploading: bool = False  # held through the request's upload (an upload slot)


class Admission:
    """Counts reserved images; `queued` and `batch_seconds` read the batcher's queue length and
    recent model-run time (for Retry-After)."""

    def __init__(
        self,
        max_queue_size: int,
        max_batch_size: int,
        queued: Callable[[], int],
        batch_seconds: Callable[[], float],
    ) -> None:
        self.max_queue_size = max_queue_size
        self._max_batch_size = max_batch_size
        self._queued = queued
        self._batch_seconds = batch_seconds
        self.reserved = 0  # admitted images not yet queued (uploading, decoding)
        # Uploads in progress may hold at most half the queue, so clients that upload slowly
        # (or never finish) cannot lock everyone else out.
        self.upload_slots = max(1, max_queue_size // 2)
        self.uploading = 0
        self.closed = False

    @property
    def idle(self) -> bool:
        return self.reserved == 0

    def has_room(self, n: int = 1) -> bool:
        return self._queued() + self.reserved + n <= self.max_queue_size

    def reserve(self, n: int) -> Reservation:
        """Room for n images, all or nothing: QueueFullError when there is none. Room not
        handed to the queue must be given back with `release`."""
        self._check_room(n)
        self.reserved += n
        return Reservation(n)

    def reserve_upload(self) -> Reservation | None:
        """A slot for a request arriving with a body, held through its upload so that it is
        not refused once uploaded: QueueFullError when the queue is full; None (no slot; it
        reserves once uploaded, and may be refused then) while uploads hold their share."""
        self._check_room(1)
        if self.uploading >= self.upload_slots:
            return None
        self.uploading += 1
        self.reserved += 1
        return Reservation(1, uploading=True)

    def uploaded(self, reservation: Reservation) -> None:
        """The request's body has arrived: its slot no longer counts as an upload's."""
        if reservation.uploading:
            reservation.uploading = False
            self.uploading -= 1

    def resize(self, reservation: Reservation, n: int) -> None:
        """Make a reservation hold n images: grow it (QueueFullError when there is no room
        for the extra ones; it keeps what it held) or shrink it."""
        extra = n - reservation.remaining
        if extra > 0:
            self._check_room(extra)
        self.reserved += extra
        reservation.remaining = n

    def hand_over(self, reservation: Reservation, n: int) -> None:
        """n images of the reservation enter the batch queue (or the model): the queue counts
        them from now on."""
        if n > reservation.remaining:
            raise ValueError("more images than the reservation holds")
        reservation.remaining -= n
        self.reserved -= n

    def release(self, reservation: Reservation) -> None:
        """Give back the room still held (idempotent)."""
        self.uploaded(reservation)
        self.reserved -= reservation.remaining
        reservation.remaining = 0

    def only(self, reservation: Reservation) -> bool:
        """True when this reservation is all that is admitted (no other request is uploading
        or decoding)."""
        return self.reserved == reservation.remaining

    def close(self) -> None:
        self.closed = True

    def retry_after(self) -> int:
        """Seconds until the queue has room, from the recent model-run time."""
        held = self._queued() + self.reserved
        return max(1, math.ceil(math.ceil(held / self._max_batch_size) * self._batch_seconds()))

    def _check_room(self, n: int) -> None:
        if self.closed:
            raise AdmissionClosedError("the service is shutting down")
        if not self.has_room(n):
            raise QueueFullError(self.retry_after())
