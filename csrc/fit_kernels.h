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

// The envelope of 8 pixels of a row: exp(-q/2) where q <= Q_CUT, else exactly 0.
static inline V envelope(const GaussConst& g, const RowConst& r, V dx) {
    return V::and_mask(cut_mask(g, r, dx), exp2_neg(exponent(g, r, dx)));
}

// ---- waves (format v5): w = e (1 + amp cos(kx dx + ky dy + phase)) ---------------------------

// sin and cos of 8 values (|x| up to some 10^4; the fit's arguments stay far below): x
// reduced by pi/2 in three parts (j * P1 exact), minimax polynomials on [-pi/4, pi/4]
// (Cephes' sinf and cosf), the quadrant's swap and signs from the low bits of j, which
// the rounding constant leaves in the low bits of tm. Within about 1e-7 of sin and cos
// (fit_sincos_max_error; tests measure it).
static inline void sincos(V x, V& sn, V& cs) {
    const V magic = V::set1(12582912.0f);  // 1.5 * 2^23
    const V tm = V::fma(x, V::set1(0.636619772367581343f), magic);
    const V j = tm - magic;
    V r = V::fnma(j, V::set1(1.5703125f), x);
    r = V::fnma(j, V::set1(4.837512969970703125e-4f), r);
    r = V::fnma(j, V::set1(7.54978995489188216e-8f), r);
    const V r2 = r * r;
    const V sp = V::fma(r * r2, V::fma(V::fma(V::set1(-1.9515295891e-4f), r2,
                                               V::set1(8.3321608736e-3f)),
                                       r2, V::set1(-1.6666654611e-1f)),
                        r);
    const V cp = V::fma(r2, V::fma(V::fma(V::fma(V::set1(2.443315711809948e-5f), r2,
                                                 V::set1(-1.388731625493765e-3f)),
                                          r2, V::set1(4.166664568298827e-2f)),
                                   r2, V::set1(-0.5f)),
                        V::set1(1.0f));
    const V odd = V::shl(tm, 31);  // sign bit: j odd (sine and cosine swap)
    const V two = V::shl(tm, 30);  // sign bit: bit 1 of j
    const V sign = V::set1(-0.0f);
    sn = V::bits_xor(V::select_sign(odd, sp, cp), V::bits_and(two, sign));
    cs = V::bits_xor(V::select_sign(odd, cp, sp), V::bits_and(V::bits_xor(two, odd), sign));
}

// sin and cos of one value by the kernels' sincos (tests measure their error).
static void sincos_one(float x, float* s, float* c) {
    V sv, cv;
    sincos(V::set1(x), sv, cv);
    *s = sv.lane(0);
    *c = cv.lane(0);
}

// What the weights need of one Gaussian's wave ...
struct WaveConst {
    V kx, amp;
    V c8, s8;  // cos and sin of 8 kx: the rotation of (cos, sin) from one vector to the next
};

template <bool WAVE>
static inline WaveConst wave_const(const FitWave* w) {
    WaveConst c;
    c.kx = V::set1(WAVE ? w->kx : 0.0f);
    c.amp = V::set1(WAVE ? w->amp : 0.0f);
    c.c8 = V::set1(WAVE ? w->c8 : 0.0f);
    c.s8 = V::set1(WAVE ? w->s8 : 0.0f);
    return c;
}

// ... and of one of its rows: the argument is kx dx + base, base = ky dy + phase.
template <bool WAVE>
static inline V wave_base(const FitWave* w, float dy) {
    return V::set1(WAVE ? w->ky * dy + w->phase : 0.0f);
}

template <bool WAVE>
struct Weights {
    V w;       // the weight
    V ec, es;  // e cos(arg), e sin(arg), for the wave's gradients
};
template <>
struct Weights<false> {  // (only w: the spare vectors cost stores in the hot loop)
    V w;
};

