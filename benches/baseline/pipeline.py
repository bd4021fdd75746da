"""The Python baseline's pipeline without ROS: the same algorithms as the Rust node's core
(src/core.rs and the modules it drives), written in Python for the baseline node
(vla_baseline_node.py) and its bag replay (replay.py), so that both run one code path
and the parity test can hold the baseline's commands against the Rust node's.

- `ImageDecoder`: checks a camera image (encoding, size, step, data length) and
  area-averages it to the policy's input size with exact integer arithmetic (each
  output pixel is `(sum + n // 2) // n` over its source span), as src/image.rs does;
- `ApproximateTimeSync`: message_filters' ApproximateTime algorithm (approximate_time.h)
  with the inter-message lower bound and age penalty, as src/sync.rs ports it;
- `JointBuffer`, `CharTokenizer`, `Smoother` (ACT temporal ensembling, exponential,
  none), `SafetyFilter`: as src/joints.rs, src/tokenizer.rs, src/smoothing.rs and
  src/safety.rs;
- `Pipeline`: inputs in, observations out, chunks in, one safe command per control tick
  out, with the same holds (silent inputs, no instruction, policy faults, clock jumps)
  and the same counters and reasons as the node's /diagnostics.

Time is an input everywhere (nanoseconds): the node passes its clock, the replay the
recording's.
"""

from __future__ import annotations

import math
import threading
import unicodedata
from collections import deque
from dataclasses import dataclass, field

import numpy as np

JOINT_STATES_TOPIC = "joint_states"
INSTRUCTION_TOPIC = "instruction"


def camera_topic(name: str) -> str:
    return f"camera/{name}/image_raw"


def secs_to_ns(s: float) -> int:
    return round_half_away(s * 1e9)


def round_half_away(x: float) -> int:
    """Rust's f64::round (half away from zero); Python's round() rounds half to even."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


# ----------------------------------------------------------------------------- images

#: encoding -> (channels, byte offsets of R, G, B within a pixel)
LAYOUTS = {
    "rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)), "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)), "8UC1": (1, (0, 0, 0)),
}


class ImageRejected(Exception):
    """A camera image that cannot be used; `kind` is the reason counted in diagnostics."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


