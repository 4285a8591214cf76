// Exact hot loops of the CPU rasterizer (the decoder's arithmetic). raster.cpp includes this
// file twice: once inside an AVX2 target region (namespace gsi_avx2) and once for the
// baseline ISA (namespace gsi_base); the choice is made at run time. No include guard, on
// purpose. The fitting kernels, which may round differently, are in fit_kernels.h.
//
// Requires (defined by the includer): GSI_NS (namespace name), structs Gauss and RowSpan,
// Q_CUT, PAD and padded().
// Every operation here is an IEEE float/double operation with no contraction (the build
// uses -ffp-contract=off and the AVX2 region does not enable FMA), so per-pixel weights
// and forward sums are bit-identical between the two instantiations.

namespace GSI_NS {

// exp(x) with relative error < 1e-7 over the range used here (x in [-87, 87]).
// Branch-free so the compiler can vectorize loops that call it.
static inline float fast_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 87.0f ? 87.0f : x;
    const float t = x * 1.44269504088896341f;
    const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest integer
    float r = x - n * 0.693145751953125f;             // ln2, high part (exact product)
    r = r - n * 1.42860682030941723212e-6f;           // ln2, low part
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float s;
    std::memcpy(&s, &bits, sizeof(s));
    return p * s;
}

static float fast_exp_out(float x) { return fast_exp(x); }

// cos_gsi of spec section 10 (the wave's cosine), float32 operation by operation: clamp to
// +-2^22, reduce by pi in two parts (n * PI_HI exact), the even Taylor polynomial of degree
// 12 on [-pi/2, pi/2], negated for odd n. Branch-free (vectorizes); NaN stays NaN.
static inline float cos_gsi(float x) {
    x = x < -4194304.0f ? -4194304.0f : x;
    x = x > 4194304.0f ? 4194304.0f : x;
    const float t = x * 0x1.45f306p-2f;             // INV_PI = f32(1/pi), 0x3EA2F983
    const float tm = t + 12582912.0f;                // 1.5 * 2^23 + n: n in the low bits
    const float n = tm - 12582912.0f;
    float r = x - n * 3.140625f;                     // PI_HI
    r = r - n * 0x1.fb5444p-11f;                     // PI_LO = f32(pi - PI_HI), 0x3A7DAA22
    const float r2 = r * r;
    float p = 0x1.1eed8ep-29f;                       // C6 = f32(1/12!), 0x310F76C7
    p = p * r2 + -0x1.27e4fcp-22f;                   // C5 0xB493F27E
    p = p * r2 + 0x1.a01a02p-16f;                    // C4 0x37D00D01
    p = p * r2 + -0x1.6c16c2p-10f;                   // C3 0xBAB60B61
    p = p * r2 + 0x1.555556p-5f;                     // C2 0x3D2AAAAB
    p = p * r2 + -0.5f;                              // C1
    p = p * r2 + 1.0f;                               // C0
    uint32_t nb, pb;
    std::memcpy(&nb, &tm, sizeof(nb));
    std::memcpy(&pb, &p, sizeof(pb));
    pb ^= nb << 31;                                  // -p for odd n (the sign bit alone)
    std::memcpy(&p, &pb, sizeof(p));
    return p;
}

static float cos_gsi_out(float x) { return cos_gsi(x); }

// Widened, clamped column span [j0, j1] of the ellipse on the row at offset dy.
static inline bool row_span(const Gauss& g, float dy, int64_t W, int& j0, int& j1) {
    const double a = g.a;
    double disc = a * (double)Q_CUT - g.det * (double)dy * (double)dy;  // (a*Q - det*dy^2)
    if (!(disc > 0.0)) disc = 0.0;
    const double half = std::sqrt(disc) / a;
    const double xc = (double)g.mx - (double)g.b * (double)dy / a;
    double lo = std::floor(xc - half - 0.5) - 1.0;
    double hi = std::ceil(xc + half - 0.5) + 1.0;
    if (!(hi >= 0.0) || !(lo <= (double)(W - 1))) return false;
    lo = lo > 0.0 ? lo : 0.0;
    hi = hi < (double)(W - 1) ? hi : (double)(W - 1);
    j0 = (int)lo;
    j1 = (int)hi;
    return j0 <= j1;
}

