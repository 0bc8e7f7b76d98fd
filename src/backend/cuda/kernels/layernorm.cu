// layernorm kernels: see src/backend/cuda/layernorm.rs (to be written)
