// Which instruction set the hot loops use, chosen at run time so that a built wheel runs on
// any x86-64 CPU: AVX2 where the CPU has it (the fitting loops also need FMA), else the
// baseline copies.
#pragma once

#include <string>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define GSI_HAVE_AVX2 1
#else
#define GSI_HAVE_AVX2 0
#endif

namespace gsi {

bool cpu_has_avx2();
bool cpu_has_fma();

// True when the AVX2 copies are in use (the CPU's choice, or forced by set_isa).
bool use_avx2();

// "baseline", "avx2" (std::invalid_argument if the CPU has no AVX2) or "auto".
void set_isa(const std::string& name);

}  // namespace gsi
