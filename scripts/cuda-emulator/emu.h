// CPU emulation of the CUDA features the kernels in src/backend/cuda/kernels use, for
// checking them without a GPU (see README.md). One std::thread per CUDA thread with
// real barriers for __syncthreads and per-warp barriers for shuffles. The threads of
// one block are created once per launch and walk the blocks of the grid in order, a
// barrier between blocks, so blocks never overlap: nothing here can expose an
// inter-block race.
//
// Guards: a barrier that waits more than EMU_DEADLOCK_SECONDS (a thread exited or
// diverged before __syncthreads / a full-mask shuffle) aborts with a message instead
// of hanging; launch limits (1024 threads, grid y/z <= 65535, 48 KiB dynamic shared
// memory) are enforced like a real launch; dynamic shared memory is exactly the
// requested size, with a guard band checked after every block.
#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>
using std::exp; using std::isfinite; using std::log; using std::max; using std::min; using std::sqrt;

#ifndef EMU_DEADLOCK_SECONDS
#define EMU_DEADLOCK_SECONDS 20
#endif

struct dim3e { unsigned x = 0, y = 0, z = 0; };
thread_local dim3e threadIdx, blockIdx;
static dim3e blockDim, gridDim;

[[noreturn]] static void emu_fail(const char* what) {
    fprintf(stderr, "emu: %s (block %u,%u,%u)\n", what, blockIdx.x, blockIdx.y, blockIdx.z);
    fflush(stderr);
    abort();
}

// Barriers count their completions; a watchdog in run_grid aborts when none
// completes for EMU_DEADLOCK_SECONDS while the launch is still running.
static std::atomic<unsigned long> g_progress{0};
static std::atomic<const char*> g_waiting_at{nullptr};
class EmuBarrier {
    std::barrier<> bar;
    const char* what;
public:
    EmuBarrier(unsigned n, const char* what) : bar(n), what(what) {}
    void arrive_and_wait() {
        g_waiting_at = what;
        bar.arrive_and_wait();
        ++g_progress;
    }
};

static std::unique_ptr<EmuBarrier> g_block_bar;
static std::vector<std::unique_ptr<EmuBarrier>> g_warp_bar;
static double g_wbuf[1024];
static std::atomic<int> g_or{0};
static std::mutex g_atomic_mutex;
static std::vector<unsigned char> g_dyn_shared;  // dynamic shared memory + guard band
static size_t g_dyn_bytes = 0;
static const size_t EMU_GUARD = 256;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

static inline int lin() { return threadIdx.x + threadIdx.y * blockDim.x; }
static inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
static inline int __syncthreads_or(int p) {
    __syncthreads(); if (p) g_or = 1; __syncthreads();
    int r = g_or; __syncthreads(); if (lin() == 0) g_or = 0; __syncthreads(); return r;
}
template <class T> T __shfl_xor_sync(unsigned mask, T x, int off) {
    int t = lin(), w = t / 32, l = t % 32;
    if (mask != 0xffffffffu) emu_fail("shuffle with a partial mask is not emulated");
    if ((size_t)w >= g_warp_bar.size()) emu_fail("shuffle in a partial warp (block size not a multiple of 32)");
    g_wbuf[t] = (double)x; g_warp_bar[w]->arrive_and_wait();
    T y = (T)g_wbuf[w * 32 + (l ^ off)]; g_warp_bar[w]->arrive_and_wait(); return y;
}
static inline double __longlong_as_double(long long v) { double d; memcpy(&d, &v, 8); return d; }
// Global atomics: one mutex for all (correct, not fast); returns the old value as CUDA does.
template <class T> T atomicAdd(T* address, T value) {
    std::lock_guard<std::mutex> lock(g_atomic_mutex);
    T old = *address; *address = old + value; return old;
}

static int run_grid(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                    unsigned shared_bytes, const std::function<void()>& f) {
    unsigned n = bx * by * bz;
    if (gx == 0 || gy == 0 || gz == 0) return 0;  // the Rust launcher skips empty grids
    if (bz != 1) emu_fail("blockDim.z > 1 is not emulated");
    if (n == 0 || n > 1024) emu_fail("invalid block size (0 or more than 1024 threads)");
    if (gy > 65535 || gz > 65535 || gx > 0x7fffffffu) emu_fail("grid dimension over the limit");
    if (shared_bytes > 48 * 1024) emu_fail("more than 48 KiB of dynamic shared memory without opt-in");
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, 1};
    g_dyn_bytes = shared_bytes;
    g_block_bar = std::make_unique<EmuBarrier>(n, "__syncthreads");
    g_warp_bar.clear();
    for (unsigned w = 0; w < n / 32; ++w)
        g_warp_bar.push_back(std::make_unique<EmuBarrier>(32, "a warp shuffle"));
    EmuBarrier between(n, "the end of a block");
    auto fresh_shared = [&] {
        g_dyn_shared.assign(shared_bytes + EMU_GUARD, 0xA5);
        memset(g_dyn_shared.data(), 0xFF, shared_bytes);  // uninitialised: NaN garbage
    };
    fresh_shared();
    std::vector<std::thread> ts;
    ts.reserve(n);
    for (unsigned t = 0; t < n; ++t) ts.emplace_back([&, t] {
        threadIdx = {t % bx, t / bx, 0};
        for (unsigned z = 0; z < gz; ++z) for (unsigned y = 0; y < gy; ++y) for (unsigned x = 0; x < gx; ++x) {
            blockIdx = {x, y, z};
            f();
            between.arrive_and_wait();  // every thread of the block is done
            if (t == 0) {
                for (size_t i = shared_bytes; i < shared_bytes + EMU_GUARD; ++i)
                    if (g_dyn_shared[i] != 0xA5) emu_fail("write past the end of dynamic shared memory");
                fresh_shared();
            }
            between.arrive_and_wait();
        }
    });
    std::atomic<bool> done{false};
    std::thread watchdog([&] {
        unsigned long seen = g_progress; int idle = 0;
        while (!done) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            unsigned long now = g_progress;
            idle = (now == seen) ? idle + 1 : 0; seen = now;
            if (idle > 10 * EMU_DEADLOCK_SECONDS) {
                fprintf(stderr, "emu: deadlock: no barrier completed for %d s (a thread exited or "
                        "diverged before __syncthreads or a full-mask shuffle); last reached: %s\n",
                        EMU_DEADLOCK_SECONDS, g_waiting_at.load() ? g_waiting_at.load() : "?");
                fflush(stderr); abort();
            }
        }
    });
    for (auto& t : ts) t.join();
    done = true;
    watchdog.join();
    return 0;
}
