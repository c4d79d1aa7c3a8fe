"""llama-cpp-python called directly, as a load point of benchmarks/test_llm_serving.py: one ``Llama``
(its defaults, 2048-token context) in this process, shared by N client threads under a lock (it
has one sequence), each streaming its requests one after the other. Prints the JSON that
benchmarks/llm_load.py prints for a server. Run in its own process, without the core's
``GGML_CPU_TILED_MM`` setting, so it is stock llama-cpp-python.

    python -m benchmarks.llm_direct --model-path M.gguf --clients 4 --requests 3 --max-tokens 64 \\
        --prompts prompts.json --threads 2
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.llm_direct", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-path", required=True)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--requests", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompts", required=True)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import llama_cpp

    prompts = json.loads(open(args.prompts).read())
    llm = llama_cpp.Llama(args.model_path, n_ctx=2048, n_threads=args.threads, n_batch=512, verbose=False)
    llm.create_completion("Warm up", max_tokens=4, temperature=0)
    lock = threading.Lock()
    results: list[dict] = []
    barrier = threading.Barrier(args.clients + 1)

    def client(c: int) -> None:
        barrier.wait()
        for i in range(args.requests):
            start = time.perf_counter()
            ttft, parts, n = None, [], 0
            with lock:
                for ch in llm.create_completion(prompts[(c * args.requests + i) % len(prompts)], stream=True,
                                                max_tokens=args.max_tokens, temperature=0, top_k=0, min_p=0):
                    text = ch["choices"][0]["text"]
                    n += ch["choices"][0]["finish_reason"] is None  # one chunk per token; the last closes
                    if text:
                        parts.append(text)
                        if ttft is None:
                            ttft = time.perf_counter() - start
            results.append({"client": c, "i": i, "start_s": start - t0, "ttft_s": ttft,
                            "total_s": time.perf_counter() - start, "tokens": n, "cached_tokens": None,
                            "text": "".join(parts)})

    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    json.dump({"wall_s": time.perf_counter() - t0, "clients": args.clients, "requests": results}, sys.stdout)
    llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
