// sparse kernels: see src/backend/cuda/sparse.rs (to be written)
