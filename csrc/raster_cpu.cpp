// Multi-threaded CPU rasterizer for gscodec (accumulated summation of 2D Gaussians).
//
// Contract (see gscodec/render/__init__.py): pixel (i, j) has centre p = (j + 0.5, i + 0.5);
// for Gaussian k with mean m and conic (a, b, c), dx = p.x - m.x, dy = p.y - m.y and
//     q = (a*dx + (2*b)*dy)*dx + (c*dy)*dy          (float32, this evaluation order, no FMA)
// Gaussian k adds colors_k * exp(-q/2) to the pixel iff q <= Q_CUT and a > 0 and
// a*c - b*b > 0 (float32). This file must be built with -ffp-contract=off so that q is
// bit-identical to the PyTorch reference, which evaluates the same expression op by op.
//
// Forward: Gaussians are binned into bands of BAND rows by their (widened) y-extent; bands
// are processed in parallel (dynamic scheduling), each accumulating into a band-local planar
// buffer. For each Gaussian and row, the x-span of the ellipse q <= Q_CUT is solved
// analytically in double, widened by one pixel, clamped in floating point, and every pixel
// of the span is still tested with q <= Q_CUT, so the result is exactly the definition.
// Backward: parallel over chunks of Gaussians; each Gaussian owns its gradient (no atomics).
// Per row, only sums S0 = sum(w*gs), S1 = sum(w*gs*dx), S2 = sum(w*gs*dx^2) and the colour
// sums are accumulated; the conic/mean gradients follow from them in closed form.

#include <torch/extension.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