// Weights w[j - j0] = exp(-q/2) if q <= Q_CUT else 0, for j in [j0, j1].
static inline void row_weights(const Gauss& g, float dy, int j0, int j1, float* w) {
    const float a = g.a, mx = g.mx;
    const float B = (2.0f * g.b) * dy;
    const float Cq = (g.c * dy) * dy;
    const int n = j1 - j0 + 1;
    const float x0 = (float)j0;
#pragma omp simd
    for (int t = 0; t < n; ++t) {
        const float dx = ((x0 + (float)t) + 0.5f) - mx;
        const float q = (a * dx + B) * dx + Cq;
        const float e = fast_exp(-0.5f * q);
        w[t] = q <= Q_CUT ? e : 0.0f;
    }
}

// The same with the Gaussian's wave (amp != 0), spec section 10's order: e = exp(-q/2),
// arg = (kx*dx + ky*dy) + phase, t = 1 + amp * cos_gsi(arg), w = e * t, every operation
// rounded (no FMA: the build contracts nothing).
static inline void row_weights_wave(const Gauss& g, float dy, int j0, int j1, float* w) {
    const float a = g.a, mx = g.mx, kx = g.kx, phase = g.phase, amp = g.amp;
    const float B = (2.0f * g.b) * dy;
    const float Cq = (g.c * dy) * dy;
    const float kydy = g.ky * dy;
    const int n = j1 - j0 + 1;
    const float x0 = (float)j0;
#pragma omp simd
    for (int t = 0; t < n; ++t) {
        const float dx = ((x0 + (float)t) + 0.5f) - mx;
        const float q = (a * dx + B) * dx + Cq;
        const float e = fast_exp(-0.5f * q);
        const float arg = (kx * dx + kydy) + phase;
        float f = amp * cos_gsi(arg);
        f = 1.0f + f;
        const float wv = e * f;
        w[t] = q <= Q_CUT ? wv : 0.0f;
    }
}

// One band of rows [r0, r1): accumulate the Gaussians ids[e0..e1) (index order) into the
// planar scratch acc [C][r1-r0][W], then write rows r0..r1 of out [H, W, C].
template <int C>
static void forward_band_t(const Gauss* gs, const int32_t* ids, int64_t e0, int64_t e1,
                           const float* col, int r0, int r1, int64_t W, float* out,
                           float* acc, float* w) {
    const int bh = r1 - r0;
    std::memset(acc, 0, sizeof(float) * (size_t)C * bh * W);
    for (int64_t e = e0; e < e1; ++e) {
        const int64_t k = ids[e];
        const Gauss& g = gs[k];
        const int i0 = g.i0 > r0 ? g.i0 : r0;
        const int i1 = g.i1 < r1 - 1 ? g.i1 : r1 - 1;
        float cc[C];
        for (int ch = 0; ch < C; ++ch) cc[ch] = col[k * C + ch];
        for (int i = i0; i <= i1; ++i) {
            const float dy = ((float)i + 0.5f) - g.my;
            int j0, j1;
            if (!row_span(g, dy, W, j0, j1)) continue;
            if (g.amp != 0.0f)
                row_weights_wave(g, dy, j0, j1, w);
            else
                row_weights(g, dy, j0, j1, w);  // no wave: no cosine (as before waves)
            const int n = j1 - j0 + 1;
            for (int ch = 0; ch < C; ++ch) {
                float* dst = acc + ((size_t)ch * bh + (i - r0)) * W + j0;
                const float cv = cc[ch];
                const float* wp = w;
#pragma omp simd
                for (int t = 0; t < n; ++t) dst[t] += wp[t] * cv;
            }
        }
    }
    // Planar band buffer -> interleaved [H, W, C] output rows (disjoint per band).
    for (int i = 0; i < bh; ++i) {
        float* o = out + ((size_t)(r0 + i) * W) * C;
        for (int64_t j = 0; j < W; ++j)
            for (int ch = 0; ch < C; ++ch) o[j * C + ch] = acc[((size_t)ch * bh + i) * W + j];
    }
}

