"""The CUDA paths, tested on CPU: checkpoint loading and RNG restore across devices, precision auto,
and the fp16 + GradScaler path of the engine and the LR range test.

Only the few hardware queries are faked (torch.cuda's is_available, device_count,
get_device_capability, is_bf16_supported and set_rng_state; oneDNN's bf16 query; /proc/cpuinfo);
everything else runs for real. No CUDA path has been run on a GPU by these tests.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import vislab
from vislab.cli import main
from vislab.engine import (
    Callback,
    DeviceLoader,
    Precision,
    _device,
    create_optimizer,
    create_scheduler,
    load_checkpoint,
    resolve_device,
    resolve_precision,
    save_checkpoint,
    train_one_epoch,
)
from vislab.engine.checkpoint import rng_state, set_rng_state
from vislab.errors import ConfigError
from vislab.tuner import LRFinder, sweep_lrs

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
# Built directly: the config refuses fp16 on a CPU, but torch's CPU autocast and CPU GradScaler run
# the same code path that fp16 training takes on a GPU.
FP16 = Precision("fp16", torch.float16, True)
CUDA_GENERATOR_STATE_BYTES = 16  # a CUDA (Philox) generator's state: seed and offset
CPU_GENERATOR_STATE_BYTES = 5056  # a CPU (mt19937) generator's state


def _cuda_like_state(n_gpus: int) -> list[torch.Tensor]:
    return [torch.arange(CUDA_GENERATOR_STATE_BYTES, dtype=torch.uint8) + i for i in range(n_gpus)]


@pytest.fixture
def fake_gpus(monkeypatch):
    """A machine with `n` CUDA GPUs, as far as the RNG-state code can tell; returns the states set, by GPU."""
    set_states: dict[int, torch.Tensor] = {}

    def install(n: int) -> dict[int, torch.Tensor]:
        def set_rng_state(state, device="cuda"):
            idx = torch.device(device).index if not isinstance(device, int) else device
            if idx is None or idx >= n:  # as torch does: there is no default generator for that GPU
                raise IndexError("list index out of range")
            if not (isinstance(state, torch.Tensor) and state.device.type == "cpu" and state.dtype == torch.uint8):
                raise TypeError("RNG state must be a torch.ByteTensor")
            set_states[idx] = state.clone()

        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
        return set_states

    return install


# -- item 1: a checkpoint loads its state on the CPU, whatever device it is loaded for -------------


def test_checkpoint_state_stays_on_cpu_whatever_the_map_location(tmp_path):
    model = nn.Linear(4, 2)
    gen = torch.Generator().manual_seed(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    save_checkpoint(
        tmp_path / "ckpt",
        {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(gen), "epoch": 1},
    )
    # "meta" stands in for a CUDA device: torch.load's map_location moves every tensor there alike.
    state = load_checkpoint(tmp_path / "ckpt", map_location="meta")
    assert all(v.device.type == "meta" for v in state["model"].values())
    rng = [state["rng"]["torch"], state["rng"]["data"]]
    assert all(t.device.type == "cpu" and t.dtype == torch.uint8 for t in rng)
    momentum = next(iter(state["optimizer"]["state"].values()))["momentum_buffer"]
    assert momentum.device.type == "cpu"  # Optimizer.load_state_dict moves it to the parameters' device
    set_rng_state(state["rng"], torch.Generator())  # accepted as it comes out of load_checkpoint


# -- item 2 and issue 11 item 6: what precision auto means --------------------------------------------


@pytest.mark.parametrize(
    "capability,expected",
    [
        ((7, 0), "fp16"),
        ((7, 5), "fp16"),
        ((8, 0), "bf16"),
        ((8, 6), "bf16"),
        ((8, 9), "bf16"),
        ((9, 0), "bf16"),
        ((10, 0), "bf16"),
    ],
    ids=["V100", "T4", "A100", "A10-RTX30", "L4-RTX40", "H100", "B200"],
)
def test_precision_auto_on_cuda_follows_compute_capability(monkeypatch, capability, expected):
    # torch.cuda.is_bf16_supported() counts emulation and says yes on sm70/sm75 too.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    p = resolve_precision("auto", CUDA)
    assert p.name == expected
    assert p.use_scaler == (expected == "fp16") and p.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[expected]


@pytest.mark.parametrize("name", ["cuda:1", "cuda:7", "cuda:x"])
def test_a_gpu_index_the_machine_lacks_is_a_config_error(monkeypatch, name):
    # One GPU: torch's own check would come later, as an AssertionError ("Invalid device id") in
    # get_device_capability, which the CLI would show as a traceback.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"cuda:0 to cuda:0"):
        resolve_device(name)
    assert resolve_device("cuda:0") == torch.device("cuda", 0) and resolve_device("cuda") == torch.device("cuda")


# Flags lines as /proc/cpuinfo shows them (shortened to the relevant part).
CPUINFO = {
    "cascade-lake": "fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni",
    "cooper-lake": "fpu sse2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16",
    "sapphire-rapids": "fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8",
    "zen4": "fpu sse2 avx2 avx512f avx512bw avx512vl avx512_bf16 avx512_vnni",
    "zen2-avx2": "fpu sse2 avx avx2 fma f16c",
}


@pytest.mark.parametrize(
    "cpu,expected",
    [
        ("cascade-lake", "fp32"),
        ("cooper-lake", "bf16"),
        ("sapphire-rapids", "bf16"),
        ("zen4", "bf16"),
        ("zen2-avx2", "fp32"),
        ("no-cpuinfo", "fp32"),
    ],
)
def test_precision_auto_on_cpu_needs_native_bf16(monkeypatch, tmp_path, cpu, expected):
    cpuinfo = tmp_path / "cpuinfo"
    if cpu != "no-cpuinfo":
        lines = [f"processor\t: {i}\nmodel name\t: {cpu}\nflags\t\t: {CPUINFO[cpu]}\n" for i in range(2)]
        cpuinfo.write_text("\n".join(lines))
    monkeypatch.setattr(_device, "CPUINFO", cpuinfo, raising=False)  # absent before the native-bf16 check
    # What oneDNN's own check says on every AVX512 CPU, Cascade Lake included (there bf16 is emulated).
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    assert resolve_precision("auto", CPU).name == expected


def test_auto_precision_is_a_function_of_the_hardware_facts():
    assert _device.auto_precision("cuda", cuda_capability=(7, 5)) == "fp16"
    assert _device.auto_precision("cuda", cuda_capability=(8, 0)) == "bf16"
    assert _device.auto_precision("cpu", flags={"avx512f", "avx512_vnni"}) == "fp32"
    assert _device.auto_precision("cpu", flags={"amx_bf16"}) == "bf16"
    assert _device.auto_precision("cpu", flags={"bf16", "asimd"}) == "fp32"  # aarch64: not measured, not assumed
    assert _device.auto_precision("mps") == "fp32"
    assert _device.cpu_flags(Path("/nonexistent/cpuinfo")) == frozenset()


# -- item 3: resume on another device or another number of GPUs ---------------------------------------


def _saved_state(generator_state: torch.Tensor, cuda: list[torch.Tensor] | None) -> dict:
    state = rng_state(None)
    state.pop("cuda", None)  # whatever this machine has; the test decides what the checkpoint holds
    state["data"] = generator_state
    if cuda is not None:
        state["cuda"] = cuda
    return state


def test_more_saved_cuda_states_than_gpus_restores_what_fits(fake_gpus, vislab_log):
    set_states = fake_gpus(2)
    saved = _cuda_like_state(4)
    set_rng_state(_saved_state(torch.Generator().get_state(), saved), None)
    assert sorted(set_states) == [0, 1] and all(torch.equal(set_states[i], saved[i]) for i in (0, 1))
    assert "CUDA RNG states of 4 GPU(s), this machine has 2: restored 2" in vislab_log.text


def test_fewer_saved_cuda_states_than_gpus_restores_those(fake_gpus, vislab_log):
    set_states = fake_gpus(4)
    saved = _cuda_like_state(1)
    set_rng_state(_saved_state(torch.Generator().get_state(), saved), None)
    assert list(set_states) == [0] and torch.equal(set_states[0], saved[0])
    assert "CUDA RNG states of 1 GPU(s), this machine has 4: restored 1" in vislab_log.text


def test_cuda_states_loaded_for_a_gpu_reach_torch_as_cpu_bytes(fake_gpus):
    set_states = fake_gpus(1)
    saved = [t.to(torch.int64) for t in _cuda_like_state(1)]  # any dtype or device a loader may have produced
    set_rng_state(_saved_state(torch.Generator().get_state(), saved), None)
    assert set_states[0].dtype == torch.uint8 and set_states[0].device.type == "cpu"


def test_gpu_run_resumed_on_cpu_reseeds_the_data_generator(fake_gpus, vislab_log):
    fake_gpus(0)
    cuda_gen_state = torch.arange(CUDA_GENERATOR_STATE_BYTES, dtype=torch.uint8)
    fresh = torch.Generator().manual_seed(0)
    before = fresh.get_state()
    set_rng_state(_saved_state(cuda_gen_state, _cuda_like_state(2)), fresh)
    assert "does not fit this run's cpu generator" in vislab_log.text and "re-seeded" in vislab_log.text
    # Re-seeded from the saved state: reproducible, and not a replay of the run's first epoch.
    again = torch.Generator().manual_seed(0)
    set_rng_state(_saved_state(cuda_gen_state, None), again)
    assert torch.equal(fresh.get_state(), again.get_state()) and not torch.equal(fresh.get_state(), before)
    assert fresh.get_state().numel() == CPU_GENERATOR_STATE_BYTES


class _StopAfter(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, trainer, row):
        if row["epoch"] == self.epoch:
            trainer.should_stop = True


def test_resume_on_cpu_of_a_checkpoint_saved_on_gpus(tiny_overrides, tmp_path, capsys, fake_gpus):
    fake_gpus(0)  # resumed on a machine without CUDA, whatever this one has
    out = tmp_path / "run"
    vislab.train("quick", tiny_overrides, out=out, callbacks=[_StopAfter(1)])
    # Make the checkpoint look like one saved by a 2-GPU machine with the data generator on cuda:0.
    last = out / "checkpoints" / "last"
    state = load_checkpoint(last)
    state["rng"]["cuda"] = _cuda_like_state(2)
    state["rng"]["data"] = torch.arange(CUDA_GENERATOR_STATE_BYTES, dtype=torch.uint8)
    save_checkpoint(last, state)
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 0
    err = capsys.readouterr().err
    assert "re-seeded" in err and "this machine has no CUDA GPU" in err and "resuming" in err
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and load_checkpoint(last)["epoch"] == 2


# -- item 5 and issue 11 item 9: fp16 with a GradScaler --------------------------------------------


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)
    )


def _images(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _count_steps(optimizer: torch.optim.Optimizer) -> list[float]:
    # The post hook runs only when optimizer.step() really ran: GradScaler.step skips the call on overflow.
    taken: list[float] = []
    optimizer.register_step_post_hook(lambda opt, args, kwargs: taken.append(opt.param_groups[0]["lr"]))
    return taken


def test_fp16_scaler_skipped_steps_do_not_advance_the_schedule():
    with pytest.raises(ConfigError, match="fp16"):
        resolve_precision("fp16", CPU)  # the config still refuses fp16 on a CPU
    model = _conv_net()
    x, y = _images()
    loader = DeviceLoader(x, y, 8, lambda b, g: b.float() / 255)
    opt = create_optimizer(model, "sgd", 0.1)
    sched = create_scheduler(opt, "onecycle", epochs=2, steps_per_epoch=len(loader), max_lr=0.1, peak_epoch=1)
    # A scale far above what fp16 gradients can hold: the scaler skips steps (halving it) until it fits.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)
    taken = _count_steps(opt)
    with warnings.catch_warnings():
        # torch warns when a scheduler steps before its optimizer did
        warnings.filterwarnings(
            "error", message=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`"
        )
        for _ in range(2):
            out = train_one_epoch(model, loader, opt, device=CPU, precision=FP16, scheduler=sched, scaler=scaler)
    batches = 2 * len(loader)
    assert 0 < len(taken) < batches  # some steps were skipped, some taken
    assert sched.inner.last_epoch == len(taken)  # one schedule step per optimizer step
    # The taken steps ran at the schedule's values from its first on: none was used up by a skipped step.
    ref_opt = create_optimizer(nn.Linear(1, 1), "sgd", 0.1)
    ref = create_scheduler(ref_opt, "onecycle", epochs=2, steps_per_epoch=len(loader), max_lr=0.1, peak_epoch=1)
    schedule = []
    for _ in range(len(taken)):
        schedule.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step_batch()
    assert taken == pytest.approx(schedule)
    assert out["train_loss"] > 0 and all(torch.isfinite(p).all() for p in model.parameters())


def test_lr_finder_fp16_applies_each_sweep_lr_with_one_optimizer_step():
    model = _conv_net()
    x, y = _images()
    # Unnormalised pixels (0..255): the first gradients overflow fp16 at the scaler's initial 65536.
    loader = DeviceLoader(x, y, 8, lambda b, g: b.float(), shuffle=True, generator=torch.Generator().manual_seed(1))
    opt = create_optimizer(model, "sgd", 0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    taken = _count_steps(opt)
    finder = LRFinder(model, opt, loader, device=CPU, precision=FP16)
    r = finder.range_test(1e-5, 1.0, 30)
    # Every point of the curve is one real optimizer step at that point's LR, in sweep order.
    assert taken == r["lr"] == pytest.approx(sweep_lrs(1e-5, 1.0, 30))
    assert r["skipped_steps"] > 0 and r["steps"] == 30 and len(r["loss"]) == 30
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # restored after the sweep
