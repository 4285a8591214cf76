// The exact rasterizer: ISA dispatch of the exact hot loops, the one-pass forward and the
// exact Plan (see raster.h for the contract).

#include "raster.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "isa.h"
#include "thread_pool.h"

namespace gsi {

// ---- hot loops: AVX2 copy (x86 with GCC/Clang) and baseline copy ----------------------------
// raster_kernels.h uses the names Gauss, RowSpan, Q_CUT, PAD and padded of the namespace it is
// included in.
#if GSI_HAVE_AVX2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")  // not "fma": contraction would change q
#endif
#define GSI_NS gsi_avx2
#include "raster_kernels.h"
#undef GSI_NS
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

#define GSI_NS gsi_base
#include "raster_kernels.h"
#undef GSI_NS

namespace {

struct Impl {
    const char* name;
    void (*forward_band)(int, const Gauss*, const int32_t*, int64_t, int64_t, const float*,
                         int, int, int64_t, float*, float*, float*);
    float (*fast_exp)(float);
    float (*cos_gsi)(float);
    void (*plan_spans)(const Gauss*, int64_t, int64_t, int64_t, const int64_t*, RowSpan*);
    void (*plan_weights)(const Gauss*, int64_t, int64_t, const int64_t*, const RowSpan*,
                         float*);
    void (*plan_forward_band)(int, const Gauss*, const int32_t*, int64_t, int64_t,
                              const int64_t*, const RowSpan*, float*, bool, const float*, int,
                              int, int64_t, float*, float*, float*);
    void (*plan_backward_chunk)(int, bool, const Gauss*, const int32_t*, int64_t, int64_t,
                                const int64_t*, const RowSpan*, const float*, const float*,
                                const float*, int64_t, int64_t, float*, float*, float*,
                                float*);
};

#define GSI_IMPL(NAME, NS)                                                                    \
    {NAME, NS::forward_band, NS::fast_exp_out, NS::cos_gsi_out, NS::plan_spans_chunk,         \
     NS::plan_weights_chunk, NS::plan_forward_band, NS::plan_backward_chunk}
const Impl kBase = GSI_IMPL("baseline", gsi_base);
#if GSI_HAVE_AVX2
const Impl kAvx2 = GSI_IMPL("avx2", gsi_avx2);
#endif
#undef GSI_IMPL

const Impl* impl() {
#if GSI_HAVE_AVX2
    return use_avx2() ? &kAvx2 : &kBase;
#else
    return &kBase;
#endif
}

constexpr int64_t BWD_CHUNK = 32;   // Gaussians per backward work item
constexpr int64_t PLAN_CHUNK = 64;  // Gaussians per work item of the plan's set-up

void forward_impl(const Impl& im, const std::vector<Gauss>& gs, const float* col, int C,
                  int64_t H, int64_t W, float* out, int nt) {
    const Bands bands = bin_bands(gs, H);
    parallel_dynamic((int64_t)bands.start.size() - 1, nt, [&](int64_t band) {
        const int r0 = (int)(band * BAND);
        const int r1 = (int)std::min<int64_t>(H, r0 + BAND);  // exclusive
        std::vector<float> acc((size_t)C * (r1 - r0) * W);
        std::vector<float> w((size_t)W);
        im.forward_band(C, gs.data(), bands.ids.data(), bands.start[band],
                        bands.start[band + 1], col, r0, r1, W, out, acc.data(), w.data());
    });
}

// Weight arrays are tens of MB, and the encoder made a plan per step: a freed array is kept
// for the next plan, so that each step does not map, fault in and zero fresh memory (not
// measured apart: at one thread the weight pass took about 14 ms either way, bound by the
// exponentials).
std::mutex g_buffers_mutex;
std::vector<Buffer> g_buffers;  // at most 2 kept: a step's plan and the colour solve's

Buffer take_buffer(size_t n) {
    {
        std::lock_guard<std::mutex> lk(g_buffers_mutex);
        for (size_t i = 0; i < g_buffers.size(); ++i)
            if (g_buffers[i].capacity >= n) {
                Buffer b = std::move(g_buffers[i]);
                g_buffers.erase(g_buffers.begin() + (std::ptrdiff_t)i);
                b.size = n;
                return b;
            }
    }
    Buffer b;
    const size_t cap = n + n / 8 + 1024;  // room for a slightly larger next plan
    b.data = static_cast<float*>(std::malloc(cap * sizeof(float)));
    if (!b.data) throw std::bad_alloc();
    b.size = n;
    b.capacity = cap;
    return b;
}

void give_buffer(Buffer&& b) {
    if (!b.data) return;
    std::lock_guard<std::mutex> lk(g_buffers_mutex);
    g_buffers.push_back(std::move(b));
    if (g_buffers.size() > 2) {  // drop the smallest
        auto it = std::min_element(g_buffers.begin(), g_buffers.end(),
                                   [](const Buffer& x, const Buffer& y) {
                                       return x.capacity < y.capacity;
                                   });
        g_buffers.erase(it);
    }
}

}  // namespace

const char* exact_isa_name() { return impl()->name; }

double fast_exp_max_rel_error(double lo, double hi, int64_t steps) {
    const Impl* im = impl();
    double worst = 0.0;
    for (int64_t s = 0; s <= steps; ++s) {
        const float x = (float)(lo + (hi - lo) * (double)s / (double)std::max<int64_t>(1, steps));
        const double ref = std::exp((double)x);
        worst = std::max(worst, std::fabs((double)im->fast_exp(x) - ref) / ref);
    }
    return worst;
}

void cos_gsi_values(const float* x, int64_t n, float* out) {
    const Impl* im = impl();
    for (int64_t i = 0; i < n; ++i) out[i] = im->cos_gsi(x[i]);
}

void forward(const float* m, const float* q, const float* c, const float* waves, int64_t N,
             int C, int64_t H, int64_t W, float* out, int nt) {
    if (N == 0 || H == 0 || W == 0) {
        std::memset(out, 0, sizeof(float) * (size_t)(H * W * C));
        return;
    }
    const auto gs = setup_all(m, q, waves, N, H, W, nt);
    forward_impl(*impl(), gs, c, C, H, W, out, nt);
}

Buffer::Buffer(Buffer&& o) noexcept : data(o.data), size(o.size), capacity(o.capacity) {
    o.data = nullptr;
    o.size = o.capacity = 0;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
    std::swap(data, o.data);
    std::swap(size, o.size);
    std::swap(capacity, o.capacity);
    return *this;
}

Buffer::~Buffer() { std::free(data); }

// Frees the pooled buffers (the encoder calls it when an encode ends, so that a long-running
// process does not keep a plan's worth of memory); returns the bytes freed.
size_t release_buffers() {
    std::lock_guard<std::mutex> lk(g_buffers_mutex);
    size_t n = 0;
    for (const Buffer& b : g_buffers) n += b.capacity * sizeof(float);
    g_buffers.clear();
    return n;
}

// ---- the exact plan -------------------------------------------------------------------------

Plan::Plan(const float* pm, const float* pq, int64_t N, int64_t H, int64_t W, int nt,
           int64_t max_weights)
    : H_(H), W_(W), N_(N) {
    const Impl& im = *impl();
    gs_ = setup_all(pm, pq, nullptr, N_, H_, W_, nt);  // no waves (the fit has FitPlan)
    if (H_ == 0 || W_ == 0)
        for (auto& g : gs_) g.valid = false;
    rows_start_.assign((size_t)N_ + 1, 0);
    for (int64_t k = 0; k < N_; ++k)
        rows_start_[k + 1] = rows_start_[k] + (gs_[k].valid ? gs_[k].i1 - gs_[k].i0 + 1 : 0);
    spans_.resize((size_t)rows_start_[N_]);
    const int64_t nchunks = (N_ + PLAN_CHUNK - 1) / PLAN_CHUNK;
    parallel_dynamic(nchunks, nt, [&](int64_t ch) {
        im.plan_spans(gs_.data(), ch * PLAN_CHUNK, std::min(N_, (ch + 1) * PLAN_CHUNK), W_,
                      rows_start_.data(), spans_.data());
    });
    int64_t off = 0;
    for (auto& sp : spans_) {
        sp.off = off;
        off += padded(sp.n);
        evaluations_ += sp.n;
    }
    // The weights are computed by the first pass that needs them (a forward fills them on
    // the way, so a plan's forward costs about what `forward` does).
    if (off <= max_weights) {
        weights_ = take_buffer((size_t)off);
        stored_ = true;
    }
    bands_ = bin_bands(gs_, H_);
    order_ = band_order(gs_, H_);
}

Plan::~Plan() { give_buffer(std::move(weights_)); }

int64_t Plan::nbytes() const {
    return (int64_t)(weights_.size * sizeof(float) + spans_.size() * sizeof(RowSpan) +
                     gs_.size() * sizeof(Gauss) + bands_.ids.size() * sizeof(int32_t) +
                     order_.size() * sizeof(int32_t));
}

void Plan::forward(const float* pc, int64_t C, int nt, float* o) const {
    if (N_ == 0 || H_ == 0 || W_ == 0) {
        std::memset(o, 0, sizeof(float) * (size_t)(H_ * W_ * C));
        return;
    }
    forward_bands(pc, C, nt, [&](int r0, int r1, const float* acc) {
        const int64_t Wp = W_ + PAD, bh = r1 - r0;
        for (int64_t i = 0; i < bh; ++i) {
            float* orow = o + (r0 + i) * W_ * C;
            for (int64_t j = 0; j < W_; ++j)
                for (int64_t ch = 0; ch < C; ++ch)
                    orow[j * C + ch] = acc[(ch * bh + i) * Wp + j];
        }
    });
}

// The residual goes straight into the backward's planar buffer: no image crosses to Python.
// The sum is per band in double, then over bands in order (the same value at any thread
// count).
double Plan::loss_backward(const float* pc, int64_t C, const float* pt, const float* pw,
                           double scale, int nt, float* pgm, float* pgq, float* pgc) const {
    const int64_t Wp = W_ + PAD, plane = H_ * Wp;
    const int64_t nb = (H_ + BAND - 1) / BAND;
    std::vector<float> gp((size_t)(C * plane));  // zero, the spare columns included
    std::vector<double> band_loss((size_t)std::max<int64_t>(nb, 1), 0.0);
    const float g2 = (float)(2.0 * scale);
    auto residual = [&](int r0, int r1, const float* acc) {
        const int64_t bh = r1 - r0;
        double sum = 0.0;
        for (int64_t ch = 0; ch < C; ++ch)
            for (int64_t i = 0; i < bh; ++i) {
                const int64_t row = r0 + i;
                const float* a = acc + (ch * bh + i) * Wp;
                float* g = gp.data() + ch * plane + row * Wp;
                for (int64_t j = 0; j < W_; ++j) {
                    const float w = pw ? pw[row * W_ + j] : 1.0f;
                    const float r = w * a[j] - pt[(row * W_ + j) * C + ch];
                    sum += (double)r * (double)r;
                    g[j] = g2 * (w * r);
                }
            }
        band_loss[(size_t)(r0 / BAND)] = sum;
    };
    if (N_ > 0 && H_ > 0 && W_ > 0) {
        forward_bands(pc, C, nt, residual);
    } else {
        std::vector<float> zero((size_t)(C * BAND * Wp), 0.0f);
        for (int64_t b = 0; b < nb; ++b)
            residual((int)(b * BAND), (int)std::min<int64_t>(H_, (b + 1) * BAND), zero.data());
    }
    double loss = 0.0;
    for (double v : band_loss) loss += v;
    backward_planar(true, pc, C, gp.data(), nt, pgm, pgq, pgc);
    return loss * scale;
}

void Plan::backward(bool geom, const float* pc, int64_t C, const float* pg, int nt,
                    float* pgm, float* pgq, float* pgc) const {
    const std::vector<float> gp = to_planar(pg, H_, W_, C, nt, W_ + PAD);
    backward_planar(geom, pc, C, gp.data(), nt, pgm, pgq, pgc);
}

// A backward or adjoint before any forward: compute the stored weights first.
void Plan::fill_weights(int nt) const {
    std::lock_guard<std::mutex> lk(fill_mutex_);
    if (!stored_ || filled_) return;
    const Impl& im = *impl();
    parallel_dynamic((N_ + PLAN_CHUNK - 1) / PLAN_CHUNK, nt, [&](int64_t ch) {
        im.plan_weights(gs_.data(), ch * PLAN_CHUNK, std::min(N_, (ch + 1) * PLAN_CHUNK),
                        rows_start_.data(), spans_.data(), weights_.data);
    });
    filled_ = true;
}

// The backward (geom) or adjoint for a planar gradient gp [C, H, W + PAD] (spare columns
// zero).
void Plan::backward_planar(bool geom, const float* pc, int64_t C, const float* gp, int nt,
                           float* pgm, float* pgq, float* pgc) const {
    if (H_ == 0 || W_ == 0) {
        if (geom) {
            std::memset(pgm, 0, sizeof(float) * (size_t)(N_ * 2));
            std::memset(pgq, 0, sizeof(float) * (size_t)(N_ * 3));
        }
        std::memset(pgc, 0, sizeof(float) * (size_t)(N_ * C));
        return;
    }
    if (N_ == 0) return;
    const Impl& im = *impl();
    fill_weights(nt);
    const float* weights = stored_ ? weights_.data : nullptr;
    const int64_t nchunks = (N_ + BWD_CHUNK - 1) / BWD_CHUNK;
    parallel_dynamic(nchunks, nt, [&](int64_t chunk) {
        std::vector<float> scratch(stored_ ? 0 : (size_t)(W_ + PAD));
        const int64_t e0 = chunk * BWD_CHUNK, e1 = std::min(N_, e0 + BWD_CHUNK);
        im.plan_backward_chunk((int)C, geom, gs_.data(), order_.data(), e0, e1,
                               rows_start_.data(), spans_.data(), weights, pc, gp, H_, W_,
                               pgm, pgq, pgc, scratch.data());
    });
}

// Accumulate every band of forward(colors) and hand it to epilogue(r0, r1, acc), acc planar
// [C][r1 - r0][W + PAD]. The first pass of a plan that stores weights fills them.
template <class F>
void Plan::forward_bands(const float* pc, int64_t C, int nt, const F& epilogue) const {
    const Impl& im = *impl();
    std::unique_lock<std::mutex> lk(fill_mutex_);
    const bool fill = stored_ && !filled_;
    if (!fill) lk.unlock();
    parallel_dynamic((int64_t)bands_.start.size() - 1, nt, [&](int64_t band) {
        const int r0 = (int)(band * BAND);
        const int r1 = (int)std::min<int64_t>(H_, r0 + BAND);
        std::vector<float> acc((size_t)C * (r1 - r0) * (W_ + PAD));
        std::vector<float> scratch(stored_ ? 0 : (size_t)(W_ + PAD));
        im.plan_forward_band((int)C, gs_.data(), bands_.ids.data(), bands_.start[band],
                             bands_.start[band + 1], rows_start_.data(), spans_.data(),
                             weights_.data, fill, pc, r0, r1, W_, nullptr, acc.data(),
                             scratch.data());
        epilogue(r0, r1, acc.data());
    });
    if (fill) filled_ = true;
}

}  // namespace gsi
