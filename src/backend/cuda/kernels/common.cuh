// Shared by every kernel file. `real` (float or double) is defined before this.
//
// Calling convention: every kernel parameter is 8 bytes (pointers, `long long`
// sizes, `double` scalars); optional buffers are null when absent.

// Sum of `x` over the calling warp, returned to every lane.
__device__ __forceinline__ real warp_sum(real x) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        x += __shfl_xor_sync(0xffffffffu, x, offset);
    }
    return x;
}

// Max of `x` over the calling warp, returned to every lane.
__device__ __forceinline__ real warp_max(real x) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        x = max(x, __shfl_xor_sync(0xffffffffu, x, offset));
    }
    return x;
}

// Sum of `x` over the block (blockDim.x a multiple of 32, at most 1024), returned
// to every thread. `scratch` holds 32 reals of shared memory. Ends with a barrier,
// so the scratch may be reused at once.
__device__ real block_sum(real x, real* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    x = warp_sum(x);
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = (lane < warps) ? scratch[lane] : (real)0;
    x = warp_sum(x);
    __syncthreads();
    return x;
}

// Max of `x` over the block, as `block_sum`.
__device__ real block_max(real x, real* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    x = warp_max(x);
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = (lane < warps) ? scratch[lane] : (real)(-__longlong_as_double(0x7ff0000000000000LL));
    x = warp_max(x);
    __syncthreads();
    return x;
}
