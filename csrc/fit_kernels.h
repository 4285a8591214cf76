// Fitting hot loops (FitPlan, fit.cpp): the encoder's render, loss and gradients. They need
// not be bit-exact (only the written file and its decode must be), so they use FMA and a
// cheap exp; the cut-off q <= Q_CUT is still decided on q evaluated in the contract's order
// (no FMA), so a fitted Gaussian covers exactly the pixels the decoder gives it.
//
// fit.cpp includes this file twice: inside an AVX2+FMA target region with GSI_FIT_VEC =
// VecAvx2 (namespace fit_avx2) and for the baseline ISA with VecBase (fit_base). No include
// guard, on purpose. Requires (from the includer): Gauss, FitSpan, BAND, Q_CUT, the vector
// type GSI_FIT_VEC (fit_simd.h).
//
// Every loop runs whole 8-pixel vectors from a span's first column: the plan's band buffers
// have PAD spare columns, whose values are ignored (forward) or zero (gradients).

namespace GSI_FIT_NS {

using V = GSI_FIT_VEC;

// 2^t for t <= 0 (t below -100 is taken as -100; NaN gives a finite value): a degree-5
// polynomial on [-1/2, 1/2] (relative error 2.3e-7 in float) times 2^round(t).
static inline V exp2_neg(V t) {
    t = V::max(t, V::set1(-100.0f));
    const V n = V::round(t);
    const V f = t - n;
    V p = V::set1(0.0013276664540171623f);
    p = V::fma(p, f, V::set1(0.009675542823970318f));
    p = V::fma(p, f, V::set1(0.055507127195596695f));
    p = V::fma(p, f, V::set1(0.24022120237350464f));
    p = V::fma(p, f, V::set1(0.6931469440460205f));
    p = V::fma(p, f, V::set1(1.0000001192092896f));
    return V::scale2(p, n);
}

// exp(x) of the fitting kernels, one value (tests measure its error).
static float exp_one(float x) {
    float out[8];
    exp2_neg(V::set1(x * 1.44269504088896341f)).store(out);
    return out[0];
}

// What pixel_weights needs of one Gaussian on one row (dy = row centre - mean y).
struct RowConst {
    V a, B, Cq, mx;
};

static inline RowConst row_const(const Gauss& g, float dy) {
    RowConst r;
    r.a = V::set1(g.a);
    r.B = V::set1((2.0f * g.b) * dy);
    r.Cq = V::set1((g.c * dy) * dy);
    r.mx = V::set1(g.mx);
    return r;
}

// THE per-pixel weight of the fit, for 8 pixels of a row at dx = centre x - mean x:
// exp(-q/2) where q <= Q_CUT, else exactly 0. A richer primitive (a modulated or cut
// Gaussian) changes this function, its RowConst and the gradients in backward_band_t.
static inline V pixel_weights(const RowConst& r, V dx) {
    const V q = (r.a * dx + r.B) * dx + r.Cq;  // the contract's order, no FMA
    const V w = exp2_neg(q * V::set1(-0.72134752044448170f));  // -log2(e) / 2
    return V::and_mask(V::le_mask(q, V::set1(Q_CUT)), w);
}

// Spans of the Gaussians [k0, k1) on their candidate rows, as the exact kernel's row_span
// (double, widened by one pixel, clamped): n = 0 for a row with no span.
static void spans_chunk(const Gauss* gs, int64_t k0, int64_t k1, int64_t W,
                        const int64_t* rows_start, FitSpan* spans) {
    const double wmax = (double)(W - 1);
    for (int64_t k = k0; k < k1; ++k) {
        const Gauss& g = gs[k];
        FitSpan* s = spans + rows_start[k];
        const double a = g.a, b = g.b, det = g.det, mx = g.mx, qa = a * (double)Q_CUT;
        const int rows = g.i1 - g.i0 + 1;
#pragma omp simd
        for (int r = 0; r < rows; ++r) {
            const double dy = (double)(((float)(g.i0 + r) + 0.5f) - g.my);
            double disc = qa - det * dy * dy;
            disc = disc > 0.0 ? disc : 0.0;
            const double half = std::sqrt(disc) / a;
            const double xc = mx - b * dy / a;
            const double lo = std::floor(xc - half - 0.5) - 1.0;
            const double hi = std::ceil(xc + half - 0.5) + 1.0;
            const bool on = hi >= 0.0 && lo <= wmax;
            const int j0 = (int)(lo > 0.0 ? lo : 0.0);
            const int j1 = (int)(hi < wmax ? hi : wmax);
            s[r].j0 = on ? j0 : 0;
            s[r].n = on && j1 >= j0 ? j1 - j0 + 1 : 0;
        }
    }
}

// Forward of one band: acc (planar [C][r1 - r0][Wp], zeroed by the caller) += the Gaussians
// ids[e0..e1) over their rows in [r0, r1), in index order.
template <int C>
static void forward_band_t(const Gauss* gs, const int32_t* ids, int64_t e0, int64_t e1,
                           const int64_t* rows_start, const FitSpan* spans, const float* col,
                           int r0, int r1, int64_t Wp, float* acc) {
    const int64_t plane = (int64_t)(r1 - r0) * Wp;
    const V eight = V::set1(8.0f);
    for (int64_t e = e0; e < e1; ++e) {
        const int64_t k = ids[e];
        const Gauss& g = gs[k];
        const int i0 = g.i0 > r0 ? g.i0 : r0;
        const int i1 = g.i1 < r1 - 1 ? g.i1 : r1 - 1;
        V cc[C];
        for (int ch = 0; ch < C; ++ch) cc[ch] = V::set1(col[k * C + ch]);
        const FitSpan* s = spans + rows_start[k] + (i0 - g.i0);
        for (int i = i0; i <= i1; ++i, ++s) {
            const int n = s->n;
            if (n <= 0) continue;
            const RowConst rc = row_const(g, ((float)i + 0.5f) - g.my);
            float* dst = acc + (int64_t)(i - r0) * Wp + s->j0;
            V x = V::iota((float)s->j0 + 0.5f);  // pixel centres
            for (int t = 0; t < n; t += 8, x = x + eight) {
                const V w = pixel_weights(rc, x - rc.mx);
                for (int ch = 0; ch < C; ++ch) {
                    float* d = dst + ch * plane + t;
                    V::fma(w, cc[ch], V::load(d)).store(d);
                }
            }
        }
    }
}

// Gradient partials of one band. grad is planar [C][r1 - r0][Wp] (zero in the spare
// columns). For each Gaussian of ids[e0..e1), over its rows in the band, with
// G = w * sum_ch grad_ch * col_ch:
//   part[0..4] = sum G dx^2, sum G dx dy, sum G dy^2, sum G dx, sum G dy   (GEOM only)
//   part[5 + ch] = sum w * grad_ch
// at part + NPART * (slot_start[k] + band - g.i0 / BAND). Float vector sums, summed per
// Gaussian and row in a fixed order.
template <int C, bool GEOM>
static void backward_band_t(const Gauss* gs, const int32_t* ids, int64_t e0, int64_t e1,
                            const int64_t* rows_start, const FitSpan* spans, const float* col,
                            const float* grad, int r0, int r1, int64_t Wp,
                            const int64_t* slot_start, int64_t band, int npart, float* part) {
    const int64_t plane = (int64_t)(r1 - r0) * Wp;
    const V eight = V::set1(8.0f);
    for (int64_t e = e0; e < e1; ++e) {
        const int64_t k = ids[e];
        const Gauss& g = gs[k];
        const int i0 = g.i0 > r0 ? g.i0 : r0;
        const int i1 = g.i1 < r1 - 1 ? g.i1 : r1 - 1;
        V cc[C], D[C];
        for (int ch = 0; ch < C; ++ch) {
            cc[ch] = V::set1(GEOM ? col[k * C + ch] : 0.0f);
            D[ch] = V::zero();
        }
        V Mxx = V::zero(), Mxy = V::zero(), Myy = V::zero(), Mx = V::zero(), My = V::zero();
        const FitSpan* s = spans + rows_start[k] + (i0 - g.i0);
        for (int i = i0; i <= i1; ++i, ++s) {
            const int n = s->n;
            if (n <= 0) continue;
            const float dy = ((float)i + 0.5f) - g.my;
            const RowConst rc = row_const(g, dy);
            const float* src = grad + (int64_t)(i - r0) * Wp + s->j0;
            V x = V::iota((float)s->j0 + 0.5f);
            V S0 = V::zero(), S1 = V::zero();
            for (int t = 0; t < n; t += 8, x = x + eight) {
                const V dx = x - rc.mx;
                const V w = pixel_weights(rc, dx);
                V gsum = V::zero();
                for (int ch = 0; ch < C; ++ch) {
                    const V gv = V::load(src + ch * plane + t);
                    D[ch] = V::fma(gv, w, D[ch]);
                    if (GEOM) gsum = ch == 0 ? gv * cc[0] : V::fma(gv, cc[ch], gsum);
                }
                if (GEOM) {
                    const V G = w * gsum;
                    const V Gdx = G * dx;
                    S0 = S0 + G;
                    S1 = S1 + Gdx;
                    Mxx = V::fma(Gdx, dx, Mxx);
                }
            }
            if (GEOM) {
                const V vy = V::set1(dy);
                Mx = Mx + S1;
                Mxy = V::fma(vy, S1, Mxy);
                My = V::fma(vy, S0, My);
                Myy = V::fma(V::set1(dy * dy), S0, Myy);
            }
        }
        float* p = part + npart * (slot_start[k] + band - g.i0 / BAND);
        if (GEOM) {
            p[0] = Mxx.hsum();
            p[1] = Mxy.hsum();
            p[2] = Myy.hsum();
            p[3] = Mx.hsum();
            p[4] = My.hsum();
        }
        for (int ch = 0; ch < C; ++ch) p[5 + ch] = D[ch].hsum();
    }
}

// The residual of one band, in place: with r = weight * acc - target (target null: zero;
// weight null: ones), acc becomes g2 * weight * r (zero in the spare columns). Returns
// sum(r^2): float sums per row, added in double.
template <int C>
static double residual_band_t(float* acc, int r0, int r1, int64_t W, int64_t Wp,
                              const float* target, const float* weight, float g2) {
    const int64_t bh = r1 - r0, plane = bh * Wp;
    double sum = 0.0;
    for (int64_t i = 0; i < bh; ++i) {
        const int64_t row = r0 + i;
        const float* t = target ? target + row * W * C : nullptr;
        const float* wr = weight ? weight + row * W : nullptr;
        for (int ch = 0; ch < C; ++ch) {
            float* a = acc + ch * plane + i * Wp;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int64_t j = 0; j < W; ++j) {
                const float w = wr ? wr[j] : 1.0f;
                const float r = w * a[j] - (t ? t[j * C + ch] : 0.0f);
                s += r * r;
                a[j] = g2 * (w * r);
            }
            for (int64_t j = W; j < Wp; ++j) a[j] = 0.0f;
            sum += (double)s;
        }
    }
    return sum;
}

