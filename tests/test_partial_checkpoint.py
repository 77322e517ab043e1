"""Mid-epoch checkpoints (trainer.checkpoint_minutes): a killed run resumes inside its epoch, exactly."""

from __future__ import annotations

import pytest
import torch

import vislab
from vislab.config import load_config
from vislab.engine import (
    INTERRUPTED,
    LAST,
    PARTIAL,
    Callback,
    DeviceLoader,
    load_checkpoint,
    resume_checkpoint,
    save_checkpoint,
)
from vislab.errors import ConfigError, Interrupted


def _noisy(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    # A transform that draws from the generator, as the real augmentations do.
    return x.float() + torch.rand(x.shape, generator=g)


def test_a_loader_resumed_from_its_position_gives_the_rest_of_the_pass_exactly():
    x = torch.randint(0, 255, (50, 3, 4, 4), dtype=torch.uint8)
    y = torch.arange(50)
    g = torch.Generator().manual_seed(3)
    loader = DeviceLoader(x, y, 8, _noisy, shuffle=True, generator=g)
    it = iter(loader)
    head = [next(it) for _ in range(2)]
    pos, gen_state = loader.position(), g.get_state()
    assert pos["batch"] == 2 and sorted(pos["order"].tolist()) == list(range(50))
    rest = list(it)
    assert len(head) + len(rest) == len(loader) == 7

    g2 = torch.Generator().manual_seed(99)  # a fresh process: another seed, then the saved state
    g2.set_state(gen_state)
    again = DeviceLoader(x, y, 8, _noisy, shuffle=True, generator=g2)
    again.resume_from(pos)
    replay = list(again)
    assert len(replay) == len(rest)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(replay, rest))
    # Only that one pass is a continuation: the next one draws a fresh order for the whole set.
    assert len(list(again)) == 7


def test_a_position_that_does_not_fit_the_loader_is_refused():
    loader = DeviceLoader(torch.zeros(10, 3, 2, 2, dtype=torch.uint8), torch.zeros(10), 4, _noisy)
    with pytest.raises(ValueError, match="does not fit"):
        loader.resume_from({"order": torch.arange(12), "batch": 1})
    with pytest.raises(ValueError, match="does not fit"):
        loader.resume_from({"order": torch.arange(10), "batch": 4})


class KillAt(Callback):
    """Raises at a global step, as a SIGKILL would end the process: no epoch end, no clean-up."""

    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, trainer, batch_idx, loss):
        if trainer.global_step == self.step:
            raise SystemExit("killed")


def _rows(run) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in run.history]


@pytest.fixture
def every_step(tiny_overrides):
    # 72 images / batch 16 = 4 steps per epoch; a mid-epoch checkpoint after every step (the interval is tiny).
    return {**tiny_overrides, "trainer.epochs": 3, "trainer.checkpoint_minutes": 1e-9, "augment.cutout_size": 4}


@pytest.mark.parametrize("kill_step", [3, 6])  # inside epoch 1 (no `last` yet) and inside epoch 2
def test_a_run_killed_inside_an_epoch_resumes_there_and_matches_an_uninterrupted_run(
    every_step, tmp_path, kill_step, one_thread, vislab_log
):
    reference = vislab.train("quick", every_step, out=tmp_path / "ref")
    assert not (reference.run_dir / "checkpoints" / PARTIAL).exists()  # gone once its epoch has ended

    out = tmp_path / "killed"
    with pytest.raises(SystemExit):
        vislab.train("quick", every_step, out=out, callbacks=[KillAt(kill_step)])
    partial = load_checkpoint(out / "checkpoints" / PARTIAL)
    # The kill came inside step `kill_step`'s callbacks: the checkpoint is the one after the step before.
    assert partial["global_step"] == kill_step - 1
    assert partial["partial"]["totals"]["batches"] == (kill_step - 1) % 4
    if kill_step > 4:  # `last` still holds the end of epoch 1, untouched by the mid-epoch saves
        last = load_checkpoint(out / "checkpoints" / LAST)
        assert last["epoch"] == 1 and last["global_step"] == 4 and "partial" not in last

    # A kill inside a save leaves its temporary folder behind; the resumed run clears it at its epoch's end.
    dead = out / "checkpoints" / ".partial.k1ll3d.tmp"
    dead.mkdir()
    (dead / "model.safetensors").write_bytes(b"half")
    steps = []

    class Count(Callback):
        def on_batch_end(self, trainer, batch_idx, loss):
            steps.append(trainer.global_step)

    resumed = vislab.train(resume=out, callbacks=[Count()])
    # It went on from the saved step: no step of the interrupted epoch was run twice.
    assert steps == list(range(kill_step, 13))
    assert f"after its step {(kill_step - 1) % 4} (checkpoints/partial)" in vislab_log.text
    assert _rows(resumed) == _rows(reference)
    a, b = resumed.model.state_dict(), reference.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (out / "checkpoints" / PARTIAL).exists() and not dead.exists()


