"""The stream of micro-batches between neighbouring pipeline ranks: what rank r sends (its last
component's carry, AL's s and t, with y, packed into one float32 tensor) and what rank r+1
receives and unpacks, with a window of receives posted ahead and of sends in flight.

Per micro-batch this is the pipeline's own work besides computing, so it is kept small: a
receive goes into a buffer that is reused every `window + 1` micro-batches (one per slot and
micro-batch size), and the views that unpack it (the carry's tensors, reshaped; y) are made once
per buffer, not per message; a send packs with one `cat` and posts it. A buffer is reused only
after its micro-batch's backward pass is over (the receive for u + window is posted once u's is
complete, into the slot of u - 1), so no tensor autograd saved is overwritten.

What this is not: no schedule (``pipeline.py`` decides what is sent when), no process group
(``group.Comm``), no timing beyond adding the waits to the rank's profile phases.
"""
from __future__ import annotations

import math
import time
from collections import deque

import torch


class Inbox:
    """Micro-batches 0..len(sizes)-1 from rank `src`, `window` receives posted ahead."""

    def __init__(self, comm, src: int, sizes: list[int], in_shapes: list[tuple], device: torch.device,
                 window: int, phase: dict):
        self.comm, self.src, self.sizes, self.in_shapes, self.device = comm, src, sizes, in_shapes, device
        self.dims = [math.prod(sh) for sh in in_shapes]
        self.width = sum(self.dims) + 1  # the carry, flattened, then y as float32
        self.slots, self.phase = window + 1, phase
        self.cache: dict[tuple[int, int], tuple] = {}  # (slot, rows) -> (wire buffer, device buffer, carry, y column)
        self.pending: deque = deque()
        self.posted = 0
        while self.posted < min(window, len(sizes)):
            self._post()

    def _views(self, rows: int):
        buf = torch.empty((rows, self.width), dtype=torch.float32, device=self.comm.wire)
        dev = buf if buf.device == self.device else torch.empty(buf.shape, dtype=buf.dtype, device=self.device)
        pieces = torch.split(dev[:, :-1], self.dims, 1)
        carry = tuple(c.view(rows, *sh) for c, sh in zip(pieces, self.in_shapes))  # views, as reshape made them
        return buf, dev, carry, dev[:, -1:]

    def _post(self) -> None:
        key = (self.posted % self.slots, self.sizes[self.posted])
        if key not in self.cache:
            self.cache[key] = self._views(key[1])
        self.pending.append((self.comm.irecv_into(self.cache[key][0], self.src), key))
        self.posted += 1

    def get(self):
        """The next micro-batch: (carry, y as a float32 column, y as labels). Posts the receive
        `window` micro-batches ahead once this one is in."""
        work, key = self.pending.popleft()
        t = time.perf_counter()
        self.comm.wait(work)
        self.phase["recv_wait"] += time.perf_counter() - t
        if self.posted < len(self.sizes):
            self._post()
        buf, dev, carry, ycol = self.cache[key]
        if dev is not buf:  # gloo between ranks on GPUs: staged through host memory (the host buffer is
            dev.copy_(buf, non_blocking=True)  # free again when copy_ returns; the device one is stream-ordered)
        return carry, ycol, ycol[:, 0].long()  # y is an exact integer as float32


class Outbox:
    """Sends to rank `dst`: at most `window` in flight (then the oldest is waited for)."""

    def __init__(self, comm, dst: int, window: int, phase: dict):
        self.comm, self.dst, self.window, self.phase = comm, dst, window, phase
        self.sends: deque = deque()

    def send(self, carry, ycol: torch.Tensor) -> None:
        t = time.perf_counter()
        with torch.no_grad():  # the carry's tensors need no detaching under no_grad; cat promotes bf16 to float32
            packed = torch.cat([c.flatten(1) for c in carry] + [ycol], 1)
        self.sends.append(self.comm.isend(packed, self.dst))
        t2 = time.perf_counter()
        self.phase["pack_send"] += t2 - t
        while len(self.sends) > self.window:
            self.comm.wait(self.sends.popleft()[0])
        self.phase["send_wait"] += time.perf_counter() - t2

    def drain(self) -> None:
        t = time.perf_counter()
        while self.sends:
            self.comm.wait(self.sends.popleft()[0])
        self.phase["send_wait"] += time.perf_counter() - t
