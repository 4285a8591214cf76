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

constexpr float K = -0.72134752044448170f;  // -log2(e) / 2: exp(-q/2) = 2^(K q)

// What the weights need of one Gaussian ...
struct GaussConst {
    V a, ak, mx;  // a, a * K, mean x
};

static inline GaussConst gauss_const(const FitEntry& g) {
    GaussConst c;
    c.a = V::set1(g.a);
    c.ak = V::set1(g.a * K);
    c.mx = V::set1(g.mx);
    return c;
}

// ... and of one of its rows (dy = row centre - mean y).
struct RowConst {
    V B, Cq;    // q = (a dx + B) dx + Cq in the contract's order
    V Bk, Cqk;  // B * K, Cq * K: the exponent, by FMA
};

static inline RowConst row_const(const FitEntry& g, float dy) {
    const float B = (2.0f * g.b) * dy, Cq = (g.c * dy) * dy;
    RowConst r;
    r.B = V::set1(B);
    r.Cq = V::set1(Cq);
    r.Bk = V::set1(B * K);
    r.Cqk = V::set1(Cq * K);
    return r;
}

// The cut-off of 8 pixels of a row at dx = centre x - mean x: q <= Q_CUT with q in the
// contract's order (the decoder's decision, bit for bit).
static inline V cut_mask(const GaussConst& g, const RowConst& r, V dx) {
    return V::le_mask((g.a * dx + r.B) * dx + r.Cq, V::set1(Q_CUT));
}

// K q by FMA (off the cut's chain of dependent operations).
static inline V exponent(const GaussConst& g, const RowConst& r, V dx) {
    return V::fma(V::fma(g.ak, dx, r.Bk), dx, r.Cqk);
}

// THE per-pixel weight of the fit, for 8 pixels of a row: exp(-q/2) where q <= Q_CUT, else
// exactly 0. A richer primitive (a modulated or cut Gaussian) changes this function, the
// constants above and the gradients in backward_band_t, and sets RECURRENCE false.
static inline V pixel_weights(const GaussConst& g, const RowConst& r, V dx) {
    return V::and_mask(cut_mask(g, r, dx), exp2_neg(exponent(g, r, dx)));
}

// The same weights along a row by recurrence, for a Gaussian only (exp of a quadratic):
// w(dx + 8) = w(dx) * R(dx), with R(dx) = 2^(K (q(dx + 8) - q(dx))) and R(dx + 8) =
// R(dx) * 2^(128 K a). Two exps start it; each further 8 pixels cost two products. It is
// started afresh every SEED vectors, which bounds the growth of the rounding errors (weights
// within 6e-6 of the exact kernel's; the fused step 0.94x the time of an exp per pixel:
// docs/experiments.md, 2026-12-05, the fitting kernel).
constexpr bool RECURRENCE = true;
constexpr int SEED = 8;

struct RowWeights {
    V w, R;
    void start(const GaussConst& g, const RowConst& r, V dx) {
        w = exp2_neg(exponent(g, r, dx));
        R = exp2_neg(V::fma(V::set1(16.0f) * g.ak, dx, V::fma(V::set1(64.0f), g.ak,
                                                                 V::set1(8.0f) * r.Bk)));
    }
    // the weights at dx (masked), then one step on
    V next(const GaussConst& g, const RowConst& r, V dx, V K8) {
        const V out = V::and_mask(cut_mask(g, r, dx), w);
        w = w * R;
        R = R * K8;
        return out;
    }
};

