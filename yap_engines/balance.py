"""`SessionBalancer`: keeps each session on one of several replicas, by rendezvous hashing with bounded load.

Rendezvous (highest-random-weight) hashing ranks the replicas for a session id by a hash of
(session, replica); a session goes to the first replica of its ranking that is up and under the load
bound, and stays there. The bound is consistent hashing with bounded loads: a replica may hold at
most `ceil(load_factor * mean)` sessions, the mean taken with the new session counted, so a replica
holding more than `load_factor` (1.25) times the mean moves new sessions on to the next replica of
their ranking. A session moves only when its replica is down (or it was forgotten): never to even
out load, since moving it would throw away its prefix cache. Pure and synchronous: the caller
(`ReplicatedEngine`) says which replicas are up.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence


def rendezvous_rank(key: str, replicas: Iterable[str]) -> list[str]:
    """`replicas` in the order of their rendezvous score for `key` (highest first; stable across processes)."""

    def score(replica: str) -> bytes:
        return hashlib.blake2b(f"{key}\x00{replica}".encode(), digest_size=8).digest()

    return sorted(replicas, key=score, reverse=True)


class SessionBalancer:
    """Session -> replica assignments. `pick` is the one decision; `mark_down`/`mark_up` the health input.

    Sessions idle for `idle_s` (or past `max_sessions`, the oldest first) are forgotten, so the load a
    replica carries is the sessions that still talk to it.
    """

    def __init__(
        self,
        replicas: Sequence[str],
        *,
        load_factor: float = 1.25,
        idle_s: float = 900.0,
        max_sessions: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not replicas or len(set(replicas)) != len(replicas):
            raise ValueError(f"replicas must be a non-empty list of distinct names, got {list(replicas)}")
        if load_factor < 1.0:
            raise ValueError(f"load_factor must be at least 1.0, got {load_factor}")
        self.replicas = tuple(replicas)
        self.load_factor = load_factor
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._clock = clock
        self.down: set[str] = set()
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()  # session -> (replica, last use)

    def mark_down(self, replica: str) -> None:
        self.down.add(replica)

    def mark_up(self, replica: str) -> None:
        self.down.discard(replica)

    def up(self) -> list[str]:
        return [r for r in self.replicas if r not in self.down]

    def loads(self) -> dict[str, int]:
        """Sessions held per replica (after forgetting idle ones)."""
        self._expire()
        counts = dict.fromkeys(self.replicas, 0)
        for replica, _ in self._sessions.values():
            counts[replica] += 1
        return counts

    def assigned(self, session: str) -> str | None:
        entry = self._sessions.get(session)
        return entry[0] if entry else None

    def forget(self, session: str) -> None:
        self._sessions.pop(session, None)

    def pick(self, session: str | None, *, avoid: Iterable[str] = ()) -> str:
        """The replica for `session`: its current one while that is up and not in `avoid`, else the first
        replica of its ranking that is up, not avoided and under the bound (then remembered). With no
        session id (a one-off request), the least loaded replica. When every replica that is up is
        avoided, a replica marked down but not avoided comes next (a health check may be slow or stale:
        a replica that just failed this request is the worst choice), then the avoided ones."""
        avoided = set(avoid)
        candidates = (
            [r for r in self.up() if r not in avoided]
            or [r for r in self.replicas if r not in avoided]
            or self.up()
            or list(self.replicas)
        )
        loads = self.loads()
        if session is None:
            return min(candidates, key=lambda r: loads[r])
        current = self.assigned(session)
        if current in candidates:
            self._touch(session, current)
            return current
        if current is not None:
            loads[current] -= 1  # it is moving: its old seat no longer counts
        total = sum(loads[r] for r in candidates)
        bound = math.ceil(self.load_factor * (total + 1) / len(candidates))
        ranked = rendezvous_rank(session, candidates)
        chosen = next((r for r in ranked if loads[r] + 1 <= bound), ranked[0])
        self._touch(session, chosen)
        return chosen

    def _touch(self, session: str, replica: str) -> None:
        self._sessions[session] = (replica, self._clock())
        self._sessions.move_to_end(session)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    def _expire(self) -> None:
        cutoff = self._clock() - self.idle_s
        while self._sessions:
            session, (_, last) = next(iter(self._sessions.items()))
            if last >= cutoff:
                break
            del self._sessions[session]
