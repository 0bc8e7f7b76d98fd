// embedding kernels: see src/backend/cuda/embedding.rs (to be written)