// THE per-pixel weight of the fit, for 8 pixels of a row, from the envelope e (exp(-q/2)
// where q <= Q_CUT, else exactly 0: `envelope`, or by recurrence) and, with a wave, the
// cosine and sine of its argument: w = e (1 + amp cos) = e + amp (e cos). Without a wave
// w = e. A richer primitive changes this function, its inputs and the gradients in
// backward_entry (and the reduction's closed forms in fit.cpp).
template <bool WAVE>
static inline Weights<WAVE> pixel_weights(V e, V cs, V sn, const WaveConst& wc) {
    Weights<WAVE> r;
    if constexpr (WAVE) {
        r.ec = e * cs;
        r.es = e * sn;
        r.w = V::fma(wc.amp, r.ec, e);
    } else {
        r.w = e;
    }
    return r;
}

// The weights of 8 pixels computed directly: an exp (and a sincos) each.
template <bool WAVE>
static inline Weights<WAVE> direct_weights(const GaussConst& g, const RowConst& r,
                                     const WaveConst& wc, V base, V dx) {
    V sn = V::zero(), cs = V::zero();
    if (WAVE) sincos(V::fma(wc.kx, dx, base), sn, cs);
    return pixel_weights<WAVE>(envelope(g, r, dx), cs, sn, wc);
}

// The same weights along a row by recurrence: the envelope, exp of a quadratic, by
// e(dx + 8) = e(dx) * R(dx), with R(dx) = 2^(K (q(dx + 8) - q(dx))) and R(dx + 8) =
// R(dx) * 2^(128 K a); a wave's (cos, sin) by a rotation through 8 kx. Two exps (and a
// sincos) start it; each further 8 pixels cost two products (and six for the rotation).
// It is started afresh every SEED vectors, which bounds the growth of the rounding errors
// (weights within 6e-6 of the exact kernel's; the fused step 0.94x the time of an exp per
// pixel: docs/experiments.md, 2026-12-05, the fitting kernel; waves: WAVE_RECURRENCE).
constexpr bool RECURRENCE = true;
constexpr int SEED = 8;
// Waves by rotation along a row rather than a sincos per pixel (docs/experiments.md,
// the fitting kernel's waves).
constexpr bool WAVE_RECURRENCE = true;

template <bool WAVE>
struct RowWeights {
    V e, R, cs, sn;
    void start(const GaussConst& g, const RowConst& r, const WaveConst& wc, V base, V dx) {
        e = exp2_neg(exponent(g, r, dx));
        R = exp2_neg(V::fma(V::set1(16.0f) * g.ak, dx, V::fma(V::set1(64.0f), g.ak,
                                                                 V::set1(8.0f) * r.Bk)));
        if (WAVE) sincos(V::fma(wc.kx, dx, base), sn, cs);
    }
    // the weights at dx (masked), then one step on
    Weights<WAVE> next(const GaussConst& g, const RowConst& r, const WaveConst& wc, V base,
                       V dx, V K8) {
        const V env = V::and_mask(cut_mask(g, r, dx), e);
        if (WAVE && !WAVE_RECURRENCE) sincos(V::fma(wc.kx, dx, base), sn, cs);
        const Weights<WAVE> out = pixel_weights<WAVE>(env, cs, sn, wc);
        e = e * R;
        R = R * K8;
        if (WAVE && WAVE_RECURRENCE) {
            const V c2 = V::fnma(sn, wc.s8, cs * wc.c8);
            sn = V::fma(cs, wc.s8, sn * wc.c8);
            cs = c2;
        }
        return out;
    }
};

// The weights of vector v (of nv) of a row, directly or by the recurrence.
template <bool WAVE>
static inline Weights<WAVE> row_weights(RowWeights<WAVE>& rw, int v, int nv,
                                        const GaussConst& g, const RowConst& r,
                                        const WaveConst& wc, V base, V dx, V K8) {
    if (!RECURRENCE || nv == 1) return direct_weights<WAVE>(g, r, wc, base, dx);
    if (v % SEED == 0) rw.start(g, r, wc, base, dx);
    return rw.next(g, r, wc, base, dx, K8);
}

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

