"""Fuzz: random stream operations with an exception injected at a random DiT pass.

Operations: generate (with and without a prompt switch, with and without re-cache), switch without generating,
rewind, fork, and two threads generating from snapshots of one storage at once. Every pass of the DiT (denoising
forwards and cache writes) counts; an armed injector makes the k-th one raise. After every exception, every
snapshot made so far must continue exactly like the same recipe run fresh, without interruption, on a storage of
its own. Global attention and a rolling window (which makes evictions and re-caches destructive) are both run.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

import pytest
import torch

from causal_forcing_core.kv_cache import KVCache
from causal_forcing_core.stream import Stream
from tiny import tiny_model, tiny_prompt, tiny_stream

#: operations per run and the chance that one has an exception injected into it
OPERATIONS = 60
INJECT_PROBABILITY = 0.5
#: at least this many exceptions must really have been raised inside an operation
MIN_EXCEPTIONS = 10


class Injected(Exception):
    pass


class WriteInjector:
    """Counts K/V writes into the inference cache (one per layer of every DiT pass) and raises :class:`Injected`
    right after the armed one: the failure lands inside a forward, with some layers of the block written and
    others not, as an out-of-memory error or an interrupt would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lock = threading.Lock()
        self.countdown: int | None = None
        self.fired = 0
        original = KVCache.write
        injector = self

        def write(cache: KVCache, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
            original(cache, layer, k, v)
            with injector.lock:
                if injector.countdown is not None:
                    injector.countdown -= 1
                    if injector.countdown < 0:
                        injector.countdown = None
                        injector.fired += 1
                        raise Injected()

        monkeypatch.setattr(KVCache, "write", write)

    def arm(self, after_writes: int) -> None:
        with self.lock:
            self.countdown = after_writes

    def disarm(self) -> None:
        with self.lock:
            self.countdown = None


@dataclass
class Snapshot:
    """A stream made by the fuzzer and the recipe that makes the same stream from scratch."""

    stream: Stream
    recipe: tuple = ()
    children: list = field(default_factory=list)


class Fuzzer:
    def __init__(self, seed: int, window: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rng = random.Random(seed)
        self.model = tiny_model()
        self.injector = WriteInjector(monkeypatch)
        self.kwargs = {"window_frames": 6, "sink_frames": 3} if window else {}
        self.prompts = [tiny_prompt(i) for i in range(1, 4)]
        self.snapshots = [Snapshot(tiny_stream(self.model, prompt=self.prompts[0], **self.kwargs))]
        self._fresh: dict[tuple, torch.Tensor] = {}
        self.exceptions = 0

    # ------------------------------------------------------------------------------------------- recipes
    def apply(self, stream: Stream, op: tuple) -> Stream:
        kind = op[0]
        if kind == "gen":
            _, prompt, recache = op
            return stream.generate(1, prompt=self.prompts[prompt], recache=recache)
        if kind == "switch":
            _, prompt, recache = op
            return stream.switch_prompt(self.prompts[prompt], recache=recache)
        if kind == "rewind":
            return stream.rewind(op[1])
        raise AssertionError(op)

    def fresh_continuation(self, recipe: tuple) -> torch.Tensor:
        """The latents of ``recipe`` plus one more chunk, run from scratch on a storage of its own."""
        if recipe not in self._fresh:
            self.injector.disarm()
            stream = tiny_stream(self.model, prompt=self.prompts[0], **self.kwargs)
            for op in recipe:
                stream = self.apply(stream, op)
            self._fresh[recipe] = stream.generate(1).latents
        return self._fresh[recipe]

    def check_all(self, first: Snapshot | None = None) -> None:
        """``first`` (the snapshot the failed operation started from) first, so it continues on the fast path from
        whatever state the exception left its storage in; then every other snapshot, newest first."""
        self.injector.disarm()
        order = ([first] if first is not None else []) + [s for s in reversed(self.snapshots) if s is not first]
        for snap in order:
            assert torch.equal(snap.stream.generate(1).latents, self.fresh_continuation(snap.recipe)), snap.recipe

    # ------------------------------------------------------------------------------------------- operations
    def random_op(self, snap: Snapshot) -> tuple:
        r = self.rng.random()
        chunks = snap.stream.num_chunks
        if r < 0.55 or chunks == 0:
            return ("gen", self.rng.randrange(3), self.rng.random() < 0.5)
        if r < 0.7:
            return ("switch", self.rng.randrange(3), self.rng.random() < 0.5)
        return ("rewind", 3 * self.rng.randrange(chunks))

    def step(self) -> None:
        snap = self.rng.choice(self.snapshots)
        inject = self.rng.random() < INJECT_PROBABILITY
        if inject:
            self.injector.arm(self.rng.randrange(10))  # 2 layers a pass: within the first 5 passes
        action = self.rng.random()
        try:
            if action < 0.1:
                fork = Snapshot(snap.stream.fork(), snap.recipe)
                self.snapshots.append(fork)
            elif action < 0.25:
                self._two_threads(snap)
            else:
                op = self.random_op(snap)
                self.snapshots.append(Snapshot(self.apply(snap.stream, op), snap.recipe + (op,)))
        except Injected:
            pass
        fired = self.injector.fired
        self.injector.disarm()
        if fired > self.exceptions:
            self.exceptions = fired
            self.check_all(first=snap)

    def _two_threads(self, snap: Snapshot) -> None:
        """Two snapshots of one storage generate at once (the storage's lock orders them)."""
        sibling = next((s for s in reversed(self.snapshots) if s.stream.storage is snap.stream.storage), snap)
        ops = [("gen", self.rng.randrange(3), False) for _ in range(2)]
        results: list[Snapshot | None] = [None, None]

        def run(i: int, base: Snapshot) -> None:
            try:
                results[i] = Snapshot(self.apply(base.stream, ops[i]), base.recipe + (ops[i],))
            except Injected:
                pass

        threads = [threading.Thread(target=run, args=(i, base)) for i, base in enumerate((snap, sibling))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.snapshots.extend(r for r in results if r is not None)


@pytest.mark.parametrize("window", [False, True], ids=["global", "window"])
def test_random_operations_with_injected_exceptions_keep_every_snapshot_correct(window: bool, monkeypatch) -> None:
    fuzzer = Fuzzer(seed=12 + window, window=window, monkeypatch=monkeypatch)
    for _ in range(OPERATIONS):
        fuzzer.step()
    fuzzer.check_all()
    assert fuzzer.exceptions >= MIN_EXCEPTIONS, f"only {fuzzer.exceptions} exceptions were raised"
    assert len(fuzzer.snapshots) > OPERATIONS / 2
