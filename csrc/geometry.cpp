// Per-Gaussian set-up and the bands of rows (baseline ISA: cheap, per Gaussian).

#include <algorithm>
#include <cmath>
#include <limits>

#include "common.h"
#include "thread_pool.h"

namespace gsi {

Gauss setup(const float* m, const float* q, const float* wave, int64_t H, int64_t W) {
    Gauss g;
    g.mx = m[0]; g.my = m[1]; g.a = q[0]; g.b = q[1]; g.c = q[2];
    g.kx = g.ky = g.phase = g.amp = 0.0f;
    g.valid = false;
    g.i0 = 0; g.i1 = -1;
    g.det = 0.0;
    if (!(std::isfinite(g.mx) && std::isfinite(g.my) && std::isfinite(g.a) &&
          std::isfinite(g.b) && std::isfinite(g.c)))
        return g;
    if (wave && wave[3] != 0.0f) {  // (NaN != 0: a wave, not finite)
        if (!(std::isfinite(wave[0]) && std::isfinite(wave[1]) && std::isfinite(wave[2]) &&
              std::isfinite(wave[3])))
            return g;
        g.kx = wave[0]; g.ky = wave[1]; g.phase = wave[2]; g.amp = wave[3];
    }
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

std::vector<Gauss> setup_all(const float* m, const float* q, const float* waves, int64_t N,
                             int64_t H, int64_t W, int nt) {
    std::vector<Gauss> gs((size_t)N);
    // Independent per Gaussian: chunks in parallel give the serial result.
    constexpr int64_t CHUNK = 512;
    parallel_dynamic((N + CHUNK - 1) / CHUNK, nt, [&](int64_t ch) {
        const int64_t k1 = std::min(N, (ch + 1) * CHUNK);
        for (int64_t k = ch * CHUNK; k < k1; ++k)
            gs[k] = setup(m + 2 * k, q + 3 * k, waves ? waves + 4 * k : nullptr, H, W);
    });
    return gs;
}

Bands bin_bands(const std::vector<Gauss>& gs, int64_t H) {
    const int64_t N = (int64_t)gs.size();
    const int64_t nb = (H + BAND - 1) / BAND;
    Bands bands;
    std::vector<int64_t>& start = bands.start;
    start.assign((size_t)nb + 1, 0);
    for (int64_t k = 0; k < N; ++k)
        if (gs[k].valid)
            for (int b = gs[k].i0 / BAND; b <= gs[k].i1 / BAND; ++b) start[b + 1]++;
    for (int64_t b = 0; b < nb; ++b) start[b + 1] += start[b];
    bands.ids.resize((size_t)start[nb]);
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t k = 0; k < N; ++k)
        if (gs[k].valid)
            for (int b = gs[k].i0 / BAND; b <= gs[k].i1 / BAND; ++b)
                bands.ids[fill[b]++] = (int32_t)k;
    return bands;
}

std::vector<int32_t> band_order(const std::vector<Gauss>& gs, int64_t H) {
    const int64_t N = (int64_t)gs.size();
    const int64_t nb = (H + BAND - 1) / BAND;
    std::vector<int64_t> start((size_t)nb + 2, 0);
    for (int64_t k = 0; k < N; ++k) start[(gs[k].valid ? gs[k].i0 / BAND : nb) + 1]++;
    for (int64_t b = 0; b <= nb; ++b) start[b + 1] += start[b];
    std::vector<int32_t> order((size_t)N);
    for (int64_t k = 0; k < N; ++k)
        order[start[gs[k].valid ? gs[k].i0 / BAND : nb]++] = (int32_t)k;
    return order;
}

std::vector<float> to_planar(const float* pg, int64_t H, int64_t W, int64_t C, int nt,
                             int64_t stride) {
    std::vector<float> gp((size_t)(C * H * stride));  // zero-initialised
    const int64_t plane = H * stride;
    parallel_dynamic((H + BAND - 1) / BAND, nt, [&](int64_t band) {
        const int64_t r1 = std::min<int64_t>(H, (band + 1) * BAND);
        for (int64_t i = band * BAND; i < r1; ++i)
            for (int64_t j = 0; j < W; ++j)
                for (int64_t ch = 0; ch < C; ++ch)
                    gp[ch * plane + i * stride + j] = pg[(i * W + j) * C + ch];
    });
    return gp;
}

}  // namespace gsi