// Forward of one entry: acc (planar [C][rows][Wp] from row r0) += its weights times its
// colours. With KEEP, the weights are also written to keep, vector after vector (with GRAD
// the three vectors w, e cos, e sin of each), for the band's backward; returns keep moved
// on.
template <int C, bool KEEP, bool WAVE, bool GRAD>
static inline float* forward_entry(const FitEntry& g, const FitWave* wave, const FitSpan* s,
                                   const float* col, int r0, int64_t Wp, int64_t plane,
                                   float* acc, float* keep) {
    const V eight = V::set1(8.0f);
    const GaussConst gc = gauss_const(g);
    const WaveConst wc = wave_const<WAVE>(wave);
    V cc[C];
    for (int ch = 0; ch < C; ++ch) cc[ch] = V::set1(col[(int64_t)g.k * C + ch]);
    const V K8 = exp2_neg(V::set1(128.0f) * gc.ak);
    for (int r = 0; r < g.nrows; ++r, ++s) {
        const int n = s->n;
        if (n <= 0) continue;
        const int i = g.row0 + r, nv = (n + 7) / 8;
        const float dy = ((float)i + 0.5f) - g.my;
        const RowConst rc = row_const(g, dy);
        const V base = wave_base<WAVE>(wave, dy);
        float* dst = acc + (int64_t)(i - r0) * Wp + s->j0;
        V dx = V::iota((float)s->j0 + 0.5f) - gc.mx;  // exact, as the cut needs
        RowWeights<WAVE> rw;
        for (int v = 0; v < nv; ++v, dx = dx + eight) {
            const Weights<WAVE> w = row_weights<WAVE>(rw, v, nv, gc, rc, wc, base, dx, K8);
            if (KEEP) {
                w.w.store(keep);
                if constexpr (GRAD) {
                    w.ec.store(keep + 8);
                    w.es.store(keep + 16);
                }
                keep += GRAD ? 24 : 8;
            }
            for (int ch = 0; ch < C; ++ch) {
                float* d = dst + ch * plane + 8 * v;
                V::fma(w.w, cc[ch], V::load(d)).store(d);
            }
        }
    }
    return keep;
}

// Forward of one band: acc (planar [C][r1 - r0][Wp], zeroed by the caller) += the entries
// [e0, e1) of the band (rows from r0), in order; waves: the entries' waves (null without).
template <int C, bool KEEP, int WM>
static void forward_band_t(const FitEntry* ents, int64_t e0, int64_t e1, const FitSpan* spans,
                           const float* col, int r0, int r1, int64_t Wp, float* acc,
                           float* keep, const FitWave* waves) {
    const int64_t plane = (int64_t)(r1 - r0) * Wp;
    for (int64_t e = e0; e < e1; ++e) {
        const FitEntry& g = ents[e];
        const FitSpan* s = spans + g.span;
        if (WM == WAVE_GRAD)
            keep = forward_entry<C, KEEP, true, true>(g, waves + e, s, col, r0, Wp, plane, acc,
                                                      keep);
        else if (WM == WAVE_W && waves[e].amp != 0.0f)
            keep = forward_entry<C, KEEP, true, false>(g, waves + e, s, col, r0, Wp, plane,
                                                       acc, keep);
        else
            keep = forward_entry<C, KEEP, false, false>(g, nullptr, s, col, r0, Wp, plane, acc,
                                                        keep);
    }
}

