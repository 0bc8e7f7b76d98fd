// logprob kernels: see src/backend/cuda/logprob.rs (to be written)