static void forward_band(int C, const Gauss* gs, const int32_t* ids, int64_t e0, int64_t e1,
                         const float* col, int r0, int r1, int64_t W, float* out, float* acc,
                         float* w) {
    switch (C) {
        case 1: forward_band_t<1>(gs, ids, e0, e1, col, r0, r1, W, out, acc, w); break;
        case 2: forward_band_t<2>(gs, ids, e0, e1, col, r0, r1, W, out, acc, w); break;
        case 3: forward_band_t<3>(gs, ids, e0, e1, col, r0, r1, W, out, acc, w); break;
        default: forward_band_t<4>(gs, ids, e0, e1, col, r0, r1, W, out, acc, w); break;
    }
}

// ---- plans: one geometry, many passes (the encoder) -------------------------------------------
// A plan keeps, for every Gaussian k and candidate row i (rows_start[k] + i - g.i0), the
// row's column span and, when stored, its weights. Spans and weights come from row_span and
// row_weights exactly as in forward_band_t, and plan_forward_band_t sums in the same order,
// so a plan's forward is bit-identical to `forward`. Rows are padded to a multiple of PAD
// pixels with zero weights, and the plan's image buffers have PAD spare columns (row stride
// Wp = W + PAD), so the loops run whole vectors with no scalar remainder; adding the padding's
// exact zeros (0 * finite colour) changes no sum.

// Spans of the Gaussians [k0, k1): n = 0 for a row with no span.
static void plan_spans_chunk(const Gauss* gs, int64_t k0, int64_t k1, int64_t W,
                             const int64_t* rows_start, RowSpan* spans) {
    for (int64_t k = k0; k < k1; ++k) {
        const Gauss& g = gs[k];
        RowSpan* s = spans + rows_start[k];
        for (int i = g.i0; i <= g.i1; ++i, ++s) {
            const float dy = ((float)i + 0.5f) - g.my;
            int j0 = 0, j1 = -1;
            if (!row_span(g, dy, W, j0, j1)) j1 = j0 - 1;
            s->j0 = j0;
            s->n = j1 - j0 + 1;
        }
    }
}

// The weights of one row, PAD-padded with zeros: stored (computed into the store first when
// fill is set), or computed into scratch when the plan keeps none.
static inline const float* plan_row(const Gauss& g, int i, const RowSpan& s, float* weights,
                                    bool fill, float* scratch) {
    float* w = weights ? weights + s.off : scratch;
    if (!weights || fill) {
        row_weights(g, ((float)i + 0.5f) - g.my, s.j0, s.j0 + s.n - 1, w);
        for (int t = s.n; t < padded(s.n); ++t) w[t] = 0.0f;
    }
    return w;
}

// Weights of the Gaussians [k0, k1) at their spans' offsets.
static void plan_weights_chunk(const Gauss* gs, int64_t k0, int64_t k1,
                               const int64_t* rows_start, const RowSpan* spans, float* weights) {
    for (int64_t k = k0; k < k1; ++k) {
        const Gauss& g = gs[k];
        const RowSpan* s = spans + rows_start[k];
        for (int i = g.i0; i <= g.i1; ++i, ++s)
            if (s->n > 0) plan_row(g, i, *s, weights, true, nullptr);
    }
}