def spans(src: int, dst: int) -> list[tuple[int, int]]:
    """Source span of each output row or column, as src/image.rs: integer bounds keep an
    integer factor exact and cover every source pixel exactly once otherwise."""
    out = []
    for o in range(dst):
        lo = o * src // dst
        out.append((lo, max((o + 1) * src // dst, lo + 1)))
    return out


class _Axis:
    """How to sum the spans of one axis with a few vectorized passes. The spans repeat
    every `period` outputs (`stride` source pixels, both divided by the sizes' greatest
    common divisor), so output `j + m * period` is the sum of the strided source slices
    `start_j + k :: stride`, k < its span: one pass over every source row or column (an
    integer factor has period 1: `f` slices). Sizes without a short period (more than 64
    source pixels per period) gather each offset with an index array instead."""

    def __init__(self, src: int, dst: int):
        sp = spans(src, dst)
        self.lengths = np.array([b - a for a, b in sp])
        g = math.gcd(src, dst)
        self.period, self.stride = dst // g, src // g
        self.periodic = self.stride <= 64
        self.pattern = [sp[j] for j in range(self.period)]
        self.starts = np.array([a for a, _ in sp])
        self.gathers = [(k, np.nonzero(self.lengths > k)[0]) for k in range(int(self.lengths.max()))]


class ImageDecoder:
    """sensor_msgs/Image fields in, the policy's uint8 RGB input (out_h x out_w x 3) out.

    Sums are exact integers: source rows are summed into uint16 (a span of up to 257
    rows of 255 fits; uint32 beyond), then columns, then `(sum + n // 2) // n`, the training pipeline's
    arithmetic, so the policy sees what the Rust node gives it, byte for byte. Every
    pass is one vectorized numpy operation over a whole image, and the working buffers
    are allocated once per image size, not per message."""

    def __init__(self, width: int, height: int, out_w: int, out_h: int):
        self.expected = (width, height)
        self.out_w, self.out_h = out_w, out_h
        self.rows, self.cols = _Axis(height, out_h), _Axis(width, out_w)
        n = self.rows.lengths[:, None] * self.cols.lengths[None, :]
        self.row_type = np.uint32 if int(self.rows.lengths.max()) * 255 >= 1 << 16 else np.uint16
        big = int(self.rows.lengths.max()) * int(self.cols.lengths.max()) * 255 >= 1 << 16
        self.sum_type = np.uint32 if big else self.row_type
        # The rounding division: by a constant when every span has one size (integer
        # factors), else per pixel as floor((sum + n // 2 + 0.5) / n) in float64: the
        # quotient's fraction stays at least 0.5 / n away from an integer, so the
        # floor is exact.
        self.n = int(n[0, 0]) if (n == n[0, 0]).all() else None
        self.plus = (n // 2 + 0.5)[:, :, None]
        self.inv = 1.0 / n[:, :, None]
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def check(self, width: int, height: int, encoding: str, step: int, length: int) -> tuple[int, tuple[int, ...]]:
        layout = LAYOUTS.get(encoding)
        if layout is None:
            raise ImageRejected("unsupported encoding",
                                f"unsupported encoding `{encoding}` (rgb8, bgr8, rgba8, bgra8, mono8 are)")
        if (width, height) != self.expected:
            raise ImageRejected("image size differs from image_width x image_height",
                                f"size {width}x{height} differs from the configured "
                                f"{self.expected[0]}x{self.expected[1]}")
        ch = layout[0]
        if step < width * ch:
            raise ImageRejected("step below width x channels", f"step {step} is below width {width} x {ch} channels")
        if length != step * height:
            raise ImageRejected("data length differs from step x height",
                                f"data holds {length} bytes, step x height = {step * height}")
        return layout

    def decode(self, width: int, height: int, encoding: str, step: int, data) -> np.ndarray:
        """The image at the policy's size, or ImageRejected. `data`: any buffer."""
        ch, offs = self.check(width, height, encoding, step, len(data))
        a = np.frombuffer(data, np.uint8).reshape(height, step)[:, : width * ch].reshape(height, width, ch)
        rows_sum, out = self._buffers.get(ch) or self._buffers.setdefault(
            ch, (np.empty((self.out_h, width, ch), self.row_type),
                 np.empty((self.out_h, self.out_w, ch), self.sum_type)))
        self._sum(a, self.rows, 0, rows_sum)
        self._sum(rows_sum, self.cols, 1, out)
        if self.n is not None:
            out += self.n // 2
            out //= self.n
            q = out
        else:
            q = (out + self.plus) * self.inv
        if offs == (0, 1, 2) and ch == 3:
            return q.astype(np.uint8)
        return q[:, :, list(offs)].astype(np.uint8)

    @staticmethod
    def _sum(a: np.ndarray, axis: _Axis, dim: int, out: np.ndarray) -> None:
        """Sums `a`'s spans along `dim` (0 rows, 1 columns) into `out`."""
        def src(sl):
            return a[sl] if dim == 0 else a[:, sl]

        def dst(sl):
            return out[sl] if dim == 0 else out[:, sl]

        if axis.periodic:
            for j, (lo, hi) in enumerate(axis.pattern):
                o = dst(slice(j, None, axis.period))
                if hi - lo == 1:
                    o[...] = src(slice(lo, None, axis.stride))
                    continue
                np.add(src(slice(lo, None, axis.stride)), src(slice(lo + 1, None, axis.stride)), out=o, dtype=out.dtype)
                for k in range(lo + 2, hi):
                    o += src(slice(k, None, axis.stride))
            return
        out[...] = src(axis.starts)
        for k, idx in axis.gathers[1:]:
            if dim == 0:
                out[idx] += a[axis.starts[idx] + k]
            else:
                out[:, idx] += a[:, axis.starts[idx] + k]


# ----------------------------------------------------------------------- synchronizer

UNMATCHED = "sync: a closer message was used"
NO_MATCH = "sync: no match within sync_max_interval_s"
QUEUE_FULL = "sync: queue full"
STAMP_NOT_INCREASING = "stamp not later than the previous one"


class _Topic:
    __slots__ = ("deque", "past", "has_dropped", "last_stamp")

    def __init__(self):
        self.deque: deque = deque()
        self.past: list = []
        self.has_dropped = False
        self.last_stamp: int | None = None


class ApproximateTimeSync:
    """message_filters' ApproximateTime policy over N topics (approximate_time.h, as
    src/sync.rs ports it): each message used at most once, a set published as soon as
    it is proven to have the smallest span among the sets that could hold its pivot,
    bounded queues, spans never above `max_interval`; every message leaves in a set or
    in `dropped` with a reason. `add` returns (sets, dropped): sets are lists of
    (stamp, msg) in topic order; dropped are (topic, stamp, msg, reason)."""

    def __init__(self, num_topics: int, queue_size: int, max_interval: int, age_penalty: float,
                 inter_message_lower_bound: int = 0):
        assert num_topics >= 2 and queue_size >= 1
        self.topics = [_Topic() for _ in range(num_topics)]
        self.queue_size, self.max_interval, self.age_penalty = queue_size, max_interval, age_penalty
        self.bound = max(0, inter_message_lower_bound)
        self.num_non_empty = 0
        self.pivot: int | None = None
        self.pivot_time = self.candidate_start = self.candidate_end = 0

    def clear(self) -> list:
        out = []
        for i, t in enumerate(self.topics):
            out += [(i, s, m) for s, m in t.past] + [(i, s, m) for s, m in t.deque]
            t.past.clear()
            t.deque.clear()
            t.has_dropped = False
            t.last_stamp = None
        self.num_non_empty = 0
        self.pivot = None
        return out

    def add(self, topic: int, stamp: int, msg) -> tuple[list, list]:
        sets, dropped = [], []
        t = self.topics[topic]
        if t.last_stamp is not None and stamp <= t.last_stamp:
            dropped.append((topic, stamp, msg, STAMP_NOT_INCREASING))
            return sets, dropped
        t.last_stamp = stamp
        t.deque.append((stamp, msg))
        if len(t.deque) == 1:
            self.num_non_empty += 1
            if self.num_non_empty == len(self.topics):
                self._process(sets, dropped)
        if len(t.deque) + len(t.past) > self.queue_size:
            self._recover_all()
            s, m = t.deque.popleft()
            dropped.append((topic, s, m, QUEUE_FULL))
            t.has_dropped = True
            if not t.deque:
                self.num_non_empty -= 1
            if self.pivot is not None:
                self.pivot = None
                self._process(sets, dropped)
        return sets, dropped

    def _bounds(self, times: list[int]) -> tuple[tuple[int, int], tuple[int, int]]:
        end = start = (0, times[0])
        for i in range(1, len(times)):
            ti = times[i]
            if ti > end[1]:
                end = (i, ti)
            if ti < start[1]:
                start = (i, ti)
        return end, start

    def _candidate_bounds(self):
        return self._bounds([t.deque[0][0] for t in self.topics])

    def _virtual_bounds(self):
        times = []
        for t in self.topics:
            if t.deque:
                times.append(t.deque[0][0])
            else:
                times.append(max(t.past[-1][0] + self.bound, self.pivot_time))
        return self._bounds(times)

    def _make_candidate(self, dropped: list) -> None:
        for i, t in enumerate(self.topics):
            dropped += [(i, s, m, UNMATCHED) for s, m in t.past]
            t.past.clear()

    def _move_front_to_past(self, i: int) -> None:
        t = self.topics[i]
        t.past.append(t.deque.popleft())
        if not t.deque:
            self.num_non_empty -= 1

    def _delete_front(self, i: int, reason: str, dropped: list) -> None:
        t = self.topics[i]
        s, m = t.deque.popleft()
        dropped.append((i, s, m, reason))
        if not t.deque:
            self.num_non_empty -= 1

    def _recover(self, i: int, n: int) -> None:
        t = self.topics[i]
        for _ in range(n):
            t.deque.appendleft(t.past.pop())

    def _recount(self) -> None:
        self.num_non_empty = sum(1 for t in self.topics if t.deque)

    def _recover_all(self) -> None:
        for i, t in enumerate(self.topics):
            self._recover(i, len(t.past))
        self._recount()

    def _publish_candidate(self, sets: list) -> None:
        self.pivot = None
        out = []
        for i, t in enumerate(self.topics):
            self._recover(i, len(t.past))
            out.append(t.deque.popleft())
        self._recount()
        sets.append(out)

    def _not_better(self, end: int, start: int) -> bool:
        return (end - self.candidate_end) * (1.0 + self.age_penalty) >= (start - self.candidate_start)

    def _process(self, sets: list, dropped: list) -> None:
        n = len(self.topics)
        while self.num_non_empty == n:
            (end_index, end_time), (start_index, start_time) = self._candidate_bounds()
            for i, t in enumerate(self.topics):
                if i != end_index:
                    t.has_dropped = False
            if self.pivot is None:
                if end_time - start_time > self.max_interval:
                    self._delete_front(start_index, NO_MATCH, dropped)
                    continue
                if self.topics[end_index].has_dropped:
                    self._delete_front(start_index, UNMATCHED, dropped)
                    continue
                self._make_candidate(dropped)
                self.candidate_start, self.candidate_end = start_time, end_time
                self.pivot, self.pivot_time = end_index, end_time
                self._move_front_to_past(start_index)
            else:
                if not self._not_better(end_time, start_time):
                    self._make_candidate(dropped)
                    self.candidate_start, self.candidate_end = start_time, end_time
                self._move_front_to_past(start_index)
            if start_index == self.pivot:
                self._publish_candidate(sets)
            elif self._not_better(end_time, self.pivot_time):
                self._publish_candidate(sets)
            elif self.num_non_empty < n:
                self._virtual_search(sets)

    def _virtual_search(self, sets: list) -> None:
        moves = [0] * len(self.topics)
        while True:
            (_, end_time), (start_index, start_time) = self._virtual_bounds()
            if self._not_better(end_time, self.pivot_time):
                self._publish_candidate(sets)
                return
            if not self._not_better(end_time, start_time):
                for i, m in enumerate(moves):
                    self._recover(i, m)
                self._recount()
                return
            self._move_front_to_past(start_index)
            moves[start_index] += 1


# ------------------------------------------------------------ joints, tokens, actions

HISTORY = 400  # two seconds of joint states at 200 Hz


class JointStateRejected(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


class JointBuffer:
    """Joint states matched to the configured joints by name, kept for a while so that a
    camera set can be paired with the state nearest its stamp."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.stamps: deque[int] = deque(maxlen=HISTORY)
        self.states: deque[np.ndarray] = deque(maxlen=HISTORY)
        self._mapping: tuple[list[str], list[int]] | None = None

    def push(self, stamp: int, names, positions) -> None:
        if len(names) != len(positions):
            raise JointStateRejected("names and positions differ in length",
                                     f"{len(names)} names but {len(positions)} positions")
        if self.stamps and stamp <= self.stamps[-1]:
            raise JointStateRejected(STAMP_NOT_INCREASING, STAMP_NOT_INCREASING)
        if self._mapping is None or self._mapping[0] != names:
            where = {n: i for i, n in enumerate(names)}
            missing = [n for n in self.names if n not in where]
            if missing:
                raise JointStateRejected("missing joints", f"missing joint(s) {missing}")
            self._mapping = (list(names), [where[n] for n in self.names])
        q = np.array([positions[i] for i in self._mapping[1]], dtype=np.float64)
        bad = np.nonzero(~np.isfinite(q))[0]
        if len(bad):
            raise JointStateRejected("non-finite position", f"non-finite position for joint `{self.names[bad[0]]}`")
        self.stamps.append(stamp)
        self.states.append(q)

    def nearest(self, stamp: int, tolerance: int) -> np.ndarray | None:
        # Stamps increase: the nearest is the last one before `stamp` or the first at or
        # after it (ties to the earlier one, as the node's min_by_key).
        i = _partition_point(self.stamps, stamp)
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(self.stamps) and (best is None or abs(self.stamps[j] - stamp) < abs(self.stamps[best] - stamp)):
                best = j
        if best is None or abs(self.stamps[best] - stamp) > tolerance:
            return None
        return self.states[best]

    def latest(self) -> np.ndarray | None:
        return self.states[-1] if self.states else None

    def clear(self) -> None:
        self.stamps.clear()
        self.states.clear()


def _partition_point(stamps: deque, stamp: int) -> int:
    """Index of the first stamp >= `stamp` (binary search on a deque)."""
    lo, hi = 0, len(stamps)
    while lo < hi:
        mid = (lo + hi) // 2
        if stamps[mid] < stamp:
            lo = mid + 1
        else:
            hi = mid
    return lo


@dataclass
class Tokens:
    ids: np.ndarray  # int64, max_length
    mask: np.ndarray  # bool, max_length
    pieces: list[str]
    unknown: int


class CharTokenizer:
    """The policy's character tokenizer (docs/POLICY_CONTRACT.md): one token per
    character, ids 2 + vocabulary index, ASCII lowercased when the policy says so."""

    def __init__(self, spec: dict):
        if spec["type"] != "char":
            raise ValueError(f"tokenizer type `{spec['type']}` is not supported (only `char`)")
        self.spec = spec
        self.ids = {c: 2 + i for i, c in enumerate(spec["vocab"])}
        self.max_length = spec["max_length"]

    def encode(self, text: str) -> Tokens:
        s = self.spec
        ids = np.full(self.max_length, s["pad_id"], np.int64)
        mask = np.zeros(self.max_length, bool)
        pieces, unknown = [], 0
        for c in text.strip()[: self.max_length]:
            if s["lowercase"] and "A" <= c <= "Z":
                c = c.lower()
            i = self.ids.get(c)
            if i is None:
                unknown += 1
                i = s["unk_id"]
            ids[len(pieces)], mask[len(pieces)] = i, True
            pieces.append(c)
        return Tokens(ids, mask, pieces, unknown)


class TemporalEnsembler:
    """ACT temporal ensembling over asynchronous chunks (src/smoothing.rs): the action for
    a tick is the mean of every chunk's action for that tick, weighted exp(-m * i) with
    i = 0 the oldest, kept as running weighted sums per future tick."""

    def __init__(self, m: float):
        self.m = m
        self.slots: deque[list] = deque()  # [tick, weighted sum, total weight, chunks seen]
        self.next_tick = -(1 << 63)

    def add_chunk(self, first_tick: int, actions: np.ndarray) -> None:
        for k, a in enumerate(actions):
            tick = first_tick + k
            if tick < self.next_tick:
                continue
            front = self.slots[0][0] if self.slots else tick
            if tick < front:
                for t in range(front - 1, tick - 1, -1):
                    self.slots.appendleft([t, np.zeros(len(a)), 0.0, 0])
            front = self.slots[0][0] if self.slots else tick
            idx = tick - front
            while len(self.slots) <= idx:
                self.slots.append([front + len(self.slots), np.zeros(len(a)), 0.0, 0])
            slot = self.slots[idx]
            w = math.exp(-self.m * slot[3])
            slot[1] += w * a
            slot[2] += w
            slot[3] += 1

    def action_for(self, tick: int) -> np.ndarray | None:
        self.next_tick = tick + 1
        while self.slots:
            if self.slots[0][0] > tick:
                return None
            t, s, w, n = self.slots.popleft()
            if t == tick and n > 0:
                return s / w
        return None

    def reset(self) -> None:
        self.slots.clear()


class Smoother:
    """`smoothing`: temporal_ensemble, exponential (on the newest chunk) or none."""

    def __init__(self, kind: str, ensemble_m: float = 0.05, alpha: float = 0.5):
        if kind not in ("temporal_ensemble", "exponential", "none"):
            raise ValueError(f"smoothing `{kind}`: expected temporal_ensemble, exponential or none")
        self.kind, self.alpha = kind, alpha
        self.ensembler = TemporalEnsembler(ensemble_m)
        self.reset()

    def add_chunk(self, first_tick: int, actions: np.ndarray) -> None:
        if self.kind == "temporal_ensemble":
            self.ensembler.add_chunk(first_tick, actions)
        else:
            self.chunk = (first_tick, actions)

    def action_for(self, tick: int) -> np.ndarray | None:
        if self.kind == "temporal_ensemble":
            return self.ensembler.action_for(tick)
        first, actions = self.chunk
        k = tick - first
        if actions is None or not 0 <= k < len(actions):
            return None
        x = actions[k]
        if self.kind == "exponential":
            x = x.copy() if self.last is None else self.alpha * x + (1.0 - self.alpha) * self.last
            self.last = x
        return x

    def reset(self) -> None:
        self.ensembler.reset()
        self.chunk: tuple[int, np.ndarray | None] = (0, None)
        self.last = None


class SafetyFilter:
    """Finite targets only; each joint within its limits; no joint moving more than its
    step per tick. The step limit first and the position limits last (src/safety.rs)."""

    def __init__(self, lower, upper, max_step):
        self.lower, self.upper, self.step = (np.asarray(v, np.float64) for v in (lower, upper, max_step))

    def apply(self, target: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, int, int]:
        n = len(self.lower)
        if len(target) != n or len(previous) != n:
            raise ValueError(f"target has {min(len(target), len(previous))} values, {n} joints are configured")
        bad = np.nonzero(~np.isfinite(target))[0]
        if len(bad):
            raise ValueError(f"non-finite target for joint {bad[0]}: {target[bad[0]]}")
        limited = np.minimum(np.maximum(target, self.lower), self.upper)
        p = np.where(np.isfinite(previous), previous, limited)
        stepped = np.minimum(np.maximum(limited, p - self.step), p + self.step)
        out = np.minimum(np.maximum(stepped, self.lower), self.upper)
        return out, int(np.count_nonzero(limited != target)), int(np.count_nonzero(stepped != limited))


# ----------------------------------------------------------------------------- counters

@dataclass
class Stats:
    """Every input counted as received, then used, dropped or rejected with a reason;
    published on /diagnostics under the node's keys."""

    received: dict = field(default_factory=dict)
    used: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)  # (topic, reason) -> n
    rejected: dict = field(default_factory=dict)
    observations: int = 0
    observations_superseded: int = 0
    inferences: int = 0
    inference_errors: int = 0
    inference_ms_last: float = 0.0
    inference_ms_max: float = 0.0
    commands: int = 0
    hold_commands: int = 0
    clipped_by_limit: int = 0
    clipped_by_step: int = 0
    explanations: int = 0
    explain_errors: int = 0
    explain_ms_last: float = 0.0
    explain_ms_max: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, table: dict, key) -> None:
        table[key] = table.get(key, 0) + 1

    def values(self, state: str) -> list[tuple[str, str]]:
        """The node's diagnostic keys and values (src/ros_msgs.rs `diagnostics`)."""
        with self.lock:
            v = [("state", state)] + [(k, str(getattr(self, k))) for k in (
                "observations", "observations_superseded", "inferences", "inference_errors")]
            v += [("inference_ms_last", f"{self.inference_ms_last:.2f}"), ("inference_ms_max", f"{self.inference_ms_max:.2f}")]
            v += [(k, str(getattr(self, k))) for k in (
                "commands", "hold_commands", "clipped_by_limit", "clipped_by_step", "explanations", "explain_errors")]
            v += [("explain_ms_last", f"{self.explain_ms_last:.1f}"), ("explain_ms_max", f"{self.explain_ms_max:.1f}")]
            v += [("dropped_total", str(sum(self.dropped.values()))), ("rejected_total", str(sum(self.rejected.values())))]
            v += [(f"received/{t}", str(n)) for t, n in sorted(self.received.items())]
            v += [(f"used/{t}", str(n)) for t, n in sorted(self.used.items())]
            v += [(f"dropped/{t}/{r}", str(n)) for (t, r), n in sorted(self.dropped.items())]
            v += [(f"rejected/{t}/{r}", str(n)) for (t, r), n in sorted(self.rejected.items())]
        return v


# ----------------------------------------------------------------------------- pipeline

@dataclass
class Observation:
    stamp: int  # newest camera stamp of the set
    arrival: int  # when the set was complete, on the node's clock
    images: np.ndarray  # cameras x H x W x 3 uint8
    state: np.ndarray  # joint positions in the configured order
    instruction: str
    tokens: Tokens
    instruction_seq: int
    cameras: list  # the set's messages, for explanations


@dataclass
class Tick:
    command: np.ndarray | None
    target: np.ndarray | None
    source: int | None
    state: str
    level: int
    hold: bool
    state_changed: bool


RUNNING = "running"


class Pipeline:
    """The node's core in Python: see the module docstring. Not thread-safe by itself:
    the node calls it under one lock, as the Rust node locks its Core."""

    def __init__(self, p: dict, meta: dict, stats: Stats):
        n = len(p["camera_names"])
        self.camera_topics = [camera_topic(c) for c in p["camera_names"]]
        self.sync = ApproximateTimeSync(n, p["sync_queue_size"], secs_to_ns(p["sync_max_interval_s"]),
                                        p["sync_age_penalty"], secs_to_ns(p["sync_inter_message_lower_bound_s"]))
        self.joints = JointBuffer(p["joint_names"])
        self.tokenizer = CharTokenizer(meta["tokenizer"])
        self.instruction: tuple[str, Tokens, int] | None = None
        self.last_arrival: list[int | None] = [None] * (n + 1)
        self.timeouts = [secs_to_ns(p["camera_timeout_s"])] * n + [secs_to_ns(p["joint_state_timeout_s"])]
        self.joint_tolerance = secs_to_ns(p["joint_state_tolerance_s"])
        self.period = round_half_away(1e9 / p["control_rate_hz"])
        self.smoother = Smoother(p["smoothing"], p["ensemble_m"], p["exponential_alpha"])
        self.safety = SafetyFilter(p["joint_lower_limits"], p["joint_upper_limits"], p["max_step_per_tick"])
        self.tick_base: int | None = None
        self.last_now: int | None = None
        self.last_command: np.ndarray | None = None
        self.policy_fault: str | None = None
        self.chunk_seq = 0
        self.newest_chunk: int | None = None
        self.state = ("holding: no instruction yet", 1)
        self.clock_jumped = False
        self.stats = stats

    # inputs

    def on_image(self, camera: int, stamp: int, now: int, decoded, source) -> list[Observation]:
        """A camera image, already decoded (an array) or rejected (ImageRejected)."""
        topic = self.camera_topics[camera]
        st = self.stats
        with st.lock:
            st.count(st.received, topic)
            if isinstance(decoded, ImageRejected):
                st.count(st.rejected, (topic, decoded.kind))
                return []
        self.last_arrival[camera] = now
        sets, dropped = self.sync.add(camera, stamp, (decoded, now, source))
        if dropped:
            with st.lock:
                for k, _, _, reason in dropped:
                    st.count(st.dropped, (self.camera_topics[k], reason))
        return [o for o in map(self._observe, sets) if o is not None]

    def _observe(self, members: list) -> Observation | None:
        stamp = max(s for s, _ in members)
        q = self.joints.nearest(stamp, self.joint_tolerance)
        st = self.stats
        if self.instruction is None or q is None:
            reason = ("no instruction yet" if self.instruction is None
                      else "no joint state within joint_state_tolerance_s of the set")
            with st.lock:
                for t in self.camera_topics:
                    st.count(st.dropped, (t, reason))
            return None
        text, tokens, seq = self.instruction
        with st.lock:
            for t in self.camera_topics:
                st.count(st.used, t)
            st.observations += 1
        return Observation(stamp=stamp, arrival=max(m[1] for _, m in members),
                           images=np.stack([m[0] for _, m in members]), state=q, instruction=text,
                           tokens=tokens, instruction_seq=seq, cameras=[m[2] for _, m in members])

    def on_joint_state(self, stamp: int, now: int, names, positions) -> None:
        st = self.stats
        try:
            self.joints.push(stamp, names, positions)
        except JointStateRejected as e:
            with st.lock:
                st.count(st.received, JOINT_STATES_TOPIC)
                st.count(st.rejected, (JOINT_STATES_TOPIC, e.kind))
            return
        with st.lock:
            st.count(st.received, JOINT_STATES_TOPIC)
            st.count(st.used, JOINT_STATES_TOPIC)
        self.last_arrival[-1] = now

    def on_instruction(self, text: str) -> None:
        st = self.stats
        trimmed = text.strip()
        if not trimmed:
            reason = "empty instruction"
        elif any(unicodedata.category(c) == "Cc" and not c.isspace() for c in trimmed):
            reason = "instruction holds control characters"
        elif len(trimmed) > self.tokenizer.max_length:
            reason = "instruction longer than the policy's token limit"
        else:
            reason = None
        with st.lock:
            st.count(st.received, INSTRUCTION_TOPIC)
            if reason:
                st.count(st.rejected, (INSTRUCTION_TOPIC, reason))
                return
            st.count(st.used, INSTRUCTION_TOPIC)
        if self.instruction is not None and self.instruction[0] == trimmed:
            return
        seq = 1 if self.instruction is None else self.instruction[2] + 1
        self.instruction = (trimmed, self.tokenizer.encode(trimmed), seq)

    # chunks

    def _tick_index(self, t: int) -> int:
        base = t if self.tick_base is None else self.tick_base
        return round_half_away((t - base) / self.period)

    def on_chunk(self, obs_stamp: int, obs_arrival: int, instruction_seq: int, actions: np.ndarray) -> None:
        current = 0 if self.instruction is None else self.instruction[2]
        if instruction_seq < current:
            with self.stats.lock:
                self.stats.count(self.stats.dropped, ("policy", "chunk computed for a previous instruction"))
            return
        if instruction_seq != self.chunk_seq:
            self.smoother.reset()
            self.chunk_seq = instruction_seq
        if self.tick_base is None:
            self.tick_base = obs_arrival
        self.smoother.add_chunk(self._tick_index(obs_arrival), actions)
        self.newest_chunk = obs_stamp
        self.policy_fault = None

    def on_policy_error(self, error: str) -> None:
        self.policy_fault = error

    # control

    def _input_state(self, now: int) -> tuple[str, int]:
        n = len(self.camera_topics)
        for i, arrival in enumerate(self.last_arrival):
            topic = self.camera_topics[i] if i < n else JOINT_STATES_TOPIC
            if arrival is None:
                return f"holding: no message on {topic} yet", 2
            if now - arrival > self.timeouts[i]:
                return f"holding: {topic} went silent", 2
        if self.instruction is None:
            return "holding: no instruction yet", 1
        if self.policy_fault is not None:
            return f"holding: policy failed: {self.policy_fault}", 2
        return RUNNING, 0

    def tick(self, now: int) -> Tick:
        if self.last_now is not None and now < self.last_now:
            self._reset_after_clock_jump()
        self.last_now = now
        if self.tick_base is None:
            self.tick_base = now
        state = ("holding: clock jumped backwards, state reset", 1) if self.clock_jumped else self._input_state(now)
        smoothed = None
        if state[0] == RUNNING:
            target = self.smoother.action_for(self._tick_index(now))
            if target is None:
                state = ("holding: waiting for actions", 1)
            else:
                smoothed = target
                previous = self.last_command if self.last_command is not None else self.joints.latest()
                if previous is None:
                    state = (f"holding: no message on {JOINT_STATES_TOPIC} yet", 2)
                else:
                    try:
                        cmd, by_limit, by_step = self.safety.apply(target, previous)
                    except ValueError as e:
                        with self.stats.lock:
                            self.stats.count(self.stats.rejected, ("policy", "action refused by the safety filter"))
                        self.policy_fault = str(e)
                        state = (f"holding: policy failed: {e}", 2)
                    else:
                        with self.stats.lock:
                            self.stats.clipped_by_limit += by_limit
                            self.stats.clipped_by_step += by_step
                            self.stats.commands += 1
                        self.last_command = cmd
        hold = state[0] != RUNNING
        if hold:
            if state[0] != "holding: waiting for actions":
                self.smoother.reset()  # nothing computed before a hold may run after it
            if self.last_command is not None:
                with self.stats.lock:
                    self.stats.commands += 1
                    self.stats.hold_commands += 1
        self.clock_jumped = False
        changed = state != self.state
        self.state = state
        return Tick(command=self.last_command, target=None if hold else smoothed,
                    source=None if hold else self.newest_chunk, state=state[0], level=state[1], hold=hold,
                    state_changed=changed)

    def drain(self, reason: str) -> None:
        """Counts what still waits in the synchronizer as dropped with `reason`."""
        with self.stats.lock:
            for k, _, _ in self.sync.clear():
                self.stats.count(self.stats.dropped, (self.camera_topics[k], reason))

    def _reset_after_clock_jump(self) -> None:
        self.drain("clock jumped backwards")
        self.joints.clear()
        self.smoother.reset()
        self.last_arrival = [None] * len(self.last_arrival)
        self.tick_base = None
        self.clock_jumped = True
