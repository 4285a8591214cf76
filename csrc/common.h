// Definitions shared by every stage of the CPU kernel (gscodec._raster): the cut-off, the
// band height, the per-Gaussian set-up record, and the set-up functions (geometry.cpp).
//
// The files, one stage each:
//   thread_pool.cpp   thread count and the persistent worker pool
//   isa.cpp           which instruction set the hot loops use (AVX2 or baseline)
//   geometry.cpp      per-Gaussian set-up, bands of rows, planar copies
//   raster_kernels.h  the exact hot loops (the decoder's arithmetic), compiled per ISA
//   raster.cpp        the exact forward and the exact Plan (bit-identical to forward)
//   fit_simd.h        8-lane float vectors: AVX2+FMA intrinsics and a portable baseline
//   fit_kernels.h     the fitting hot loops (cheaper arithmetic), compiled per ISA
//   fit.cpp           FitPlan: the encoder's render, loss and gradients, band by band
//   bindings.cpp      the Python module: numpy arguments, checks, GIL release
#pragma once

#include <cstdint>
#include <vector>

#ifndef GSI_Q_CUT
#error "GSI_Q_CUT must be defined by the build (setup.py reads it from gscodec/render/common.py)"
#endif

namespace gsi {

constexpr float Q_CUT = (float)(GSI_Q_CUT);
constexpr int BAND = 16;  // rows per band: the unit of parallel work of the forward

// Plans pad every row to a multiple of PAD pixels (one AVX2 vector of floats), and their
// image buffers have PAD spare columns, so the loops run whole vectors.
constexpr int PAD = 8;
inline int padded(int n) { return (n + PAD - 1) / PAD * PAD; }

struct Gauss {
    float mx, my, a, b, c;
    float kx, ky, phase, amp;  // the wave (format v5); amp == 0: none (the exact forward)
    double det;  // a*c - b*b in double (for the analytic spans)
    int i0, i1;  // candidate rows (inclusive), already clamped to the image
    bool valid;
};

struct RowSpan {    // one candidate row of one Gaussian (exact plans)
    int32_t j0, n;  // first column and pixel count (n = 0: the row has no span)
    int64_t off;    // offset of the row's padded(n) weights in the plan's weight array
};

// Validity (the contract), widened candidate rows, culling. wave: (kx, ky, phase, amp) or
// null for none; a wave with amp != 0 that is not finite makes the Gaussian invalid (it
// contributes nothing, as the spec says), one with amp == 0 is taken as (0, 0, 0, 0).
Gauss setup(const float* m, const float* q, const float* wave, int64_t H, int64_t W);
std::vector<Gauss> setup_all(const float* m, const float* q, const float* waves, int64_t N,
                             int64_t H, int64_t W, int nt = 1);

// Gaussians binned into bands of BAND rows by their candidate rows: the band b holds
// ids[start[b] .. start[b+1]) in index order (the forward's summation order).
struct Bands {
    std::vector<int64_t> start;
    std::vector<int32_t> ids;
};
Bands bin_bands(const std::vector<Gauss>& gs, int64_t H);

// Gaussians grouped by the band of their first row (stable), for cache locality.
std::vector<int32_t> band_order(const std::vector<Gauss>& gs, int64_t H);

// Interleaved [H, W, C] -> planar [C, H, stride], the columns from W to stride zero.
std::vector<float> to_planar(const float* pg, int64_t H, int64_t W, int64_t C, int nt,
                             int64_t stride);

}  // namespace gsi