// With fill set, the weights are computed into the store on the way (each row of each
// Gaussian lies in exactly one band: no two bands write the same weights). With out null,
// the band is left in acc.
template <int C>
static void plan_forward_band_t(const Gauss* gs, const int32_t* ids, int64_t e0, int64_t e1,
                                const int64_t* rows_start, const RowSpan* spans,
                                float* weights, bool fill, const float* col, int r0, int r1,
                                int64_t W, float* out, float* acc, float* scratch) {
    const int bh = r1 - r0;
    const int64_t Wp = W + PAD;
    std::memset(acc, 0, sizeof(float) * (size_t)C * bh * Wp);
    for (int64_t e = e0; e < e1; ++e) {
        const int64_t k = ids[e];
        const Gauss& g = gs[k];
        const int i0 = g.i0 > r0 ? g.i0 : r0;
        const int i1 = g.i1 < r1 - 1 ? g.i1 : r1 - 1;
        float cc[C];
        for (int ch = 0; ch < C; ++ch) cc[ch] = col[k * C + ch];
        const RowSpan* s = spans + rows_start[k] + (i0 - g.i0);
        for (int i = i0; i <= i1; ++i, ++s) {
            const int n = s->n;
            if (n <= 0) continue;
            const float* wp = plan_row(g, i, *s, weights, fill, scratch);
            const int np = padded(n);
            for (int ch = 0; ch < C; ++ch) {
                float* dst = acc + ((size_t)ch * bh + (i - r0)) * Wp + s->j0;
                const float cv = cc[ch];
#pragma omp simd
                for (int t = 0; t < np; ++t) dst[t] += wp[t] * cv;
            }
        }
    }
    if (!out) return;  // the caller reads acc (planar [C][bh][Wp])
    for (int i = 0; i < bh; ++i) {
        float* o = out + ((size_t)(r0 + i) * W) * C;
        for (int64_t j = 0; j < W; ++j)
            for (int ch = 0; ch < C; ++ch) o[j * C + ch] = acc[((size_t)ch * bh + i) * Wp + j];
    }
}

static void plan_forward_band(int C, const Gauss* gs, const int32_t* ids, int64_t e0,
                              int64_t e1, const int64_t* rows_start, const RowSpan* spans,
                              float* weights, bool fill, const float* col, int r0, int r1,
                              int64_t W, float* out, float* acc, float* scratch) {
#define GSI_PF(CC) plan_forward_band_t<CC>(gs, ids, e0, e1, rows_start, spans, weights, fill, \
                                           col, r0, r1, W, out, acc, scratch)
    switch (C) {
        case 1: GSI_PF(1); break;
        case 2: GSI_PF(2); break;
        case 3: GSI_PF(3); break;
        default: GSI_PF(4); break;
    }
#undef GSI_PF
}