def test_an_interrupt_saves_a_checkpoint_a_resume_continues_from(tiny_overrides, tmp_path, one_thread):
    ov = {**tiny_overrides, "trainer.epochs": 2}
    reference = vislab.train("quick", ov, out=tmp_path / "ref")

    class StopInEpoch2(Callback):
        def on_batch_end(self, trainer, batch_idx, loss):
            if trainer.epoch == 1 and batch_idx == 1:
                trainer.stop_signal = 15  # what SIGTERM sets: stop after this step

    with pytest.raises(Interrupted) as e:
        vislab.train("quick", ov, out=tmp_path / "r", callbacks=[StopInEpoch2()])
    assert e.value.mid_epoch and e.value.step == 2 and e.value.epoch == 2
    steps = []

    class Count(Callback):
        def on_batch_end(self, trainer, batch_idx, loss):
            steps.append(trainer.global_step)

    resumed = vislab.train(resume=tmp_path / "r", callbacks=[Count()])
    assert steps == [7, 8]  # epoch 2's steps 3 and 4 only
    assert _rows(resumed) == _rows(reference)
    assert not (tmp_path / "r" / "checkpoints" / INTERRUPTED).exists()


def _state(epoch: int, step: int, partial: bool) -> dict:
    state = {"model": {"w": torch.full((2,), float(step))}, "epoch": epoch, "global_step": step}
    if partial:
        state["partial"] = {"batch": 1}
    return state


@pytest.mark.parametrize(
    "saved,expected",
    [
        ({LAST: (2, 8, False), PARTIAL: (2, 10, True)}, PARTIAL),
        ({LAST: (2, 8, False), PARTIAL: (1, 6, True)}, LAST),  # from the epoch `last` has already ended
        ({LAST: (2, 8, False), INTERRUPTED: (2, 9, False)}, LAST),  # no position: not resumable inside the epoch
        ({LAST: (2, 8, False), PARTIAL: (2, 9, True), INTERRUPTED: (2, 11, True)}, INTERRUPTED),  # the later one
        ({PARTIAL: (0, 3, True)}, PARTIAL),  # killed inside epoch 1
        ({}, None),
    ],
)
def test_resume_picks_the_latest_checkpoint_of_the_epoch_in_progress(tmp_path, saved, expected):
    for name, (epoch, step, partial) in saved.items():
        save_checkpoint(tmp_path / name, _state(epoch, step, partial))
    state, name = resume_checkpoint(tmp_path)
    assert name == expected
    if expected is not None:
        assert state["global_step"] == saved[expected][1]


def test_checkpoint_minutes_is_refused_where_it_cannot_resume_exactly(tmp_path):
    with pytest.raises(ConfigError, match="trainer.checkpoint_minutes.*augment.backend = albumentations"):
        load_config(
            "quick", {"trainer.checkpoint_minutes": 10, "augment.backend": "albumentations", "augment.flip": "random"}
        )
    with pytest.raises(ConfigError, match="checkpoint_minutes"):
        load_config("quick", {"trainer.checkpoint_minutes": 0})


def test_a_loader_resumed_at_its_last_batch_gives_nothing_and_says_so():
    loader = DeviceLoader(torch.zeros(10, 3, 2, 2, dtype=torch.uint8), torch.zeros(10), 4, _noisy, drop_last=True)
    loader.resume_from({"order": torch.arange(10), "batch": 2})
    assert list(loader) == []
    # A checkpoint taken now must say "2 batches given", not 0: a resume from it would replay the epoch.
    assert loader.position()["batch"] == 2


def test_a_damaged_mid_epoch_checkpoint_falls_back_to_last(tmp_path, vislab_log):
    save_checkpoint(tmp_path / LAST, _state(2, 8, False))
    save_checkpoint(tmp_path / PARTIAL, _state(2, 10, True))
    (tmp_path / PARTIAL / "state.pt").write_bytes(b"truncated")
    state, name = resume_checkpoint(tmp_path)
    assert name == LAST and state["global_step"] == 8
    assert "refused" in vislab_log.text


def test_checkpoint_minutes_is_refused_under_torchrun():
    from vislab.build import check_distributed
    from vislab.engine import DistInfo

    cfg = load_config("quick", {"trainer.checkpoint_minutes": 10})[1]
    with pytest.raises(ConfigError, match="trainer.checkpoint_minutes = 10 is not supported under torchrun"):
        check_distributed(cfg, DistInfo(rank=0, world_size=2), torch.device("cpu"))


def test_an_epoch_resumed_from_its_middle_keeps_mixing_when_the_resume_moves_the_mix_off_boundary(
    every_step, tmp_path, one_thread
):
    # 3 epochs, MixUp off for the last one: epochs 1 and 2 mix. Killed inside epoch 2 and resumed with
    # trainer.epochs=2 (allowed for a constant schedule), the boundary moves to "epoch 2 does not mix";
    # the half-done epoch 2 must still finish as it began, so it matches the uninterrupted run's epoch 2.
    ov = {**every_step, "sched.name": "none", "augment.mixup_alpha": 0.4, "augment.mix_off_epochs": 1}
    reference = vislab.train("quick", ov, out=tmp_path / "ref")
    assert [bool(r.get("train_mixed")) for r in reference.history] == [True, True, False]

    out = tmp_path / "killed"
    with pytest.raises(SystemExit):
        vislab.train("quick", ov, out=out, callbacks=[KillAt(6)])
    assert load_checkpoint(out / "checkpoints" / PARTIAL)["partial"]["mixed"] is True

    resumed = vislab.train(resume=out, overrides={"trainer.epochs": 2})
    assert _rows(resumed) == _rows(reference)[:2]
