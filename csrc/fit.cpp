// FitPlan (fit.h): set-up, the band passes and the reduction of the gradient partials.

#include "fit.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "fit_simd.h"
#include "isa.h"
#include "thread_pool.h"

namespace gsi {

// ---- hot loops: AVX2+FMA copy (x86 with GCC/Clang) and baseline copy -----------------------
#if GSI_HAVE_AVX2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define GSI_FIT_NS fit_avx2
#define GSI_FIT_VEC VecAvx2
#include "fit_kernels.h"
#undef GSI_FIT_VEC
#undef GSI_FIT_NS
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

#define GSI_FIT_NS fit_base
#define GSI_FIT_VEC VecBase
#include "fit_kernels.h"
#undef GSI_FIT_VEC
#undef GSI_FIT_NS

namespace {

// Partial sums per slot (FitPlan::npart): 5 geometry + up to 4 colours, + 4 of a wave.
constexpr int NPART_MAX = 13;
constexpr int64_t RED_CHUNK = 256;  // Gaussians per work item of the reduction

struct FitImpl {
    const char* name;
    float (*exp_one)(float);
    void (*sincos_one)(float, float*, float*);
    void (*spans)(const FitEntry*, int64_t, int64_t, int64_t, FitSpan*);
    void (*forward_band)(int, const FitEntry*, int64_t, int64_t, const FitSpan*, const float*,
                         int, int, int64_t, float*, float*, const FitWave*, int);
    void (*backward_band)(int, bool, const FitEntry*, int64_t, int64_t, const FitSpan*,
                          const float*, const float*, int, int, int64_t, int, float*,
                          const float*, const FitWave*, int);
    double (*residual_band)(int, float*, int, int, int64_t, int64_t, const float*,
                            const float*, float, float*);
};

#define GSI_FIT_IMPL(NAME, NS) \
    {NAME, NS::exp_one, NS::sincos_one, NS::spans_chunk, NS::forward_band, NS::backward_band, \
     NS::residual_band}
const FitImpl kFitBase = GSI_FIT_IMPL("baseline", fit_base);
#if GSI_HAVE_AVX2
const FitImpl kFitAvx2 = GSI_FIT_IMPL("avx2+fma", fit_avx2);
#endif
#undef GSI_FIT_IMPL

// Per-thread scratch arrays (which: 0 band image, 1 kept weights, 2 a target row), grown as
// needed and kept: a fresh allocation per band and call costs page faults and zeroing.
float* scratch(int which, size_t n) {
    thread_local std::vector<float> bufs[3];
    std::vector<float>& b = bufs[which];
    if (b.size() < n) b.resize(n + n / 4);
    return b.data();
}

const FitImpl& fit_impl() {
#if GSI_HAVE_AVX2
    static const bool fma = cpu_has_fma();
    if (use_avx2() && fma) return kFitAvx2;
#endif
    return kFitBase;
}

}  // namespace

const char* fit_isa_name() { return fit_impl().name; }

double fit_exp_max_rel_error(double lo, double hi, int64_t steps) {
    const FitImpl& im = fit_impl();
    double worst = 0.0;
    for (int64_t s = 0; s <= steps; ++s) {
        const float x = (float)(lo + (hi - lo) * (double)s / (double)std::max<int64_t>(1, steps));
        const double ref = std::exp((double)x);
        worst = std::max(worst, std::fabs((double)im.exp_one(x) - ref) / ref);
    }
    return worst;
}

double fit_sincos_max_error(double lo, double hi, int64_t steps) {
    const FitImpl& im = fit_impl();
    double worst = 0.0;
    for (int64_t s = 0; s <= steps; ++s) {
        const float x = (float)(lo + (hi - lo) * (double)s / (double)std::max<int64_t>(1, steps));
        float sn, cs;
        im.sincos_one(x, &sn, &cs);
        worst = std::max(worst, std::fabs((double)sn - std::sin((double)x)));
        worst = std::max(worst, std::fabs((double)cs - std::cos((double)x)));
    }
    return worst;
}

// Per Gaussian, in chunks of this many (the flat parameters' passes run every fit step).
constexpr int64_t FLAT_CHUNK = 1024;

void flat_geometry(const float* x, int64_t N, int64_t K, float* means, float* conics,
                   int nt) {
    parallel_dynamic((N + FLAT_CHUNK - 1) / FLAT_CHUNK, nt, [&](int64_t ch) {
        const int64_t k1 = std::min(N, (ch + 1) * FLAT_CHUNK);
        for (int64_t k = ch * FLAT_CHUNK; k < k1; ++k) {
            const float* r = x + k * K;
            const double i1 = std::exp2(-2.0 * r[2]), i2 = std::exp2(-2.0 * r[3]);
            const double cs = std::cos((double)r[4]), sn = std::sin((double)r[4]);
            means[2 * k] = r[0];
            means[2 * k + 1] = r[1];
            conics[3 * k] = (float)(cs * cs * i1 + sn * sn * i2);
            conics[3 * k + 1] = (float)(cs * sn * (i1 - i2));
            conics[3 * k + 2] = (float)(sn * sn * i1 + cs * cs * i2);
        }
    });
}

void flat_chain(const float* x, int64_t N, int64_t K, const float* gm, const float* gq,
                float* g, int nt) {
    const double ln2x2 = 2.0 * std::log(2.0);
    parallel_dynamic((N + FLAT_CHUNK - 1) / FLAT_CHUNK, nt, [&](int64_t ch) {
        const int64_t k1 = std::min(N, (ch + 1) * FLAT_CHUNK);
        for (int64_t k = ch * FLAT_CHUNK; k < k1; ++k) {
            const float* r = x + k * K;
            float* o = g + k * K;
            const double i1 = std::exp2(-2.0 * r[2]), i2 = std::exp2(-2.0 * r[3]);
            const double c = std::cos((double)r[4]), s = std::sin((double)r[4]);
            const double cc = c * c, ss = s * s, cs = c * s;
            const double ga = gq[3 * k], gb = gq[3 * k + 1], gc = gq[3 * k + 2];
            o[0] = gm[2 * k];
            o[1] = gm[2 * k + 1];
            // d i_k / d l_k = -2 ln 2 i_k; d(a, b, c)/d theta = (i1 - i2)(-sin 2t, cos 2t,
            // sin 2t)
            o[2] = (float)(-ln2x2 * i1 * (cc * ga + cs * gb + ss * gc));
            o[3] = (float)(-ln2x2 * i2 * (ss * ga - cs * gb + cc * gc));
            o[4] = (float)((i1 - i2) * (2.0 * cs * (gc - ga) + (cc - ss) * gb));
        }
    });
}

void adam_step(float* x, float* m, float* v, const float* g, const float* lr, int64_t N,
               int64_t K, double b1, double b2, double bc1, double bc2, double eps,
               double factor) {
    const float fb1 = (float)b1, fa1 = (float)(1.0 - b1), fb2 = (float)b2,
                fa2 = (float)(1.0 - b2), ibc2 = (float)(1.0 / bc2), feps = (float)eps;
    std::vector<float> step((size_t)K);
    for (int64_t j = 0; j < K; ++j) step[j] = (float)(lr[j] * (factor / bc1));
    for (int64_t k = 0; k < N; ++k) {
        float *xr = x + k * K, *mr = m + k * K, *vr = v + k * K;
        const float* gr = g + k * K;
        for (int64_t j = 0; j < K; ++j) {
            mr[j] = fb1 * mr[j] + fa1 * gr[j];
            vr[j] = fb2 * vr[j] + fa2 * (gr[j] * gr[j]);
            xr[j] -= mr[j] / (std::sqrt(vr[j] * ibc2) + feps) * step[j];
        }
    }
}

namespace {

// A Gaussian's wave for the fit: as given where finite (one with amp != 0 that is not is
// already invalid: setup), else none.
FitWave fit_wave(const float* w) {
    FitWave f{0.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f};
    if (std::isfinite(w[0]) && std::isfinite(w[1]) && std::isfinite(w[2]) &&
        std::isfinite(w[3])) {
        f.kx = w[0]; f.ky = w[1]; f.phase = w[2]; f.amp = w[3];
        f.c8 = (float)std::cos(8.0 * (double)f.kx);
        f.s8 = (float)std::sin(8.0 * (double)f.kx);
    }
    return f;
}

}  // namespace

FitPlan::FitPlan(const float* pm, const float* pq, const float* pw, int64_t N, int64_t H,
                 int64_t W, int nt)
    : H_(H), W_(W), N_(N), waved_(pw != nullptr) {
    const FitImpl& im = fit_impl();
    std::vector<Gauss> gs = setup_all(pm, pq, pw, N_, H_, W_, nt);
    if (H_ == 0 || W_ == 0)
        for (auto& g : gs) g.valid = false;
    Bands bands = bin_bands(gs, H_);
    band_start_ = std::move(bands.start);
    const int64_t nb = (int64_t)band_start_.size() - 1, ne = (int64_t)bands.ids.size();
    // The set-up runs every fit step, so it runs band by band in parallel too: first each
    // band's entries with their rows counted from the band's first span, then (once the
    // bands' offsets are known) their spans. Every band's work is its own: the plan does not
    // depend on the thread count.
    entries_.resize((size_t)ne);
    if (waved_) waves_.resize((size_t)ne);
    std::vector<int64_t> band_rows((size_t)nb + 1, 0);
    parallel_dynamic(nb, nt, [&](int64_t b) {
        const int r0 = (int)(b * BAND), r1 = (int)std::min<int64_t>(H_, r0 + BAND) - 1;
        int64_t rows = 0;
        for (int64_t e = band_start_[b]; e < band_start_[b + 1]; ++e) {
            const int32_t k = bands.ids[e];
            const Gauss& g = gs[k];
            FitEntry& f = entries_[e];
            f.mx = g.mx; f.my = g.my; f.a = g.a; f.b = g.b; f.c = g.c;
            f.k = k;
            f.row0 = std::max(g.i0, r0);
            f.nrows = std::min(g.i1, r1) - f.row0 + 1;
            f.span = rows;
            rows += f.nrows;
            if (waved_) waves_[e] = fit_wave(pw + 4 * (int64_t)k);
        }
        band_rows[b + 1] = rows;
    });
    for (int64_t b = 0; b < nb; ++b) band_rows[b + 1] += band_rows[b];
    spans_.resize((size_t)band_rows[nb]);
    band_vectors_.assign((size_t)nb, 0);
    std::vector<int64_t> band_evals((size_t)nb, 0);
    parallel_dynamic(nb, nt, [&](int64_t b) {
        const int64_t e0 = band_start_[b], e1 = band_start_[b + 1];
        for (int64_t e = e0; e < e1; ++e) entries_[e].span += band_rows[b];
        im.spans(entries_.data(), e0, e1, W_, spans_.data());
        int64_t evals = 0, vectors = 0;
        for (int64_t r = band_rows[b]; r < band_rows[b + 1]; ++r) {
            evals += spans_[r].n;
            vectors += (spans_[r].n + 7) / 8;
        }
        band_evals[b] = evals;
        band_vectors_[b] = vectors;
    });
    for (int64_t v : band_evals) evaluations_ += v;
    // Each Gaussian's entries in band order (bands hold Gaussians in index order).
    slot_start_.assign((size_t)N_ + 1, 0);
    for (int64_t k = 0; k < N_; ++k)
        slot_start_[k + 1] =
            slot_start_[k] + (gs[k].valid ? gs[k].i1 / BAND - gs[k].i0 / BAND + 1 : 0);
    slot_entry_.resize((size_t)ne);
    std::vector<int64_t> fill(slot_start_.begin(), slot_start_.end() - 1);
    for (int64_t e = 0; e < ne; ++e) slot_entry_[fill[entries_[e].k]++] = e;
}

int64_t FitPlan::nbytes() const {
    return (int64_t)(entries_.size() * sizeof(FitEntry) + spans_.size() * sizeof(FitSpan) +
                     waves_.size() * sizeof(FitWave) +
                     (band_start_.size() + slot_start_.size() + slot_entry_.size()) *
                         sizeof(int64_t));
}

// For each band (in parallel): zero a planar buffer [C][rows][W + PAD], add the forward of
// colours c into it when `render`, hand it to epilogue(r0, r1, buf) (which leaves there the
// gradient of the band's pixels, spare columns zero, and returns true to go on), and add up
// the band's gradient partials into `part` (null: no gradients).
template <class Epilogue>
void FitPlan::bands_pass(const float* c, int64_t C, bool render, bool geom, int nt,
                         const Epilogue& epilogue, float* part) const {
    const FitImpl& im = fit_impl();
    const int64_t Wp = W_ + PAD;
    // Waves: the geometry's gradients need every wave's sine and cosine (WAVE_GRAD); the
    // weights alone skip them where amp is 0 (WAVE_W).
    const int mode = !waved_ ? NO_WAVE : geom && part ? WAVE_GRAD : WAVE_W;
    const FitWave* waves = waved_ ? waves_.data() : nullptr;
    parallel_dynamic((int64_t)band_start_.size() - 1, nt, [&](int64_t band) {
        const int r0 = (int)(band * BAND);
        const int r1 = (int)std::min<int64_t>(H_, r0 + BAND);
        const int64_t e0 = band_start_[band], e1 = band_start_[band + 1];
        float* buf = scratch(0, (size_t)(C * (r1 - r0) * Wp));
        std::memset(buf, 0, sizeof(float) * (size_t)(C * (r1 - r0) * Wp));
        // The forward keeps the band's weights for its backward: recomputing them took
        // 1.16x the fused step's time (docs/experiments.md, 2026-12-05, the fitting kernel).
        const bool keep = render && part;
        const int64_t kept = (mode == WAVE_GRAD ? 24 : 8) * band_vectors_[band];
        float* pk = keep ? scratch(1, (size_t)kept) : nullptr;
        if (render)
            im.forward_band((int)C, entries_.data(), e0, e1, spans_.data(), c, r0, r1, Wp, buf,
                            pk, waves, mode);
        if (!epilogue(r0, r1, buf) || !part) return;
        im.backward_band((int)C, geom, entries_.data(), e0, e1, spans_.data(), c, buf, r0, r1,
                         Wp, npart(), part, pk, waves, mode);
    });
}

// Gradients from the slots: each Gaussian's partials added in band order, in double.
void FitPlan::reduce(bool geom, int64_t C, const float* part, int nt, float* gm, float* gq,
                     float* gc, float* gw) const {
    const int np = npart();
    const bool wave = geom && waved_;
    parallel_dynamic((N_ + RED_CHUNK - 1) / RED_CHUNK, nt, [&](int64_t chunk) {
        const int64_t k1 = std::min(N_, (chunk + 1) * RED_CHUNK);
        for (int64_t k = chunk * RED_CHUNK; k < k1; ++k) {
            double s[NPART_MAX] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t slot = slot_start_[k]; slot < slot_start_[k + 1]; ++slot) {
                const float* p = part + np * slot_entry_[slot];
                if (geom)
                    for (int t = 0; t < 5; ++t) s[t] += p[t];
                for (int64_t ch = 0; ch < C; ++ch) s[5 + ch] += p[5 + ch];
                if (wave)
                    for (int t = 9; t < 13; ++t) s[t] += p[t];
            }
            if (geom) {
                // d(exp(-q/2))/d(a, b, c) = -w (dx^2 / 2, dx dy, dy^2 / 2), and
                // d/d(mean) = w (a dx + b dy, b dx + c dy). (No entries: all sums zero.)
                const bool any = slot_start_[k] < slot_start_[k + 1];
                const FitEntry* g = any ? &entries_[slot_entry_[slot_start_[k]]] : nullptr;
                const double a = any ? g->a : 0.0, b = any ? g->b : 0.0, c = any ? g->c : 0.0;
                gq[3 * k + 0] = (float)(-0.5 * s[0]);
                gq[3 * k + 1] = (float)(-s[1]);
                gq[3 * k + 2] = (float)(-0.5 * s[2]);
                double wx = 0.0, wy = 0.0;
                if (wave) {
                    // With A = amp and S = sum gs e sin(arg) (gs: the pixel's gradient times
                    // the colour), d/d arg = -A S: d/d(kx, ky, phase) = -A (S dx, S dy, S),
                    // d/d amp = sum gs e cos, and the mean moves the argument by -k.
                    const FitWave* w = any ? &waves_[slot_entry_[slot_start_[k]]] : nullptr;
                    const double amp = any ? w->amp : 0.0;
                    gw[4 * k + 0] = (float)(-amp * s[9]);
                    gw[4 * k + 1] = (float)(-amp * s[10]);
                    gw[4 * k + 2] = (float)(-amp * s[11]);
                    gw[4 * k + 3] = (float)s[12];
                    wx = any ? amp * w->kx * s[11] : 0.0;
                    wy = any ? amp * w->ky * s[11] : 0.0;
                }
                gm[2 * k + 0] = (float)(a * s[3] + b * s[4] + wx);
                gm[2 * k + 1] = (float)(b * s[3] + c * s[4] + wy);
            }
            for (int64_t ch = 0; ch < C; ++ch) gc[k * C + ch] = (float)s[5 + ch];
        }
    });
}