// Gradients of the Gaussians order[e0..e1); each Gaussian owns its outputs (no atomics).
// Per row only S0 = sum(w*gs), S1 = sum(w*gs*dx), S2 = sum(w*gs*dx^2) and the colour sums
// are accumulated; conic/mean gradients follow in closed form. Spans and weights come from
// the plan (weights null: computed per row). With
// geometry = false only the colour gradient (A^T v) is formed.
template <int C, bool GEOM>
static void plan_backward_chunk_t(const Gauss* gs, const int32_t* order, int64_t e0,
                                  int64_t e1, const int64_t* rows_start, const RowSpan* spans,
                                  const float* weights, const float* col, const float* gp,
                                  int64_t H, int64_t W, float* gm, float* gq, float* gc,
                                  float* scratch) {
    const int64_t Wp = W + PAD;  // gp is planar [C, H, Wp], zero in the spare columns
    const int64_t plane = H * Wp;
    for (int64_t e = e0; e < e1; ++e) {
        const int64_t k = order[e];
        const Gauss& g = gs[k];
        double tda = 0, tdb = 0, tdc = 0, tdmx = 0, tdmy = 0;
        double tcol[4] = {0, 0, 0, 0};
        if (g.valid) {
            float cc[4] = {0, 0, 0, 0};
            if (GEOM)
                for (int ch = 0; ch < C; ++ch) cc[ch] = col[k * C + ch];
            const float c0 = cc[0], c1 = cc[1], c2 = cc[2], c3 = cc[3];
            const RowSpan* s = spans + rows_start[k];
            for (int i = g.i0; i <= g.i1; ++i, ++s) {
                const int n = s->n;
                if (n <= 0) continue;
                const float dy = ((float)i + 0.5f) - g.my;
                const float* wp = plan_row(g, i, *s, const_cast<float*>(weights), false,
                                           scratch);
                const int j0 = s->j0;
                const int np = padded(n);
                const float* g0 = gp + (int64_t)i * Wp + j0;
                const float* g1 = C > 1 ? g0 + plane : g0;
                const float* g2 = C > 2 ? g0 + 2 * plane : g0;
                const float* g3 = C > 3 ? g0 + 3 * plane : g0;
                float D0 = 0, D1 = 0, D2 = 0, D3 = 0;
                if (GEOM) {
                    const float fj0 = (float)j0, mx = g.mx;
                    float S0 = 0, S1 = 0, S2 = 0;
#pragma omp simd reduction(+ : S0, S1, S2, D0, D1, D2, D3)
                    for (int t = 0; t < np; ++t) {
                        const float wt = wp[t];
                        float gsum = g0[t] * c0;
                        D0 += g0[t] * wt;
                        if (C > 1) { gsum += g1[t] * c1; D1 += g1[t] * wt; }
                        if (C > 2) { gsum += g2[t] * c2; D2 += g2[t] * wt; }
                        if (C > 3) { gsum += g3[t] * c3; D3 += g3[t] * wt; }
                        const float G = wt * gsum;
                        const float dx = ((fj0 + (float)t) + 0.5f) - mx;
                        S0 += G;
                        S1 += G * dx;
                        S2 += G * dx * dx;
                    }
                    const double dyd = dy;
                    tda += S2;
                    tdb += 2.0 * dyd * S1;
                    tdc += dyd * dyd * S0;
                    tdmx += 2.0 * (double)g.a * S1 + 2.0 * (double)g.b * dyd * S0;
                    tdmy += 2.0 * (double)g.b * S1 + 2.0 * (double)g.c * dyd * S0;
                } else {
#pragma omp simd reduction(+ : D0, D1, D2, D3)
                    for (int t = 0; t < np; ++t) {
                        const float wt = wp[t];
                        D0 += g0[t] * wt;
                        if (C > 1) D1 += g1[t] * wt;
                        if (C > 2) D2 += g2[t] * wt;
                        if (C > 3) D3 += g3[t] * wt;
                    }
                }
                tcol[0] += D0; tcol[1] += D1; tcol[2] += D2; tcol[3] += D3;
            }
        }
        if (GEOM) {
            gm[2 * k + 0] = (float)(0.5 * tdmx);
            gm[2 * k + 1] = (float)(0.5 * tdmy);
            gq[3 * k + 0] = (float)(-0.5 * tda);
            gq[3 * k + 1] = (float)(-0.5 * tdb);
            gq[3 * k + 2] = (float)(-0.5 * tdc);
        }
        for (int ch = 0; ch < C; ++ch) gc[k * C + ch] = (float)tcol[ch];
    }
}

static void plan_backward_chunk(int C, bool geom, const Gauss* gs, const int32_t* order,
                                int64_t e0, int64_t e1, const int64_t* rows_start,
                                const RowSpan* spans, const float* weights, const float* col,
                                const float* gp, int64_t H, int64_t W, float* gm, float* gq,
                                float* gc, float* scratch) {
#define GSI_PB(CC, G) plan_backward_chunk_t<CC, G>(gs, order, e0, e1, rows_start, spans, \
                                                   weights, col, gp, H, W, gm, gq, gc, scratch)
    if (geom) {
        switch (C) {
            case 1: GSI_PB(1, true); break;
            case 2: GSI_PB(2, true); break;
            case 3: GSI_PB(3, true); break;
            default: GSI_PB(4, true); break;
        }
    } else {
        switch (C) {
            case 1: GSI_PB(1, false); break;
            case 2: GSI_PB(2, false); break;
            case 3: GSI_PB(3, false); break;
            default: GSI_PB(4, false); break;
        }
    }
#undef GSI_PB
}

}  // namespace GSI_NS