// Gradient partials of one entry. grad is planar [C][rows][Wp] from row r0 (zero in the
// spare columns). Over the entry's rows, with gs = sum_ch grad_ch * col_ch and G = w * gs:
//   p[0..4] = sum G dx^2, sum G dx dy, sum G dy^2, sum G dx, sum G dy   (GEOM only)
//   p[5 + ch] = sum w * grad_ch
//   p[9..12] = sum gs e sin dx, sum gs e sin dy, sum gs e sin, sum gs e cos  (GEOM, WAVE)
// Float vector sums in a fixed order. With KEEP, the weights are read from kept (as the
// band's forward left them: with GEOM and WAVE three vectors each) instead of computed;
// returns kept moved on.
template <int C, bool GEOM, bool KEEP, bool WAVE>
static inline const float* backward_entry(const FitEntry& g, const FitWave* wave,
                                          const FitSpan* s, const float* col,
                                          const float* grad, int r0, int64_t Wp,
                                          int64_t plane, float* p, const float* kept) {
    constexpr bool GRAD = GEOM && WAVE;
    const V eight = V::set1(8.0f);
    const GaussConst gc = gauss_const(g);
    const WaveConst wc = wave_const<WAVE>(wave);
    V cc[C], D[C];
    for (int ch = 0; ch < C; ++ch) {
        cc[ch] = V::set1(GEOM ? col[(int64_t)g.k * C + ch] : 0.0f);
        D[ch] = V::zero();
    }
    V Mxx = V::zero(), Mxy = V::zero(), Myy = V::zero(), Mx = V::zero(), My = V::zero();
    V Px = V::zero(), Py = V::zero(), Ps = V::zero(), Pc = V::zero();  // the wave's
    const V K8 = KEEP ? V::zero() : exp2_neg(V::set1(128.0f) * gc.ak);
    for (int r = 0; r < g.nrows; ++r, ++s) {
        const int n = s->n;
        if (n <= 0) continue;
        const int i = g.row0 + r, nv = (n + 7) / 8;
        const float dy = ((float)i + 0.5f) - g.my;
        const RowConst rc = row_const(g, dy);
        const V base = wave_base<WAVE>(wave, dy);
        const float* src = grad + (int64_t)(i - r0) * Wp + s->j0;
        V dx = V::iota((float)s->j0 + 0.5f) - gc.mx;
        V S0 = V::zero(), S1 = V::zero(), A0 = V::zero();
        RowWeights<WAVE> rw;
        for (int t = 0, v = 0; v < nv; t += 8, ++v, dx = dx + eight) {
            Weights<WAVE> w;
            if (KEEP) {
                w.w = V::load(kept);
                if constexpr (GRAD) {
                    w.ec = V::load(kept + 8);
                    w.es = V::load(kept + 16);
                }
                kept += GRAD ? 24 : 8;
            } else {
                w = row_weights<WAVE>(rw, v, nv, gc, rc, wc, base, dx, K8);
            }
            V gsum = V::zero();
            for (int ch = 0; ch < C; ++ch) {
                const V gv = V::load(src + ch * plane + t);
                D[ch] = V::fma(gv, w.w, D[ch]);
                if (GEOM) gsum = ch == 0 ? gv * cc[0] : V::fma(gv, cc[ch], gsum);
            }
            if (GEOM) {
                const V G = w.w * gsum;
                const V Gdx = G * dx;
                S0 = S0 + G;
                S1 = S1 + Gdx;
                Mxx = V::fma(Gdx, dx, Mxx);
            }
            if constexpr (GRAD) {
                const V Gs = w.es * gsum;
                A0 = A0 + Gs;
                Px = V::fma(Gs, dx, Px);
                Pc = V::fma(w.ec, gsum, Pc);
            }
        }
        if (GEOM) {
            const V vy = V::set1(dy);
            Mx = Mx + S1;
            Mxy = V::fma(vy, S1, Mxy);
            My = V::fma(vy, S0, My);
            Myy = V::fma(V::set1(dy * dy), S0, Myy);
            if (GRAD) {
                Ps = Ps + A0;
                Py = V::fma(vy, A0, Py);
            }
        }
    }
    if (GEOM) {
        p[0] = Mxx.hsum();
        p[1] = Mxy.hsum();
        p[2] = Myy.hsum();
        p[3] = Mx.hsum();
        p[4] = My.hsum();
    }
    for (int ch = 0; ch < C; ++ch) p[5 + ch] = D[ch].hsum();
    if (GRAD) {
        p[9] = Px.hsum();
        p[10] = Py.hsum();
        p[11] = Ps.hsum();
        p[12] = Pc.hsum();
    }
    return kept;
}

