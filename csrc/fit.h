// FitPlan: the encoder's render, loss and gradients for one geometry (the fitting kernel).
//
// Unlike the exact Plan (raster.h), it is not bit-identical to the decoder's forward: it
// uses FMA and a cheaper exp (fit_kernels.h), within about 1e-6 of the exact weights; the
// cut-off decisions are the decoder's. Only the fit uses it; the file the encoder writes
// is decoded by the exact path.
//
// Work is done band by band (BAND rows, in parallel): a band's forward is complete when its
// Gaussians have been summed, so its residual and its gradient partials follow at once,
// while the band is in cache; no weights are stored. Each (Gaussian, band) pair owns a slot
// of partial sums, and the slots of a Gaussian are added in band order: the results do not
// depend on the thread count. Memory is linear in the pixels and the Gaussians' rows.
#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "common.h"

namespace gsi {

// A vector whose resize leaves new elements uninitialised (for arrays that a plan fills
// completely right after: zeroing them cost about a tenth of the set-up).
template <class T>
struct DefaultInitAllocator : std::allocator<T> {
    template <class U>
    struct rebind {
        using other = DefaultInitAllocator<U>;
    };
    DefaultInitAllocator() = default;
    template <class U>
    DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
    template <class U>
    void construct(U* p) noexcept {
        ::new ((void*)p) U;
    }
    template <class U, class... Args>
    void construct(U* p, Args&&... args) {
        ::new ((void*)p) U(std::forward<Args>(args)...);
    }
};
template <class T>
using FilledVector = std::vector<T, DefaultInitAllocator<T>>;

struct FitSpan {    // one candidate row of one Gaussian
    int32_t j0, n;  // first column and pixel count (n = 0: the row has no span)
};

struct FitEntry {              // one Gaussian in one band
    float mx, my, a, b, c;     // mean and conic
    int32_t k;                 // which Gaussian
    int32_t row0, nrows;       // its candidate rows in the band
    int64_t span;              // where their spans start in the plan's span array
};

struct FitWave {            // one Gaussian's wave in one band (plans with waves)
    float kx, ky, phase, amp;
    float c8, s8;           // cos and sin of 8 kx (a row's rotation from vector to vector)
};

// How a pass treats waves: NO_WAVE (a plan without them), WAVE_W (the weights alone: a
// Gaussian whose amp is 0 is drawn with no sine or cosine) or WAVE_GRAD (the geometry's
// gradients: every Gaussian's wave is evaluated, amp 0 included, since the fit needs d/d amp
// there, and the kept weights are the three vectors w, e cos, e sin).
enum WaveMode { NO_WAVE = 0, WAVE_W = 1, WAVE_GRAD = 2 };

// Name of the fitting hot loops in use: "avx2+fma" or "baseline".
const char* fit_isa_name();

// Max relative error of the fitting kernels' exp on a grid of [lo, hi].
double fit_exp_max_rel_error(double lo, double hi, int64_t steps);
// Max absolute error of the fitting kernels' sin and cos on a grid of [lo, hi].
double fit_sincos_max_error(double lo, double hi, int64_t steps);

// The encoder's flat parameters (encoder/adam.py FlatParams): x [N, K], row stride K >= 5, with
// the columns (x, y, l1, l2, theta, ...), l_k = log2 sigma_k. flat_geometry writes the means
// [N, 2] and the conics [N, 3] of Sigma^-1: a = cos^2 i1 + sin^2 i2, b = cos sin (i1 - i2),
// c = sin^2 i1 + cos^2 i2 with i_k = 2^(-2 l_k) (bitstream/model.py conics_from_scale_rot).
// flat_chain writes to g's first 5 columns (row stride K) the gradients with respect to
// (x, y, l1, l2, theta) given those with respect to the means gm [N, 2] and the conics
// gq [N, 3]: with d i_k / d l_k = -2 ln 2 i_k and d(a, b, c)/d theta = (i1 - i2)
// (-sin 2t, cos 2t, sin 2t); one pass instead of a dozen torch operations per fit step.
void flat_geometry(const float* x, int64_t N, int64_t K, float* means, float* conics,
                   int nt);
void flat_chain(const float* x, int64_t N, int64_t K, const float* gm, const float* gq,
                float* g, int nt);

// One Adam step (Kingma & Ba) on x [N, K] in place, a step per column (lr [K], times
// factor): m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
// x -= m / (sqrt(v / bc2) + eps) * lr * factor / bc1 (bc: the bias corrections).
void adam_step(float* x, float* m, float* v, const float* g, const float* lr, int64_t N,
               int64_t K, double b1, double b2, double bc1, double bc2, double eps,
               double factor);

// Waves (format v5): a plan made with waves [N, 4] (kx, ky, phase, amp) draws every
// Gaussian's weight as w = e (1 + amp cos(kx dx + ky dy + phase)), and its geometry's
// gradients include those of the waves, gw [N, 4] = d/d(kx, ky, phase, amp), for every
// Gaussian, amp 0 included (the fit starts its waves there). A plan without waves runs
// the code it ran before them.
class FitPlan {
  public:
    FitPlan(const float* m, const float* q, const float* waves, int64_t N, int64_t H,
            int64_t W, int nt);

    // out [H, W, C]
    void forward(const float* c, int64_t C, int nt, float* out) const;
    // With r = weight * forward(c) - target (weight [H, W] or null for ones; target
    // [H, W, C] or null for zeros): returns scale * sum(r^2) and its gradients, gm [N, 2],
    // gq [N, 3], gw [N, 4] (geom only; gw with waves only) and gc [N, C]. With geom false
    // (the colour solves) only gc is formed: 2 scale A^T W (W A c - target).
    double loss_backward(const float* c, int64_t C, const float* target, const float* weight,
                         double scale, bool geom, int nt, float* gm, float* gq, float* gc,
                         float* gw) const;
    // Gradients of sum(forward(c) * grad_out), grad_out [H, W, C]; geom false: gc alone
    // (the adjoint A^T grad_out, c unused).
    void backward(bool geom, const float* c, int64_t C, const float* grad_out, int nt,
                  float* gm, float* gq, float* gc, float* gw) const;

    int64_t height() const { return H_; }
    int64_t width() const { return W_; }
    int64_t count() const { return N_; }
    int64_t evaluations() const { return evaluations_; }
    bool has_waves() const { return waved_; }
    int64_t nbytes() const;

  private:
    template <class Epilogue>
    void bands_pass(const float* c, int64_t C, bool render, bool geom, int nt,
                    const Epilogue& epilogue, float* part) const;
    void reduce(bool geom, int64_t C, const float* part, int nt, float* gm, float* gq,
                float* gc, float* gw) const;
    int npart() const { return waved_ ? 13 : 9; }  // partial sums per slot

    int64_t H_ = 0, W_ = 0, N_ = 0, evaluations_ = 0;
    std::vector<int64_t> band_start_;   // the entries of band b: band_start_[b] ...
    std::vector<int64_t> band_vectors_; // 8-pixel vectors of band b's rows
    FilledVector<FitEntry> entries_;    // band by band, each band's in Gaussian order
    FilledVector<FitSpan> spans_;       // band by band, each entry's rows in order
    std::vector<int64_t> slot_start_;   // the entries of Gaussian k, in band order, are
    std::vector<int64_t> slot_entry_;   // slot_entry_[slot_start_[k] ...]
    bool waved_ = false;                // made with waves
    std::vector<FitWave> waves_;        // with waves: entries_'s, in the same order
};

}  // namespace gsi