// Spans of the rows of entries [e0, e1) (at their `span` offsets): the pixels whose centres
// lie within the ellipse q <= Q_CUT, widened by one pixel each side and clamped to the
// image (n = 0: no pixel). On a row at dy, the ellipse spans xc +- half with
// xc = mx - (b/a) dy and half = sqrt(det (ry - dy)(ry + dy)) / a, ry^2 = Q a / det: in
// float, the factored form loses no precision near the ellipse's top and bottom (where
// a q <= Q_CUT span would otherwise cancel), and the widening covers the rounding.
static void spans_chunk(const FitEntry* ents, int64_t e0, int64_t e1, int64_t W,
                        FitSpan* spans) {
    const float wmax = (float)(W - 1);
    for (int64_t e = e0; e < e1; ++e) {
        const FitEntry& g = ents[e];
        FitSpan* s = spans + g.span;
        const double a = g.a, b = g.b, c = g.c;
        const double det = a * c - b * b;  // exact in double, as the set-up's
        const float ry = (float)std::sqrt((double)Q_CUT * a / det);
        const float sa = (float)(std::sqrt(det) / a), ba = (float)(b / a), mx = g.mx;
        if (!(std::isfinite(ry) && sa > 0.0f && std::isfinite(ba))) {
            // out of float's range (a needle far thinner than a pixel): every pixel of the
            // rows, the cut-off decides
            for (int r = 0; r < g.nrows; ++r) s[r] = FitSpan{0, (int32_t)W};
            continue;
        }
#pragma omp simd
        for (int r = 0; r < g.nrows; ++r) {
            const float dy = ((float)(g.row0 + r) + 0.5f) - g.my;
            float u = (ry - dy) * (ry + dy);
            u = u > 0.0f ? u : 0.0f;
            const float half = sa * std::sqrt(u), xc = mx - ba * dy;
            const float lo = std::floor(xc - half - 0.5f) - 1.0f;
            const float hi = std::ceil(xc + half - 0.5f) + 1.0f;
            const bool on = hi >= 0.0f && lo <= wmax;
            const int j0 = (int)(lo > 0.0f ? lo : 0.0f);
            const int j1 = (int)(hi < wmax ? hi : wmax);
            s[r].j0 = on ? j0 : 0;
            s[r].n = on && j1 >= j0 ? j1 - j0 + 1 : 0;
        }
    }
}