void FitPlan::forward(const float* c, int64_t C, int nt, float* out) const {
    if (H_ == 0 || W_ == 0) return;
    const int64_t Wp = W_ + PAD;
    bands_pass(c, C, N_ > 0, false, nt, [&](int r0, int r1, float* buf) {
        const int64_t bh = r1 - r0;
        for (int64_t i = 0; i < bh; ++i) {
            float* o = out + (r0 + i) * W_ * C;
            for (int64_t j = 0; j < W_; ++j)
                for (int64_t ch = 0; ch < C; ++ch) o[j * C + ch] = buf[(ch * bh + i) * Wp + j];
        }
        return false;
    }, nullptr);
}

double FitPlan::loss_backward(const float* c, int64_t C, const float* target,
                              const float* weight, double scale, bool geom, int nt, float* gm,
                              float* gq, float* gc, float* gw) const {
    const FitImpl& im = fit_impl();
    const int64_t nb = (int64_t)band_start_.size() - 1;
    std::vector<double> band_loss((size_t)std::max<int64_t>(nb, 1), 0.0);
    std::vector<float> part((size_t)(npart() * entries_.size()));
    const float g2 = (float)(2.0 * scale);
    if (H_ > 0 && W_ > 0)
        bands_pass(c, C, N_ > 0, geom, nt, [&](int r0, int r1, float* buf) {
            float* row = scratch(2, (size_t)(C * W_));
            band_loss[(size_t)(r0 / BAND)] =
                im.residual_band((int)C, buf, r0, r1, W_, W_ + PAD, target, weight, g2, row);
            return N_ > 0;
        }, part.data());
    reduce(geom, C, part.data(), nt, gm, gq, gc, gw);
    double loss = 0.0;
    for (double v : band_loss) loss += v;
    return loss * scale;
}

void FitPlan::backward(bool geom, const float* c, int64_t C, const float* grad_out, int nt,
                       float* gm, float* gq, float* gc, float* gw) const {
    std::vector<float> part((size_t)(npart() * entries_.size()));
    const int64_t Wp = W_ + PAD;
    if (H_ > 0 && W_ > 0 && N_ > 0)
        bands_pass(c, C, false, geom, nt, [&](int r0, int r1, float* buf) {
            const int64_t bh = r1 - r0;
            for (int64_t i = 0; i < bh; ++i) {
                const float* g = grad_out + (r0 + i) * W_ * C;
                for (int64_t j = 0; j < W_; ++j)
                    for (int64_t ch = 0; ch < C; ++ch) buf[(ch * bh + i) * Wp + j] = g[j * C + ch];
            }
            return true;
        }, part.data());
    reduce(geom, C, part.data(), nt, gm, gq, gc, gw);
}

}  // namespace gsi
