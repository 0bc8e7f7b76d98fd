// elementwise kernels: see src/backend/cuda/elementwise.rs (to be written)
