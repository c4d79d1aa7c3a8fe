"""One configuration in a server of its own: a fresh core subprocess (``validation.core_proc``), the
model registered with the configuration's options, checked with one request, then driven by the
load generators in their own processes.

Everything that can go wrong is an ``ExperimentFailed`` with its kind and the core's own words:
``crash`` (the core exited: its exit code or signal and the tail of its log), ``timeout``,
``refused`` (the core answered 4xx to the options), ``load_failed`` (the model did not load with
them), ``errors`` (too many failed requests), ``wrong_answer`` (answers differ from the first
configuration's). The cores are started so that they die with the tuner (``PR_SET_PDEATHSIG``):
a tuner killed with SIGKILL leaves none behind.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import numpy as np
import psutil

from validation.core_proc import ROOT, CoreError, CoreServer, error_text

from .errors import ExperimentFailed, TuneError
from .workload import Workload

START_TIMEOUT_S = 180.0
REGISTER_TIMEOUT_S = 600.0


def _http(method: str, url: str, body=None, timeout: float = 60.0) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, ctype, payload = resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as e:
        status, ctype, payload = e.code, e.headers.get("Content-Type", ""), e.read()
    text = payload.decode("utf-8", "replace")
    if "json" in ctype:
        try:
            return status, json.loads(text)
        except ValueError:
            pass
    return status, text


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        hint = " (the kernel's out-of-memory killer sends this)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with code {code}"


class Trial:
    def __init__(self, exp_id: str, options: dict, model, workload: Workload, workdir: Path,
                 core_args: list[str] = ()):
        self.exp_id = exp_id
        self.core_args = list(core_args)     # e.g. the model root of a cluster node's package copies
        self.options = options
        self.model = model
        self.workload = workload
        self.workdir = Path(workdir)
        self.core: CoreServer | None = None
        self.info: dict = {}
        self.runs: list[dict] = []

    @property
    def pid(self) -> int | None:
        return self.core.proc.pid if self.core and self.core.proc else None

    def _url(self, path: str) -> str:
        return self.core.url + path

    def _died(self, during: str) -> ExperimentFailed:
        code = self.core.proc.poll() if self.core and self.core.proc else None
        return ExperimentFailed("crash", f"the core {_exit_reason(code)} {during}: {self.core.tail(600)}")

    # ---- start: a fresh core, the model registered with this configuration's options ---------
    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.core = CoreServer(self.workdir, "userspace", extra_args=["--log-level", "warning", *self.core_args],
                               die_with_parent=True)
        t0 = time.perf_counter()
        try:
            self.core.start(timeout=START_TIMEOUT_S)
        except CoreError as e:
            kind = "timeout" if "not ready" in str(e) else "crash"
            raise ExperimentFailed(kind, str(e)) from None
        self.info["startup_s"] = round(time.perf_counter() - t0, 3)
        body = {"model_id": self.model.model_id, "path": str(self.model.path), "options": self.options}
        t0 = time.perf_counter()
        try:
            status, answer = _http("POST", self._url("/v1/models/register"), body, timeout=REGISTER_TIMEOUT_S)
        except OSError as e:
            if not self.core.alive():
                raise self._died("while loading the model") from None
            raise ExperimentFailed("timeout", f"registering with options {self.options}: {e}") from None
        self.info["register_s"] = round(time.perf_counter() - t0, 3)
        if status != 200:
            kind = "refused" if status == 400 else "load_failed"
            raise ExperimentFailed(kind, f"the core refused options {self.options}: {error_text(status, answer)}")
        status, desc = _http("GET", self._url(f"/v1/models/{quote(self.model.model_id, safe='')}"))
        if status == 200 and isinstance(desc, dict):
            self.info["batching"] = desc.get("batching")
            self.info["memory_bytes"] = desc.get("memory_bytes")
            self.info["options_in_effect"] = desc.get("options")

    def metadata(self) -> dict | None:
        status, meta = _http("GET", self._url(f"/v2/models/{quote(self.model.model_id, safe='')}"))
        return meta if status == 200 and isinstance(meta, dict) else None

    def ask(self, path: str, body: dict, timeout: float = 120.0) -> tuple[int, object]:
        """One request, outside any measurement (the check before load)."""
        try:
            return _http("POST", self._url(path), body, timeout=timeout)
        except OSError as e:
            if not self.core.alive():
                raise self._died("on its first request") from None
            raise ExperimentFailed("timeout", f"the first request did not complete: {e}") from None

    def check_answer(self, path: str, body: dict, reference: dict | None) -> dict | None:
        """One request; its outputs, compared with the reference configuration's when there is one
        (a configuration that changes answers is wrong, however fast)."""
        status, answer = self.ask(path, body)
        if status != 200:
            raise TuneError(f"the workload's request was refused by the model: {error_text(status, answer)}")
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if not isinstance(outputs, list) or reference is None:
            return {o["name"]: o.get("data") for o in outputs or [] if isinstance(o, dict) and "name" in o}
        got = {o["name"]: o.get("data") for o in outputs if isinstance(o, dict) and "name" in o}
        for name, ref in reference.items():
            try:
                same = np.allclose(np.asarray(got.get(name), dtype=np.float64), np.asarray(ref, dtype=np.float64),
                                   rtol=1e-3, atol=1e-5)
            except (TypeError, ValueError):
                same = got.get(name) == ref
            if not same:
                raise ExperimentFailed("wrong_answer", f"output {name!r} differs from the first configuration's "
                                                       f"answer to the same request")
        return got

    # ---- one measured run --------------------------------------------------------------------
    def measure(self, concurrency: int, files: dict, samples: bool = True) -> dict:
        load = self.workload.load
        if self.workload.llm:
            cmd = [sys.executable, "-m", "mlos_tune.llm_load", "--bodies-file", str(files["bodies"])]
        else:
            cmd = [sys.executable, "-m", "mlos_tune.http_load", "--body-file", str(files["body"])]
            if samples:
                cmd.append("--samples")
        cmd += ["--port", str(self.core.port), "--path", files["path"], "--concurrency", str(concurrency),
                "--duration", str(load.duration_s), "--warmup", str(load.warmup_s)]
        if load.rate is not None:
            cmd += ["--rate", str(load.rate)]
        proc = psutil.Process(self.pid)
        try:
            cpu0 = sum(proc.cpu_times()[:2])
        except psutil.Error:
            raise self._died("before the run") from None
        budget = load.duration_s + load.warmup_s + (120 if self.workload.llm else 40)
        try:
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=budget, check=False)
        except subprocess.TimeoutExpired:
            if not self.core.alive():
                raise self._died("during the run") from None
            raise ExperimentFailed("timeout", f"a run at concurrency {concurrency} did not end within {budget:.0f} s")
        if not self.core.alive():
            raise self._died("during the run")
        try:
            cpu1 = sum(proc.cpu_times()[:2])
        except psutil.Error:
            raise self._died("during the run") from None
        if out.returncode != 0:
            raise ExperimentFailed("errors", f"the load generator failed ({out.returncode}): "
                                             f"{out.stderr.decode(errors='replace')[-1500:]}")
        run = json.loads(out.stdout)
        run["server_cpu_s"] = round(cpu1 - cpu0, 3)
        run["at"] = time.time()
        return run

    def batch_ratio(self) -> float | None:
        """Inferences per model execution since start (the average batch), from /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            status, text = _http("GET", self._url("/metrics"), timeout=10)
        except OSError:
            return None
        if status != 200 or not isinstance(text, str):
            return None
        counts = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.labels.get("model") == self.model.model_id and s.name in (
                        "mlos_inference_count_total", "mlos_inference_exec_count_total"):
                    counts[s.name] = s.value
        execs = counts.get("mlos_inference_exec_count_total")
        return round(counts["mlos_inference_count_total"] / execs, 3) if execs else None

    def stop(self) -> None:
        if self.core is not None:
            self.core.stop()
