"""What the training loop tells the world. Trackers and printers listen; the loop imports neither."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunStart:
    """Everything known before the first step: the resolved config, tags, table memory, spec file."""

    params: dict
    tags: dict[str, str]
    memory: dict[str, float]
    spec_text: str
    plan: str = ""
    data_path: str = ""
    """The prepared cache the run trains on (trackers record it as the run's dataset)."""
    run_token: str = ""
    """Names this training in its checkpoints (kept across resume), so a tracked run's export can tell
    its own checkpoints from those another run later wrote into the same directory."""


class Listener:
    """Base listener: every hook does nothing, so a listener overrides only what it needs."""

    def on_start(self, start: RunStart) -> None:
        pass

    def on_step(self, step: int, loss: float) -> None:
        pass

    def on_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def on_checkpoint(self, path: str, epoch: int) -> None:
        pass

    def on_end(self, failed: bool) -> None:
        pass


@dataclass
class Broadcast(Listener):
    """Forwards every event to several listeners, in order."""

    listeners: list[Listener] = field(default_factory=list)

    def on_start(self, start: RunStart) -> None:
        for listener in self.listeners:
            listener.on_start(start)

    def on_step(self, step: int, loss: float) -> None:
        for listener in self.listeners:
            listener.on_step(step, loss)

    def on_metrics(self, metrics: dict[str, float], step: int) -> None:
        for listener in self.listeners:
            listener.on_metrics(metrics, step)

    def on_checkpoint(self, path: str, epoch: int) -> None:
        for listener in self.listeners:
            listener.on_checkpoint(path, epoch)

    def on_end(self, failed: bool) -> None:
        for listener in self.listeners:
            listener.on_end(failed)
