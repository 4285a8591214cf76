// Fitting hot loops (FitPlan, fit.cpp): the encoder's render, loss and gradients. They need
// not be bit-exact (only the written file and its decode must be), so they use FMA and a
// cheap exp; the cut-off q <= Q_CUT is still decided on q evaluated in the contract's order
// (no FMA), so a fitted Gaussian covers exactly the pixels the decoder gives it.
//
// fit.cpp includes this file twice: inside an AVX2+FMA target region with GSI_FIT_VEC =
// VecAvx2 (namespace fit_avx2) and for the baseline ISA with VecBase (fit_base). No include
// guard, on purpose. Requires (from the includer): FitEntry, FitSpan, Q_CUT, the vector type
// GSI_FIT_VEC (fit_simd.h).
//
// A band's work is its entries (one per Gaussian that has rows in the band, in index order)
// and their rows' spans, both stored band by band so that a band reads them in sequence.
// Every loop runs whole 8-pixel vectors from a span's first column: the plan's band buffers
// have PAD spare columns, whose values are ignored (forward) or zero (gradients).

namespace GSI_FIT_NS {

using V = GSI_FIT_VEC;

// 2^t for t <= 0 (t below -100 is taken as -100; NaN gives a finite value): a degree-5
// polynomial on [-1/2, 1/2] (relative error 2.3e-7 in float) times 2^round(t). Estrin's
// scheme: a shorter chain of dependent operations than Horner's.
static inline V exp2_neg(V t) {
    t = V::max(t, V::set1(-100.0f));
    const V n = V::round(t);
    const V f = t - n;
    const V f2 = f * f;
    const V p01 = V::fma(V::set1(0.6931469440460205f), f, V::set1(1.0000001192092896f));
    const V p23 = V::fma(V::set1(0.055507127195596695f), f, V::set1(0.24022120237350464f));
    const V p45 = V::fma(V::set1(0.0013276664540171623f), f, V::set1(0.009675542823970318f));
    const V p = V::fma(f2 * f2, p45, V::fma(f2, p23, p01));
    return V::scale2(p, n);
}

// exp(x) of the fitting kernels, one value (tests measure its error).
static float exp_one(float x) {
    float out[8];
    exp2_neg(V::set1(x * 1.44269504088896341f)).store(out);
    return out[0];
}

// What pixel_weights needs of one Gaussian ...
struct GaussConst {
    V a, ak, mx;  // a, a * K (K = -log2(e) / 2), mean x
};

static inline GaussConst gauss_const(const FitEntry& g) {
    GaussConst c;
    c.a = V::set1(g.a);
    c.ak = V::set1(g.a * -0.72134752044448170f);
    c.mx = V::set1(g.mx);
    return c;
}

// ... and of one of its rows (dy = row centre - mean y).
struct RowConst {
    V B, Cq;    // q = (a dx + B) dx + Cq in the contract's order
    V Bk, Cqk;  // B * K, Cq * K: the exponent, by FMA
};

static inline RowConst row_const(const FitEntry& g, float dy) {
    constexpr float K = -0.72134752044448170f;
    const float B = (2.0f * g.b) * dy, Cq = (g.c * dy) * dy;
    RowConst r;
    r.B = V::set1(B);
    r.Cq = V::set1(Cq);
    r.Bk = V::set1(B * K);
    r.Cqk = V::set1(Cq * K);
    return r;
}

// THE per-pixel weight of the fit, for 8 pixels of a row at dx = centre x - mean x:
// exp(-q/2) where q <= Q_CUT, else exactly 0. The cut is decided on q in the contract's
// order (the decoder's decision); the exponent is the same quadratic by FMA (off that
// chain of dependent operations). A richer primitive (a modulated or cut Gaussian) changes
// this function, GaussConst / RowConst and the gradients in backward_band_t.
static inline V pixel_weights(const GaussConst& g, const RowConst& r, V dx) {
    const V q = (g.a * dx + r.B) * dx + r.Cq;
    const V t = V::fma(V::fma(g.ak, dx, r.Bk), dx, r.Cqk);
    return V::and_mask(V::le_mask(q, V::set1(Q_CUT)), exp2_neg(t));
}

// Spans of the rows of entries [e0, e1) (at their `span` offsets), as the exact kernel's
// row_span (double, widened by one pixel, clamped): n = 0 for a row with no span.
static void spans_chunk(const FitEntry* ents, int64_t e0, int64_t e1, int64_t W,
                        FitSpan* spans) {
    const double wmax = (double)(W - 1);
    for (int64_t e = e0; e < e1; ++e) {
        const FitEntry& g = ents[e];
        FitSpan* s = spans + g.span;
        const double a = g.a, b = g.b, c = g.c, mx = g.mx, qa = a * (double)Q_CUT;
        const double det = a * c - b * b;  // exact in double, as the set-up's
#pragma omp simd
        for (int r = 0; r < g.nrows; ++r) {
            const double dy = (double)(((float)(g.row0 + r) + 0.5f) - g.my);
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

// Forward of one band: acc (planar [C][r1 - r0][Wp], zeroed by the caller) += the entries
// [e0, e1) of the band (rows from r0), in order.
template <int C>
static void forward_band_t(const FitEntry* ents, int64_t e0, int64_t e1, const FitSpan* spans,
                           const float* col, int r0, int r1, int64_t Wp, float* acc) {
    const int64_t plane = (int64_t)(r1 - r0) * Wp;
    const V eight = V::set1(8.0f);
    for (int64_t e = e0; e < e1; ++e) {
        const FitEntry& g = ents[e];
        const GaussConst gc = gauss_const(g);
        V cc[C];
        for (int ch = 0; ch < C; ++ch) cc[ch] = V::set1(col[(int64_t)g.k * C + ch]);
        const FitSpan* s = spans + g.span;
        for (int r = 0; r < g.nrows; ++r, ++s) {
            const int n = s->n;
            if (n <= 0) continue;
            const int i = g.row0 + r;
            const RowConst rc = row_const(g, ((float)i + 0.5f) - g.my);
            float* dst = acc + (int64_t)(i - r0) * Wp + s->j0;
            V x = V::iota((float)s->j0 + 0.5f);  // pixel centres
            for (int t = 0; t < n; t += 8, x = x + eight) {
                const V w = pixel_weights(gc, rc, x - gc.mx);
                for (int ch = 0; ch < C; ++ch) {
                    float* d = dst + ch * plane + t;
                    V::fma(w, cc[ch], V::load(d)).store(d);
                }
            }
        }
    }
}

// Gradient partials of one band. grad is planar [C][r1 - r0][Wp] (zero in the spare
// columns). For each entry e of [e0, e1), over its rows, with
// G = w * sum_ch grad_ch * col_ch:
//   part[0..4] = sum G dx^2, sum G dx dy, sum G dy^2, sum G dx, sum G dy   (GEOM only)
//   part[5 + ch] = sum w * grad_ch
// at part + npart * e. Float vector sums in a fixed order.
template <int C, bool GEOM>
static void backward_band_t(const FitEntry* ents, int64_t e0, int64_t e1,
                            const FitSpan* spans, const float* col, const float* grad, int r0,
                            int r1, int64_t Wp, int npart, float* part) {
    const int64_t plane = (int64_t)(r1 - r0) * Wp;
    const V eight = V::set1(8.0f);
    for (int64_t e = e0; e < e1; ++e) {
        const FitEntry& g = ents[e];
        const GaussConst gc = gauss_const(g);
        V cc[C], D[C];
        for (int ch = 0; ch < C; ++ch) {
            cc[ch] = V::set1(GEOM ? col[(int64_t)g.k * C + ch] : 0.0f);
            D[ch] = V::zero();
        }
        V Mxx = V::zero(), Mxy = V::zero(), Myy = V::zero(), Mx = V::zero(), My = V::zero();
        const FitSpan* s = spans + g.span;
        for (int r = 0; r < g.nrows; ++r, ++s) {
            const int n = s->n;
            if (n <= 0) continue;
            const int i = g.row0 + r;
            const float dy = ((float)i + 0.5f) - g.my;
            const RowConst rc = row_const(g, dy);
            const float* src = grad + (int64_t)(i - r0) * Wp + s->j0;
            V x = V::iota((float)s->j0 + 0.5f);
            V S0 = V::zero(), S1 = V::zero();
            for (int t = 0; t < n; t += 8, x = x + eight) {
                const V dx = x - gc.mx;
                const V w = pixel_weights(gc, rc, dx);
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
        float* p = part + npart * e;
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

static void forward_band(int C, const FitEntry* ents, int64_t e0, int64_t e1,
                         const FitSpan* spans, const float* col, int r0, int r1, int64_t Wp,
                         float* acc) {
#define GSI_FF(CC) forward_band_t<CC>(ents, e0, e1, spans, col, r0, r1, Wp, acc)
    switch (C) {
        case 1: GSI_FF(1); break;
        case 2: GSI_FF(2); break;
        case 3: GSI_FF(3); break;
        default: GSI_FF(4); break;
    }
#undef GSI_FF
}

static void backward_band(int C, bool geom, const FitEntry* ents, int64_t e0, int64_t e1,
                          const FitSpan* spans, const float* col, const float* grad, int r0,
                          int r1, int64_t Wp, int npart, float* part) {
#define GSI_FB(CC, G) \
    backward_band_t<CC, G>(ents, e0, e1, spans, col, grad, r0, r1, Wp, npart, part)
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