// ---- dispatch on the channel count ----------------------------------------------------------

static void forward_band(int C, const Gauss* gs, const int32_t* ids, int64_t e0, int64_t e1,
                         const int64_t* rows_start, const FitSpan* spans, const float* col,
                         int r0, int r1, int64_t Wp, float* acc) {
#define GSI_FF(CC) forward_band_t<CC>(gs, ids, e0, e1, rows_start, spans, col, r0, r1, Wp, acc)
    switch (C) {
        case 1: GSI_FF(1); break;
        case 2: GSI_FF(2); break;
        case 3: GSI_FF(3); break;
        default: GSI_FF(4); break;
    }
#undef GSI_FF
}

static void backward_band(int C, bool geom, const Gauss* gs, const int32_t* ids, int64_t e0,
                          int64_t e1, const int64_t* rows_start, const FitSpan* spans,
                          const float* col, const float* grad, int r0, int r1, int64_t Wp,
                          const int64_t* slot_start, int64_t band, int npart, float* part) {
#define GSI_FB(CC, G) backward_band_t<CC, G>(gs, ids, e0, e1, rows_start, spans, col, grad, r0, \
                                             r1, Wp, slot_start, band, npart, part)
    if (geom) {
        switch (C) {
            case 1: GSI_FB(1, true); break;
            case 2: GSI_FB(2, true); break;
            case 3: GSI_FB(3, true); break;
            default: GSI_FB(4, true); break;
        }
    } else {
        switch (C) {
            case 1: GSI_FB(1, false); break;
            case 2: GSI_FB(2, false); break;
            case 3: GSI_FB(3, false); break;
            default: GSI_FB(4, false); break;
        }
    }
#undef GSI_FB
}

static double residual_band(int C, float* acc, int r0, int r1, int64_t W, int64_t Wp,
                            const float* target, const float* weight, float g2) {
    switch (C) {
        case 1: return residual_band_t<1>(acc, r0, r1, W, Wp, target, weight, g2);
        case 2: return residual_band_t<2>(acc, r0, r1, W, Wp, target, weight, g2);
        case 3: return residual_band_t<3>(acc, r0, r1, W, Wp, target, weight, g2);
        default: return residual_band_t<4>(acc, r0, r1, W, Wp, target, weight, g2);
    }
}

}  // namespace GSI_FIT_NS
