"""``--backend triton``: trace per-element programs, emit kernels, check them."""