namespace {

constexpr float Q_CUT = 12.0f;
constexpr int BAND = 16;           // rows per forward band
constexpr int64_t BWD_CHUNK = 32;  // Gaussians per backward work item

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

struct Gauss {
    float mx, my, a, b, c;
    double det;    // a*c - b*b in double (for the analytic spans)
    int i0, i1;    // candidate rows (inclusive), already clamped to the image
    bool valid;
};

// Analytic, per-Gaussian setup: validity (contract), widened candidate rows, culling.
static Gauss setup(const float* m, const float* q, int64_t H, int64_t W) {
    Gauss g;
    g.mx = m[0]; g.my = m[1]; g.a = q[0]; g.b = q[1]; g.c = q[2];
    g.valid = false;
    g.i0 = 0; g.i1 = -1;
    g.det = 0.0;
    if (!(std::isfinite(g.mx) && std::isfinite(g.my) && std::isfinite(g.a) &&
          std::isfinite(g.b) && std::isfinite(g.c)))
        return g;
    const float det32 = g.a * g.c - g.b * g.b;
    if (!(g.a > 0.0f) || !(det32 > 0.0f)) return g;  // not positive definite: skip
    const double a = g.a, b = g.b, c = g.c;
    const double det = a * c - b * b;  // products are exact in double
    g.det = det;
    const double inf = std::numeric_limits<double>::infinity();
    const double ry = det > 0.0 ? std::sqrt((double)Q_CUT * a / det) : inf;
    const double rx = det > 0.0 ? std::sqrt((double)Q_CUT * c / det) : inf;
    // Pixel centres j + 0.5 within [x - r, x + r], widened by one pixel each side.
    double ylo = std::floor(g.my - ry - 0.5) - 1.0, yhi = std::ceil(g.my + ry - 0.5) + 1.0;
    double xlo = std::floor(g.mx - rx - 0.5) - 1.0, xhi = std::ceil(g.mx + rx - 0.5) + 1.0;
    if (!(yhi >= 0.0) || !(ylo <= (double)(H - 1)) || !(xhi >= 0.0) ||
        !(xlo <= (double)(W - 1)))
        return g;  // entirely off the image
    ylo = std::max(ylo, 0.0);
    yhi = std::min(yhi, (double)(H - 1));  // clamp in floating point before converting
    g.i0 = (int)ylo;
    g.i1 = (int)yhi;
    g.valid = true;
    return g;
}

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
    lo = std::max(lo, 0.0);
    hi = std::min(hi, (double)(W - 1));
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

// Run fn(item) for item in [0, n) on at::get_num_threads() threads, dynamically scheduled.
template <class F>
static void parallel_dynamic(int64_t n, const F& fn) {
    int64_t nt = std::min<int64_t>(std::max(1, at::get_num_threads()), n);
    if (nt <= 1) {
        for (int64_t i = 0; i < n; ++i) fn(i);
        return;
    }
    std::atomic<int64_t> next{0};
    auto worker = [&]() {
        for (;;) {
            const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
            if (i >= n) break;
            fn(i);
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(nt - 1);
    for (int64_t t = 1; t < nt; ++t) pool.emplace_back(worker);
    worker();
    for (auto& th : pool) th.join();
}

static void check_inputs(const torch::Tensor& means, const torch::Tensor& conics,
                         const torch::Tensor& colors) {
    TORCH_CHECK(means.device().is_cpu() && conics.device().is_cpu() && colors.device().is_cpu(),
                "raster_cpu: tensors must be on the CPU");
    TORCH_CHECK(means.scalar_type() == torch::kFloat32 && conics.scalar_type() == torch::kFloat32 &&
                    colors.scalar_type() == torch::kFloat32,
                "raster_cpu: tensors must be float32");
    TORCH_CHECK(means.dim() == 2 && means.size(1) == 2, "means must be [N, 2]");
    TORCH_CHECK(conics.dim() == 2 && conics.size(1) == 3, "conics must be [N, 3]");
    TORCH_CHECK(colors.dim() == 2 && colors.size(0) == means.size(0) &&
                    conics.size(0) == means.size(0),
                "colors must be [N, C] with the same N as means and conics");
    TORCH_CHECK(colors.size(1) >= 1 && colors.size(1) <= 4, "channel count must be 1..4");
}

static std::vector<Gauss> setup_all(const float* m, const float* q, int64_t N, int64_t H,
                                    int64_t W) {
    std::vector<Gauss> gs((size_t)N);
    for (int64_t k = 0; k < N; ++k) gs[k] = setup(m + 2 * k, q + 3 * k, H, W);
    return gs;
}

template <int C>
static void forward_impl(const std::vector<Gauss>& gs, const float* col, int64_t H, int64_t W,
                         float* out) {
    const int64_t N = (int64_t)gs.size();
    const int64_t nb = (H + BAND - 1) / BAND;
    // Bin Gaussians into bands: count, prefix-sum, fill (in index order: deterministic).
    std::vector<int64_t> start((size_t)nb + 1, 0);
    for (int64_t k = 0; k < N; ++k)
        if (gs[k].valid)
            for (int b = gs[k].i0 / BAND; b <= gs[k].i1 / BAND; ++b) start[b + 1]++;
    for (int64_t b = 0; b < nb; ++b) start[b + 1] += start[b];
    std::vector<int32_t> ids((size_t)start[nb]);
    {
        std::vector<int64_t> fill(start.begin(), start.end() - 1);
        for (int64_t k = 0; k < N; ++k)
            if (gs[k].valid)
                for (int b = gs[k].i0 / BAND; b <= gs[k].i1 / BAND; ++b)
                    ids[fill[b]++] = (int32_t)k;
    }
    parallel_dynamic(nb, [&](int64_t band) {
        const int r0 = (int)(band * BAND);
        const int r1 = (int)std::min<int64_t>(H, r0 + BAND);  // exclusive
        const int bh = r1 - r0;
        std::vector<float> acc((size_t)C * bh * W, 0.0f);  // planar [C][bh][W]
        std::vector<float> w((size_t)W);
        for (int64_t e = start[band]; e < start[band + 1]; ++e) {
            const int64_t k = ids[e];
            const Gauss& g = gs[k];
            const int i0 = std::max(g.i0, r0), i1 = std::min(g.i1, r1 - 1);
            float cc[C];
            for (int ch = 0; ch < C; ++ch) cc[ch] = col[k * C + ch];
            for (int i = i0; i <= i1; ++i) {
                const float dy = ((float)i + 0.5f) - g.my;
                int j0, j1;
                if (!row_span(g, dy, W, j0, j1)) continue;
                row_weights(g, dy, j0, j1, w.data());
                const int n = j1 - j0 + 1;
                for (int ch = 0; ch < C; ++ch) {
                    float* dst = acc.data() + ((size_t)ch * bh + (i - r0)) * W + j0;
                    const float cv = cc[ch];
                    const float* wp = w.data();
#pragma omp simd
                    for (int t = 0; t < n; ++t) dst[t] += wp[t] * cv;
                }
            }
        }
        // Planar band buffer -> interleaved [H, W, C] output rows (disjoint per band).
        for (int i = 0; i < bh; ++i) {
            float* o = out + ((size_t)(r0 + i) * W) * C;
            for (int64_t j = 0; j < W; ++j)
                for (int ch = 0; ch < C; ++ch)
                    o[j * C + ch] = acc[((size_t)ch * bh + i) * W + j];
        }
    });
}

template <int C>
static void backward_impl(const std::vector<Gauss>& gs, const float* col, const float* gp,
                          int64_t H, int64_t W, float* gm, float* gq, float* gc) {
    const int64_t N = (int64_t)gs.size();
    const int64_t plane = H * W;
    // Visit Gaussians grouped by the band of their first row (counting sort, stable), so
    // that consecutive Gaussians read nearby rows of grad_out (cache locality).
    const int64_t nb = (H + BAND - 1) / BAND;
    std::vector<int64_t> start((size_t)nb + 2, 0);
    for (int64_t k = 0; k < N; ++k) start[(gs[k].valid ? gs[k].i0 / BAND : nb) + 1]++;
    for (int64_t b = 0; b <= nb; ++b) start[b + 1] += start[b];
    std::vector<int32_t> order((size_t)N);
    for (int64_t k = 0; k < N; ++k) order[start[gs[k].valid ? gs[k].i0 / BAND : nb]++] = (int32_t)k;
    const int64_t nchunks = (N + BWD_CHUNK - 1) / BWD_CHUNK;
    parallel_dynamic(nchunks, [&](int64_t chunk) {
        std::vector<float> w((size_t)W);
        const int64_t kend = std::min(N, (chunk + 1) * BWD_CHUNK);
        for (int64_t e = chunk * BWD_CHUNK; e < kend; ++e) {
            const int64_t k = order[e];
            const Gauss& g = gs[k];
            double tda = 0, tdb = 0, tdc = 0, tdmx = 0, tdmy = 0;
            double tcol[4] = {0, 0, 0, 0};
            if (g.valid) {
                float cc[4] = {0, 0, 0, 0};
                for (int ch = 0; ch < C; ++ch) cc[ch] = col[k * C + ch];
                const float c0 = cc[0], c1 = cc[1], c2 = cc[2], c3 = cc[3];
                for (int i = g.i0; i <= g.i1; ++i) {
                    const float dy = ((float)i + 0.5f) - g.my;
                    int j0, j1;
                    if (!row_span(g, dy, W, j0, j1)) continue;
                    row_weights(g, dy, j0, j1, w.data());
                    const int n = j1 - j0 + 1;
                    const float* wp = w.data();
                    const float* g0 = gp + i * W + j0;
                    const float* g1 = C > 1 ? g0 + plane : g0;
                    const float* g2 = C > 2 ? g0 + 2 * plane : g0;
                    const float* g3 = C > 3 ? g0 + 3 * plane : g0;
                    const float fj0 = (float)j0, mx = g.mx;
                    float S0 = 0, S1 = 0, S2 = 0, D0 = 0, D1 = 0, D2 = 0, D3 = 0;
#pragma omp simd reduction(+ : S0, S1, S2, D0, D1, D2, D3)
                    for (int t = 0; t < n; ++t) {
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
                    tcol[0] += D0; tcol[1] += D1; tcol[2] += D2; tcol[3] += D3;
                }
            }
            // dL/dq = -0.5 * w * gs;  dq/dmean = -(2a dx + 2b dy, 2b dx + 2c dy).
            gm[2 * k + 0] = (float)(0.5 * tdmx);
            gm[2 * k + 1] = (float)(0.5 * tdmy);
            gq[3 * k + 0] = (float)(-0.5 * tda);
            gq[3 * k + 1] = (float)(-0.5 * tdb);
            gq[3 * k + 2] = (float)(-0.5 * tdc);
            for (int ch = 0; ch < C; ++ch) gc[k * C + ch] = (float)tcol[ch];
        }
    });
}

}  // namespace

torch::Tensor rasterize_forward(torch::Tensor means, torch::Tensor conics, torch::Tensor colors,
                                int64_t height, int64_t width) {
    check_inputs(means, conics, colors);
    TORCH_CHECK(height >= 0 && width >= 0, "negative image size");
    means = means.contiguous();
    conics = conics.contiguous();
    colors = colors.contiguous();
    const int64_t N = means.size(0), C = colors.size(1);
    auto out = torch::zeros({height, width, C}, colors.options());
    if (N == 0 || height == 0 || width == 0) return out;
    const auto gs = setup_all(means.data_ptr<float>(), conics.data_ptr<float>(), N, height, width);
    const float* col = colors.data_ptr<float>();
    float* o = out.data_ptr<float>();
    switch (C) {
        case 1: forward_impl<1>(gs, col, height, width, o); break;
        case 2: forward_impl<2>(gs, col, height, width, o); break;
        case 3: forward_impl<3>(gs, col, height, width, o); break;
        default: forward_impl<4>(gs, col, height, width, o); break;
    }
    return out;
}

std::vector<torch::Tensor> rasterize_backward(torch::Tensor means, torch::Tensor conics,
                                              torch::Tensor colors, torch::Tensor grad_out) {
    check_inputs(means, conics, colors);
    TORCH_CHECK(grad_out.dim() == 3 && grad_out.size(2) == colors.size(1),
                "grad_out must be [H, W, C]");
    means = means.contiguous();
    conics = conics.contiguous();
    colors = colors.contiguous();
    const int64_t N = means.size(0), C = colors.size(1);
    const int64_t H = grad_out.size(0), W = grad_out.size(1);
    auto gm = torch::zeros_like(means);
    auto gq = torch::zeros_like(conics);
    auto gc = torch::zeros_like(colors);
    if (N == 0 || H == 0 || W == 0) return {gm, gq, gc};
    // Planar [C, H, W] copy of the incoming gradient: unit-stride rows per channel.
    auto gp = grad_out.to(torch::kFloat32).permute({2, 0, 1}).contiguous();
    const auto gs = setup_all(means.data_ptr<float>(), conics.data_ptr<float>(), N, H, W);
    const float* col = colors.data_ptr<float>();
    const float* g = gp.data_ptr<float>();
    float *pm = gm.data_ptr<float>(), *pq = gq.data_ptr<float>(), *pc = gc.data_ptr<float>();
    switch (C) {
        case 1: backward_impl<1>(gs, col, g, H, W, pm, pq, pc); break;
        case 2: backward_impl<2>(gs, col, g, H, W, pm, pq, pc); break;
        case 3: backward_impl<3>(gs, col, g, H, W, pm, pq, pc); break;
        default: backward_impl<4>(gs, col, g, H, W, pm, pq, pc); break;
    }
    return {gm, gq, gc};
}

double fast_exp_max_rel_error(double lo, double hi, int64_t steps) {
    double worst = 0.0;
    for (int64_t s = 0; s <= steps; ++s) {
        const float x = (float)(lo + (hi - lo) * (double)s / (double)std::max<int64_t>(1, steps));
        const double ref = std::exp((double)x);
        worst = std::max(worst, std::fabs((double)fast_exp(x) - ref) / ref);
    }
    return worst;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &rasterize_forward, "Rasterize Gaussians (forward) -> [H, W, C]");
    m.def("backward", &rasterize_backward,
          "Gradients (means, conics, colors) of the rasterization given grad_out [H, W, C]");
    m.def("fast_exp_max_rel_error", &fast_exp_max_rel_error,
          "Max relative error of the kernel's exp approximation on a grid of [lo, hi]");
    m.def("num_threads", []() { return at::get_num_threads(); });
}
