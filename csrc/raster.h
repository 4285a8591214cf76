// The exact rasterizer: the decoder's forward, and Plan (one geometry, many passes), whose
// forward is bit-identical to forward and whose gradients are those of the contract.
//
// Contract (see gscodec/render/__init__.py): pixel (i, j) has centre p = (j + 0.5, i + 0.5);
// for Gaussian k with mean m and conic (a, b, c), dx = p.x - m.x, dy = p.y - m.y and
//     q = (a*dx + (2*b)*dy)*dx + (c*dy)*dy          (float32, this evaluation order, no FMA)
// Gaussian k adds colors_k * exp(-q/2) to the pixel iff q <= Q_CUT and a > 0 and
// a*c - b*b > 0 (float32). These files are built with -ffp-contract=off so that q is
// bit-identical to the reference, which evaluates the same expression op by op. A Gaussian
// with a wave (format v5, amp != 0) adds colors_k * exp(-q/2) * (1 + amp * cos_gsi(arg)),
// in spec section 10's order (`forward` only: the exact Plan has no waves; the fit draws
// them with FitPlan).
//
// Forward: Gaussians are binned into bands of BAND rows by their (widened) y-extent; bands
// are processed in parallel (dynamic scheduling), each accumulating into a band-local planar
// buffer in Gaussian index order, so the result does not depend on the thread count. For
// each Gaussian and row, the x-span of the ellipse q <= Q_CUT is solved analytically in
// double, widened by one pixel, clamped in floating point, and every pixel of the span is
// still tested with q <= Q_CUT, so the result is exactly the definition.
// Backward: parallel over chunks of Gaussians, each Gaussian owning its gradient (no atomics).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "common.h"

namespace gsi {

// Name of the exact hot loops in use: "avx2" or "baseline".
const char* exact_isa_name();

// Max relative error of the exact kernel's exp on a grid of [lo, hi].
double fast_exp_max_rel_error(double lo, double hi, int64_t steps);

// The exact hot loops' cos_gsi (spec section 10) of n values (tests).
void cos_gsi_values(const float* x, int64_t n, float* out);

// Render N Gaussians (means [N,2], conics [N,3], colors [N,C], waves [N,4] (kx, ky, phase,
// amp) or null) to out [H, W, C]. A Gaussian whose amp is 0 is drawn with no cosine, bit
// for bit as with no waves.
void forward(const float* m, const float* q, const float* c, const float* waves, int64_t N,
             int C, int64_t H, int64_t W, float* out, int nt);

// A weight array of a plan; freed arrays are kept for the next plan (release_buffers).
struct Buffer {
    float* data = nullptr;
    size_t size = 0, capacity = 0;
    Buffer() = default;
    Buffer(Buffer&& o) noexcept;
    Buffer& operator=(Buffer&& o) noexcept;
    ~Buffer();
};

// Frees the pooled weight arrays; returns the bytes freed.
size_t release_buffers();

// One geometry rendered many times. The row spans are solved once, and the weights are
// computed once and kept when they fit max_weights; the passes then only multiply and add.
// The forward is bit-identical to `forward`, and the gradients to `backward` (a plan that
// keeps no weights), at any thread count. Call without the GIL.
class Plan {
  public:
    Plan(const float* m, const float* q, int64_t N, int64_t H, int64_t W, int nt,
         int64_t max_weights);
    ~Plan();
    Plan(const Plan&) = delete;
    Plan& operator=(const Plan&) = delete;

    // out [H, W, C]
    void forward(const float* c, int64_t C, int nt, float* out) const;
    // With r = weight * forward(c) - target (weight [H, W] or null for ones): returns
    // scale * sum(r^2) and the gradients of it (gm [N,2], gq [N,3], gc [N,C]).
    double loss_backward(const float* c, int64_t C, const float* target, const float* weight,
                         double scale, int nt, float* gm, float* gq, float* gc) const;
    // Gradients of sum(forward(c) * grad_out), grad_out [H, W, C]; geom false: gc alone
    // (the adjoint, c unused).
    void backward(bool geom, const float* c, int64_t C, const float* grad_out, int nt,
                  float* gm, float* gq, float* gc) const;

    int64_t height() const { return H_; }
    int64_t width() const { return W_; }
    int64_t count() const { return N_; }
    int64_t evaluations() const { return evaluations_; }
    bool weights_stored() const { return stored_; }
    int64_t nbytes() const;

  private:
    void fill_weights(int nt) const;
    void backward_planar(bool geom, const float* pc, int64_t C, const float* gp, int nt,
                         float* pgm, float* pgq, float* pgc) const;
    template <class F>
    void forward_bands(const float* pc, int64_t C, int nt, const F& epilogue) const;

    int64_t H_ = 0, W_ = 0, N_ = 0, evaluations_ = 0;
    bool stored_ = false;
    mutable bool filled_ = false;  // the stored weights have been computed
    mutable std::mutex fill_mutex_;
    std::vector<Gauss> gs_;
    std::vector<int64_t> rows_start_;
    std::vector<RowSpan> spans_;
    Buffer weights_;
    Bands bands_;
    std::vector<int32_t> order_;
};

}  // namespace gsi
