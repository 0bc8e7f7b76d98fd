// attention kernels: see src/backend/cuda/attention.rs (to be written)