// Gradient partials of one band: backward_entry for each entry e of [e0, e1), at
// part + npart * e.
template <int C, bool GEOM, bool KEEP, int WM>
static void backward_band_t(const FitEntry* ents, int64_t e0, int64_t e1,
                            const FitSpan* spans, const float* col, const float* grad, int r0,
                            int r1, int64_t Wp, int npart, float* part, const float* kept,
                            const FitWave* waves) {
    const int64_t plane = (int64_t)(r1 - r0) * Wp;
    for (int64_t e = e0; e < e1; ++e) {
        const FitEntry& g = ents[e];
        const FitSpan* s = spans + g.span;
        float* p = part + npart * e;
        if (WM == WAVE_GRAD || (WM == WAVE_W && waves[e].amp != 0.0f))
            kept = backward_entry<C, GEOM, KEEP, true>(g, waves + e, s, col, grad, r0, Wp,
                                                       plane, p, kept);
        else
            kept = backward_entry<C, GEOM, KEEP, false>(g, nullptr, s, col, grad, r0, Wp,
                                                        plane, p, kept);
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
                         float* acc, float* keep, const FitWave* waves, int mode) {
#define GSI_FF2(CC, KP, WM) \
    forward_band_t<CC, KP, WM>(ents, e0, e1, spans, col, r0, r1, Wp, acc, keep, waves)
#define GSI_FF1(CC, WM) (keep ? GSI_FF2(CC, true, WM) : GSI_FF2(CC, false, WM))
#define GSI_FF(CC)                                          \
    (mode == WAVE_GRAD ? GSI_FF1(CC, WAVE_GRAD)             \
                       : mode == WAVE_W ? GSI_FF1(CC, WAVE_W) : GSI_FF1(CC, NO_WAVE))
    switch (C) {
        case 1: GSI_FF(1); break;
        case 2: GSI_FF(2); break;
        case 3: GSI_FF(3); break;
        default: GSI_FF(4); break;
    }
#undef GSI_FF
#undef GSI_FF1
#undef GSI_FF2
}

// geom with waves: mode WAVE_GRAD; without geom: NO_WAVE or WAVE_W.
static void backward_band(int C, bool geom, const FitEntry* ents, int64_t e0, int64_t e1,
                          const FitSpan* spans, const float* col, const float* grad, int r0,
                          int r1, int64_t Wp, int npart, float* part, const float* kept,
                          const FitWave* waves, int mode) {
#define GSI_FB2(CC, G, KP, WM)                                                              \
    backward_band_t<CC, G, KP, WM>(ents, e0, e1, spans, col, grad, r0, r1, Wp, npart, part, \
                                   kept, waves)
#define GSI_FB1(CC, G, WM) (kept ? GSI_FB2(CC, G, true, WM) : GSI_FB2(CC, G, false, WM))
#define GSI_FB(CC)                                                                    \
    (geom ? (mode == WAVE_GRAD ? GSI_FB1(CC, true, WAVE_GRAD) : GSI_FB1(CC, true, NO_WAVE)) \
          : (mode == WAVE_W ? GSI_FB1(CC, false, WAVE_W) : GSI_FB1(CC, false, NO_WAVE)))
    switch (C) {
        case 1: GSI_FB(1); break;
        case 2: GSI_FB(2); break;
        case 3: GSI_FB(3); break;
        default: GSI_FB(4); break;
    }
#undef GSI_FB
#undef GSI_FB1
#undef GSI_FB2
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
