"""Hand-written kernels for one backend each: what a production library does where the
portable Array API code leaves speed on the table. ``cupy_fused`` is the CUDA chapter;
the norm files reach it only through ``norms._shared.fused_kernels``."""
