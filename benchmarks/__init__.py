"""tinynorm's benchmarks: ``python -m benchmarks [--quick] [--gpu] [--json PATH]`` from the repository root.

What is measured, and how (every number is a median of several runs after a warm-up, with
the contenders interleaved A, B, A, B, ... so that drift in the machine hits both):

(a) every registry variant, explicit backward vs autograd reference: fwd+bwd time, and the
    peak memory traced by ``tracemalloc`` (NumPy reports its allocations to it);
(b) LayerNorm, RMSNorm, GroupNorm, BatchNorm against PyTorch on the CPU (2 threads), in a
    subprocess per huge-page setting (``THP_MEM_ALLOC_ENABLE`` is read when torch is imported);
(c) the engine's fixed cost per operation on tiny tensors, against PyTorch's;
(d) the memory-bandwidth lower bound for a fwd+bwd at the big shapes;
(e) how much the overflow rescue in the statistics costs when no row overflows;
(gpu) with ``--gpu``: tinynorm on CuPy (autograd reference, explicit, fused kernels) against
    PyTorch eager on the same GPU;
(goals) last, every performance goal of the project checked against this run's numbers:
    measured, limit, met or not (or not measured, where the run did not go there).

Benchmarks are never tests: ``tests/test_perf_paths.py`` only runs ``--quick`` to keep this
harness from rotting, and checks that the fast paths compute what the plain formulas do.
"""
