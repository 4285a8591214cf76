// Run-time choice of the instruction set of the hot loops.

#include "isa.h"

#include <atomic>
#include <stdexcept>

namespace gsi {

bool cpu_has_avx2() {
#if GSI_HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return false;
#endif
}

bool cpu_has_fma() {
#if GSI_HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

namespace {
std::atomic<int> g_avx2{-1};  // -1: not chosen yet; 0: baseline; 1: AVX2
}

bool use_avx2() {
    int v = g_avx2.load(std::memory_order_acquire);
    if (v < 0) {
        v = cpu_has_avx2() ? 1 : 0;
        g_avx2.store(v, std::memory_order_release);
    }
    return v == 1;
}

void set_isa(const std::string& name) {
    if (name == "baseline") {
        g_avx2.store(0);
    } else if (name == "avx2") {
        if (!cpu_has_avx2()) throw std::invalid_argument("this CPU has no AVX2");
        g_avx2.store(1);
    } else if (name == "auto") {
        g_avx2.store(-1);
        use_avx2();
    } else {
        throw std::invalid_argument("unknown or unsupported ISA: " + name);
    }
}

}  // namespace gsi
