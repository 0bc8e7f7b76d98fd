// vector kernels: see src/backend/cuda/vector.rs (to be written)