// Forward of one band: acc (planar [C][r1 - r0][Wp], zeroed by the caller) += the entries
// [e0, e1) of the band (rows from r0), in order. With keep (KEEP), the weights are also
// written there, vector after vector, for the band's backward.
template <int C, bool KEEP>
static void forward_band_t(const FitEntry* ents, int64_t e0, int64_t e1, const FitSpan* spans,
                           const float* col, int r0, int r1, int64_t Wp, float* acc,
                           float* keep) {
    const int64_t plane = (int64_t)(r1 - r0) * Wp;
    const V eight = V::set1(8.0f);
    for (int64_t e = e0; e < e1; ++e) {
        const FitEntry& g = ents[e];
        const GaussConst gc = gauss_const(g);
        V cc[C];
        for (int ch = 0; ch < C; ++ch) cc[ch] = V::set1(col[(int64_t)g.k * C + ch]);
        const V K8 = exp2_neg(V::set1(128.0f) * gc.ak);
        const FitSpan* s = spans + g.span;
        for (int r = 0; r < g.nrows; ++r, ++s) {
            const int n = s->n;
            if (n <= 0) continue;
            const int i = g.row0 + r, nv = (n + 7) / 8;
            const RowConst rc = row_const(g, ((float)i + 0.5f) - g.my);
            float* dst = acc + (int64_t)(i - r0) * Wp + s->j0;
            V dx = V::iota((float)s->j0 + 0.5f) - gc.mx;  // exact, as the cut needs
            RowWeights rw;
            for (int v = 0; v < nv; ++v, dx = dx + eight) {
                V w;
                if (!RECURRENCE || nv == 1) {
                    w = pixel_weights(gc, rc, dx);
                } else {
                    if (v % SEED == 0) rw.start(gc, rc, dx);
                    w = rw.next(gc, rc, dx, K8);
                }
                if (KEEP) {
                    w.store(keep);
                    keep += 8;
                }
                for (int ch = 0; ch < C; ++ch) {
                    float* d = dst + ch * plane + 8 * v;
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
// at part + npart * e. Float vector sums in a fixed order. With KEEP, the weights are read
// from kept (as the band's forward left them) instead of computed.
template <int C, bool GEOM, bool KEEP>
static void backward_band_t(const FitEntry* ents, int64_t e0, int64_t e1,
                            const FitSpan* spans, const float* col, const float* grad, int r0,
                            int r1, int64_t Wp, int npart, float* part, const float* kept) {
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
        const V K8 = KEEP ? V::zero() : exp2_neg(V::set1(128.0f) * gc.ak);
        const FitSpan* s = spans + g.span;
        for (int r = 0; r < g.nrows; ++r, ++s) {
            const int n = s->n;
            if (n <= 0) continue;
            const int i = g.row0 + r, nv = (n + 7) / 8;
            const float dy = ((float)i + 0.5f) - g.my;
            const RowConst rc = row_const(g, dy);
            const float* src = grad + (int64_t)(i - r0) * Wp + s->j0;
            V dx = V::iota((float)s->j0 + 0.5f) - gc.mx;
            V S0 = V::zero(), S1 = V::zero();
            RowWeights rw;
            for (int t = 0, v = 0; v < nv; t += 8, ++v, dx = dx + eight) {
                V w;
                if (KEEP) {
                    w = V::load(kept);
                    kept += 8;
                } else if (!RECURRENCE || nv == 1) {
                    w = pixel_weights(gc, rc, dx);
                } else {
                    if (v % SEED == 0) rw.start(gc, rc, dx);
                    w = rw.next(gc, rc, dx, K8);
                }
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
// sum(r^2): float vector sums per row, added in double. tp: room for C * W floats (a
// target row, channel by channel).
template <int C>
static double residual_band_t(float* acc, int r0, int r1, int64_t W, int64_t Wp,
                              const float* target, const float* weight, float g2, float* tp) {
    const int64_t bh = r1 - r0, plane = bh * Wp, W8 = W / 8 * 8;
    const V g2v = V::set1(g2);
    double sum = 0.0;
    for (int64_t i = 0; i < bh; ++i) {
        const int64_t row = r0 + i;
        const float* wr = weight ? weight + row * W : nullptr;
        if (target) {
            const float* t = target + row * W * C;
            for (int64_t j = 0; j < W; ++j)
                for (int ch = 0; ch < C; ++ch) tp[ch * W + j] = t[j * C + ch];
        }
        for (int ch = 0; ch < C; ++ch) {
            float* a = acc + ch * plane + i * Wp;
            const float* t = tp + ch * W;
            V sv = V::zero();
            for (int64_t j = 0; j < W8; j += 8) {
                const V w = wr ? V::load(wr + j) : V::set1(1.0f);
                V r = w * V::load(a + j);
                if (target) r = r - V::load(t + j);
                sv = V::fma(r, r, sv);
                (g2v * (w * r)).store(a + j);
            }
            float st = 0.0f;
            for (int64_t j = W8; j < W; ++j) {
                const float w = wr ? wr[j] : 1.0f;
                const float r = w * a[j] - (target ? t[j] : 0.0f);
                st += r * r;
                a[j] = g2 * (w * r);
            }
            for (int64_t j = W; j < Wp; ++j) a[j] = 0.0f;
            sum += (double)sv.hsum() + (double)st;
        }
    }
    return sum;
}

// ---- dispatch on the channel count ----------------------------------------------------------

static void forward_band(int C, const FitEntry* ents, int64_t e0, int64_t e1,
                         const FitSpan* spans, const float* col, int r0, int r1, int64_t Wp,
                         float* acc, float* keep) {
#define GSI_FF(CC)                                                                        \
    (keep ? forward_band_t<CC, true>(ents, e0, e1, spans, col, r0, r1, Wp, acc, keep)     \
          : forward_band_t<CC, false>(ents, e0, e1, spans, col, r0, r1, Wp, acc, keep))
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
                          int r1, int64_t Wp, int npart, float* part, const float* kept) {
#define GSI_FB(CC, G)                                                                      \
    (kept ? backward_band_t<CC, G, true>(ents, e0, e1, spans, col, grad, r0, r1, Wp, npart, \
                                         part, kept)                                       \
          : backward_band_t<CC, G, false>(ents, e0, e1, spans, col, grad, r0, r1, Wp, npart, \
                                          part, kept))
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
                            const float* target, const float* weight, float g2, float* tp) {
    switch (C) {
        case 1: return residual_band_t<1>(acc, r0, r1, W, Wp, target, weight, g2, tp);
        case 2: return residual_band_t<2>(acc, r0, r1, W, Wp, target, weight, g2, tp);
        case 3: return residual_band_t<3>(acc, r0, r1, W, Wp, target, weight, g2, tp);
        default: return residual_band_t<4>(acc, r0, r1, W, Wp, target, weight, g2, tp);
    }
}

}  // namespace GSI_FIT_NS
