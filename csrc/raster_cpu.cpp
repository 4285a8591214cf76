// Multi-threaded CPU rasterizer for gscodec (accumulated summation of 2D Gaussians), as the
// Python extension module gscodec._raster (pybind11, numpy arrays, no libtorch).
//
// Contract (see gscodec/render/__init__.py): pixel (i, j) has centre p = (j + 0.5, i + 0.5);
// for Gaussian k with mean m and conic (a, b, c), dx = p.x - m.x, dy = p.y - m.y and
//     q = (a*dx + (2*b)*dy)*dx + (c*dy)*dy          (float32, this evaluation order, no FMA)
// Gaussian k adds colors_k * exp(-q/2) to the pixel iff q <= Q_CUT and a > 0 and
// a*c - b*b > 0 (float32). This file must be built with -ffp-contract=off so that q is
// bit-identical to the reference, which evaluates the same expression op by op.
//
// Forward: Gaussians are binned into bands of BAND rows by their (widened) y-extent; bands
// are processed in parallel (dynamic scheduling), each accumulating into a band-local planar
// buffer in Gaussian index order, so the result does not depend on the thread count. For
// each Gaussian and row, the x-span of the ellipse q <= Q_CUT is solved analytically in
// double, widened by one pixel, clamped in floating point, and every pixel of the span is
// still tested with q <= Q_CUT, so the result is exactly the definition.
// Backward: a plan (see below) that keeps no weights; parallel over chunks of Gaussians, each
// Gaussian owning its gradient (no atomics).
//
// The hot loops (raster_kernels.h) are compiled twice, for AVX2 and for the baseline ISA,
// and chosen at run time, so that a built wheel runs on any x86-64 CPU.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace py = pybind11;

#ifndef GSI_Q_CUT
#error "GSI_Q_CUT must be defined by the build (setup.py reads it from gscodec/render/common.py)"
#endif

namespace {

constexpr float Q_CUT = (float)(GSI_Q_CUT);
constexpr int BAND = 16;           // rows per forward band
constexpr int64_t BWD_CHUNK = 32;  // Gaussians per backward work item

struct Gauss {
    float mx, my, a, b, c;
    double det;    // a*c - b*b in double (for the analytic spans)
    int i0, i1;    // candidate rows (inclusive), already clamped to the image
    bool valid;
};

// Plans pad every row's weights to a multiple of PAD pixels (one AVX2 vector of floats).
constexpr int PAD = 8;
inline int padded(int n) { return (n + PAD - 1) / PAD * PAD; }

struct RowSpan {    // one candidate row of one Gaussian (plans)
    int32_t j0, n;  // first column and pixel count (n = 0: the row has no span)
    int64_t off;    // offset of the row's padded(n) weights in the plan's weight array
};

}  // namespace

// ---- hot loops: AVX2 copy (x86 with GCC/Clang) and baseline copy ----------------------------
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define GSI_HAVE_AVX2 1
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
#else
#define GSI_HAVE_AVX2 0
#endif

#define GSI_NS gsi_base
#include "raster_kernels.h"
#undef GSI_NS

namespace {

// ---- ISA dispatch ---------------------------------------------------------------------------

struct Impl {
    const char* name;
    void (*forward_band)(int, const Gauss*, const int32_t*, int64_t, int64_t, const float*,
                         int, int, int64_t, float*, float*, float*);
    float (*fast_exp)(float);
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
    {NAME, NS::forward_band, NS::fast_exp_out, NS::plan_spans_chunk, NS::plan_weights_chunk,    \
     NS::plan_forward_band, NS::plan_backward_chunk}
const Impl kBase = GSI_IMPL("baseline", gsi_base);
#if GSI_HAVE_AVX2
const Impl kAvx2 = GSI_IMPL("avx2", gsi_avx2);
#endif
#undef GSI_IMPL

bool cpu_has_avx2() {
#if GSI_HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return false;
#endif
}

std::atomic<const Impl*> g_impl{nullptr};

const Impl* impl() {
    const Impl* p = g_impl.load(std::memory_order_acquire);
    if (p) return p;
#if GSI_HAVE_AVX2
    p = cpu_has_avx2() ? &kAvx2 : &kBase;
#else
    p = &kBase;
#endif
    g_impl.store(p, std::memory_order_release);
    return p;
}

// ---- thread count ---------------------------------------------------------------------------

int parse_threads(const char* s) {
    if (!s || !*s) return 0;
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);  // OMP_NUM_THREADS may be a list "4,2": first
    if (end == s || v < 1) return 0;
    return (int)std::min<long>(v, 1024);
}

int default_threads() {
    int n = parse_threads(std::getenv("GSCODEC_NUM_THREADS"));
    if (n > 0) return n;
    n = parse_threads(std::getenv("OMP_NUM_THREADS"));
    if (n > 0) return n;
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
#endif
    n = (int)std::thread::hardware_concurrency();
    return n > 0 ? n : 1;
}

std::atomic<int> g_threads{0};  // 0: not yet read from the environment

int get_num_threads() {
    int n = g_threads.load(std::memory_order_relaxed);
    if (n > 0) return n;
    n = default_threads();
    int expected = 0;
    g_threads.compare_exchange_strong(expected, n);
    return g_threads.load(std::memory_order_relaxed);
}

void set_num_threads(int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
    g_threads.store(std::min(n, 1024), std::memory_order_relaxed);
}

// ---- persistent thread pool -----------------------------------------------------------------
// Workers sleep on a condition variable between calls. One job at a time (calls from several
// Python threads are serialized); the caller thread works too. Resized when the requested
// thread count changes. Never destroyed: joining at interpreter exit is not needed and risky.

class Pool {
public:
    void run(int64_t n, int nt, const std::function<void(int64_t)>& fn) {
        std::lock_guard<std::mutex> job_lock(job_mutex_);
        resize(nt - 1);
        {
            std::lock_guard<std::mutex> lk(m_);
            fn_ = &fn;
            n_ = n;
            next_.store(0, std::memory_order_relaxed);
            busy_ = (int)workers_.size();
            error_ = nullptr;
            ++generation_;
        }
        cv_work_.notify_all();
        work();
        std::unique_lock<std::mutex> lk(m_);
        cv_done_.wait(lk, [&] { return busy_ == 0; });
        fn_ = nullptr;
        if (error_) std::rethrow_exception(error_);
    }

private:
    void resize(int nworkers) {
        if ((int)workers_.size() == nworkers) return;
        {
            std::lock_guard<std::mutex> lk(m_);
            stop_ = true;
        }
        cv_work_.notify_all();
        for (auto& t : workers_) t.join();
        workers_.clear();
        stop_ = false;
        // A new worker must not miss the job announced right after (generation_ + 1).
        for (int i = 0; i < nworkers; ++i)
            workers_.emplace_back([this, g = generation_] { loop(g); });
    }

    void work() {
        for (;;) {
            const int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
            if (i >= n_) return;
            try {
                (*fn_)(i);
            } catch (...) {
                std::lock_guard<std::mutex> lk(m_);
                if (!error_) error_ = std::current_exception();
                next_.store(n_, std::memory_order_relaxed);  // stop handing out items
            }
        }
    }

    void loop(uint64_t seen) {
        for (;;) {
            {
                std::unique_lock<std::mutex> lk(m_);
                cv_work_.wait(lk, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
            }
            work();
            std::lock_guard<std::mutex> lk(m_);
            if (--busy_ == 0) cv_done_.notify_one();
        }
    }

    std::mutex job_mutex_, m_;
    std::condition_variable cv_work_, cv_done_;
    std::vector<std::thread> workers_;
    const std::function<void(int64_t)>* fn_ = nullptr;
    int64_t n_ = 0;
    std::atomic<int64_t> next_{0};
    int busy_ = 0;
    uint64_t generation_ = 0;
    bool stop_ = false;
    std::exception_ptr error_;
};

std::atomic<Pool*> g_pool{nullptr};

#if defined(__unix__) || defined(__APPLE__)
// A forked child has none of the parent's worker threads: start afresh (the old pool leaks).
void after_fork_child() { g_pool.store(nullptr); }
#endif

Pool& pool() {
    Pool* p = g_pool.load(std::memory_order_acquire);
    if (p) return *p;
    Pool* fresh = new Pool();
    if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread won the race (no workers started yet: safe)
    return *p;
}

// Run fn(item) for item in [0, n) on up to nt threads, dynamically scheduled. The pool is
// sized by nt alone (not by n), so that small jobs do not make it shrink and regrow.
void parallel_dynamic(int64_t n, int nt, const std::function<void(int64_t)>& fn) {
    if (nt <= 1 || n <= 1) {
        for (int64_t i = 0; i < n; ++i) fn(i);
        return;
    }
    pool().run(n, nt, fn);
}

// ---- setup (baseline ISA: cheap, per Gaussian) ----------------------------------------------

// Validity (contract), widened candidate rows, culling.
Gauss setup(const float* m, const float* q, int64_t H, int64_t W) {
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

std::vector<Gauss> setup_all(const float* m, const float* q, int64_t N, int64_t H, int64_t W) {
    std::vector<Gauss> gs((size_t)N);
    for (int64_t k = 0; k < N; ++k) gs[k] = setup(m + 2 * k, q + 3 * k, H, W);
    return gs;
}

// Gaussians binned into bands of BAND rows by their candidate rows: the band b holds
// ids[start[b] .. start[b+1]) in index order (the forward's summation order).
struct Bands {
    std::vector<int64_t> start;
    std::vector<int32_t> ids;
};

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

// Gaussians grouped by the band of their first row (counting sort, stable), so that
// consecutive Gaussians of the backward read nearby rows of grad_out (cache locality).
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

// Interleaved [H, W, C] -> planar [C, H, stride] (unit-stride rows per channel; the columns
// from W to stride are zero).
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

// ---- Python interface -----------------------------------------------------------------------

using farray = py::array_t<float, py::array::c_style>;

// A C-contiguous float32 array of the given rank (copied only if not contiguous).
farray as_f32(const py::handle& obj, const char* name, int ndim) {
    if (!py::isinstance<py::array>(obj))
        throw py::value_error(std::string(name) + " must be a numpy array, got " +
                              std::string(py::str(py::type::of(obj))));
    auto arr = py::reinterpret_borrow<py::array>(obj);
    if (!arr.dtype().is(py::dtype::of<float>()))
        throw py::value_error(std::string(name) + " must be float32, got " +
                              std::string(py::str(arr.dtype())));
    if (arr.ndim() != ndim)
        throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) +
                              " dimensions, got shape " + std::string(py::str(obj.attr("shape"))));
    return farray::ensure(arr);
}

std::string shape_str(const farray& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

void check_gaussians(const farray& m, const farray& q, const farray& c) {
    const auto N = m.shape(0);
    if (m.shape(1) != 2 || q.shape(0) != N || q.shape(1) != 3 || c.shape(0) != N ||
        c.shape(1) < 1 || c.shape(1) > 4)
        throw py::value_error("bad shapes: means " + shape_str(m) + ", conics " + shape_str(q) +
                              ", colors " + shape_str(c) +
                              " (need [N, 2], [N, 3], [N, C] with C in 1..4)");
    if (N > (py::ssize_t)std::numeric_limits<int32_t>::max())
        throw py::value_error("too many Gaussians");
}

int resolve_threads(int num_threads) {
    if (num_threads < 0) throw py::value_error("num_threads must be >= 0 (0: module default)");
    return num_threads > 0 ? std::min(num_threads, 1024) : get_num_threads();
}

void check_size(int64_t height, int64_t width) {
    if (height < 0 || width < 0) throw py::value_error("negative image size");
    if (height > (1 << 24) || width > (1 << 24))  // rows/columns are indexed with int
        throw py::value_error("image size too large");
}

py::array_t<float> forward(py::handle means, py::handle conics, py::handle colors,
                           int64_t height, int64_t width, int num_threads) {
    auto m = as_f32(means, "means", 2), q = as_f32(conics, "conics", 2);
    auto c = as_f32(colors, "colors", 2);
    check_gaussians(m, q, c);
    check_size(height, width);
    const int nt = resolve_threads(num_threads);
    const int64_t N = m.shape(0), C = c.shape(1);
    py::array_t<float> out({(py::ssize_t)height, (py::ssize_t)width, (py::ssize_t)C});
    float* o = out.mutable_data();
    const float *pm = m.data(), *pq = q.data(), *pc = c.data();
    {
        py::gil_scoped_release nogil;
        if (N == 0 || height == 0 || width == 0) {
            std::memset(o, 0, sizeof(float) * (size_t)(height * width * C));
        } else {
            const auto gs = setup_all(pm, pq, N, height, width);
            forward_impl(*impl(), gs, pc, (int)C, height, width, o, nt);
        }
    }
    return out;
}

// ---- plans ----------------------------------------------------------------------------------
// One geometry rendered many times: the encoder's forward+backward of one step, and the
// conjugate-gradient colour solves (about 25 passes over fixed geometry). The row spans are
// solved once, and the weights are computed once and kept when they fit max_weights; the
// passes then only multiply and add. The forward is bit-identical to `forward`, and the
// gradients to `backward` (a plan that keeps no weights), at any thread count.

constexpr int64_t PLAN_CHUNK = 64;  // Gaussians per work item of the plan's set-up

// Weight arrays are tens of MB, and the encoder makes a plan per step: a freed array is kept
// for the next plan, so that each step does not map, fault in and zero fresh memory (not
// measured apart: at one thread the weight pass took about 14 ms either way, bound by the
// exponentials).
struct Buffer {
    float* data = nullptr;
    size_t size = 0, capacity = 0;
    Buffer() = default;
    Buffer(Buffer&& o) noexcept : data(o.data), size(o.size), capacity(o.capacity) {
        o.data = nullptr;
        o.size = o.capacity = 0;
    }
    Buffer& operator=(Buffer&& o) noexcept {
        std::swap(data, o.data);
        std::swap(size, o.size);
        std::swap(capacity, o.capacity);
        return *this;
    }
    ~Buffer() { std::free(data); }
};

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

// Frees the pooled buffers (the encoder calls it when an encode ends, so that a long-running
// process does not keep a plan's worth of memory); returns the bytes freed.
size_t release_buffers() {
    std::lock_guard<std::mutex> lk(g_buffers_mutex);
    size_t n = 0;
    for (const Buffer& b : g_buffers) n += b.capacity * sizeof(float);
    g_buffers.clear();
    return n;
}

class Plan {
  public:
    Plan(py::handle means, py::handle conics, int64_t height, int64_t width, int num_threads,
         int64_t max_weights) {
        auto m = as_f32(means, "means", 2), q = as_f32(conics, "conics", 2);
        const auto N = m.shape(0);
        if (m.shape(1) != 2 || q.shape(0) != N || q.shape(1) != 3)
            throw py::value_error("bad shapes: means " + shape_str(m) + ", conics " +
                                  shape_str(q) + " (need [N, 2], [N, 3])");
        if (N > (py::ssize_t)std::numeric_limits<int32_t>::max())
            throw py::value_error("too many Gaussians");
        check_size(height, width);
        if (max_weights < 0) throw py::value_error("max_weights must be >= 0");
        const int nt = resolve_threads(num_threads);
        H_ = height;
        W_ = width;
        N_ = N;
        const float *pm = m.data(), *pq = q.data();
        py::gil_scoped_release nogil;
        const Impl& im = *impl();
        gs_ = setup_all(pm, pq, N_, H_, W_);
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

    py::array_t<float> forward(py::handle colors, int num_threads) const {
        auto c = colors_arg(colors);
        const int nt = resolve_threads(num_threads);
        const int64_t C = c.shape(1);
        py::array_t<float> out({(py::ssize_t)H_, (py::ssize_t)W_, (py::ssize_t)C});
        float* o = out.mutable_data();
        const float* pc = c.data();
        {
            py::gil_scoped_release nogil;
            if (N_ == 0 || H_ == 0 || W_ == 0) {
                std::memset(o, 0, sizeof(float) * (size_t)(H_ * W_ * C));
            } else {
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
        }
        return out;
    }

    // The fit's step in one call: with r = weight * forward(colors) - target (weight [H, W]
    // or None for ones), returns (scale * sum(r^2), gmeans, gconics, gcolors), the gradients
    // being those of that loss. The residual goes straight into the backward's planar buffer:
    // no image crosses to Python. The sum is per band in double, then over bands in order
    // (the same value at any thread count).
    py::tuple loss_backward(py::handle colors, py::handle target, py::object weight,
                            double scale, int num_threads) const {
        auto c = colors_arg(colors);
        const int64_t C = c.shape(1);
        auto t = as_f32(target, "target", 3);
        if (t.shape(0) != H_ || t.shape(1) != W_ || t.shape(2) != C)
            throw py::value_error("target must be [" + std::to_string(H_) + ", " +
                                  std::to_string(W_) + ", " + std::to_string(C) + "], got " +
                                  shape_str(t));
        farray wt;
        const float* pw = nullptr;
        if (!weight.is_none()) {
            wt = as_f32(weight, "weight", 2);
            if (wt.shape(0) != H_ || wt.shape(1) != W_)
                throw py::value_error("weight must be [" + std::to_string(H_) + ", " +
                                      std::to_string(W_) + "], got " + shape_str(wt));
            pw = wt.data();
        }
        const int nt = resolve_threads(num_threads);
        py::array_t<float> gm({(py::ssize_t)N_, (py::ssize_t)2});
        py::array_t<float> gq({(py::ssize_t)N_, (py::ssize_t)3});
        py::array_t<float> gc({(py::ssize_t)N_, (py::ssize_t)C});
        float *pgm = gm.mutable_data(), *pgq = gq.mutable_data(), *pgc = gc.mutable_data();
        const float *pc = c.data(), *pt = t.data();
        double loss = 0.0;
        {
            py::gil_scoped_release nogil;
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
                    residual((int)(b * BAND), (int)std::min<int64_t>(H_, (b + 1) * BAND),
                             zero.data());
            }
            for (double v : band_loss) loss += v;
            loss *= scale;
            backward_planar(true, pc, C, gp.data(), nt, pgm, pgq, pgc);
        }
        return py::make_tuple(loss, gm, gq, gc);
    }

    // Gradients of sum(forward(colors) * grad_out): (gmeans, gconics, gcolors).
    py::tuple backward(py::handle colors, py::handle grad_out, int num_threads) const {
        auto c = colors_arg(colors);
        const int64_t C = c.shape(1);
        py::array_t<float> gm({(py::ssize_t)N_, (py::ssize_t)2});
        py::array_t<float> gq({(py::ssize_t)N_, (py::ssize_t)3});
        py::array_t<float> gc({(py::ssize_t)N_, (py::ssize_t)C});
        run_backward(true, c.data(), C, grad_out, num_threads, gm.mutable_data(),
                     gq.mutable_data(), gc.mutable_data());
        return py::make_tuple(gm, gq, gc);
    }

    // A^T v: the colour gradient alone of sum(forward(colors) * v), for v [H, W, C].
    py::array_t<float> adjoint(py::handle v, int num_threads) const {
        auto g = as_f32(v, "v", 3);
        const int64_t C = g.shape(2);
        if (C < 1 || C > 4) throw py::value_error("v must be [H, W, C] with C in 1..4");
        py::array_t<float> gc({(py::ssize_t)N_, (py::ssize_t)C});
        run_backward(false, nullptr, C, v, num_threads, nullptr, nullptr, gc.mutable_data());
        return gc;
    }

    ~Plan() { give_buffer(std::move(weights_)); }
    Plan(const Plan&) = delete;
    Plan& operator=(const Plan&) = delete;

    int64_t count() const { return N_; }
    int64_t evaluations() const { return evaluations_; }
    bool weights_stored() const { return stored_; }
    int64_t nbytes() const {
        return (int64_t)(weights_.size * sizeof(float) + spans_.size() * sizeof(RowSpan) +
                         gs_.size() * sizeof(Gauss) + bands_.ids.size() * sizeof(int32_t) +
                         order_.size() * sizeof(int32_t));
    }

  private:
    const float* weights() const { return stored_ ? weights_.data : nullptr; }

    // A backward or adjoint before any forward: compute the stored weights first.
    void fill_weights(int nt) const {
        std::lock_guard<std::mutex> lk(fill_mutex_);
        if (!stored_ || filled_) return;
        const Impl& im = *impl();
        parallel_dynamic((N_ + PLAN_CHUNK - 1) / PLAN_CHUNK, nt, [&](int64_t ch) {
            im.plan_weights(gs_.data(), ch * PLAN_CHUNK, std::min(N_, (ch + 1) * PLAN_CHUNK),
                            rows_start_.data(), spans_.data(), weights_.data);
        });
        filled_ = true;
    }

    farray colors_arg(py::handle colors) const {
        auto c = as_f32(colors, "colors", 2);
        if (c.shape(0) != N_ || c.shape(1) < 1 || c.shape(1) > 4)
            throw py::value_error("colors must be [N, C] with N = " + std::to_string(N_) +
                                  " and C in 1..4, got " + shape_str(c));
        return c;
    }

    void run_backward(bool geom, const float* pc, int64_t C, py::handle grad_out,
                      int num_threads, float* pgm, float* pgq, float* pgc) const {
        auto g = as_f32(grad_out, geom ? "grad_out" : "v", 3);
        if (g.shape(0) != H_ || g.shape(1) != W_ || g.shape(2) != C)
            throw py::value_error(std::string(geom ? "grad_out" : "v") + " must be [" +
                                  std::to_string(H_) + ", " + std::to_string(W_) + ", " +
                                  std::to_string(C) + "], got " + shape_str(g));
        const int nt = resolve_threads(num_threads);
        const float* pg = g.data();
        py::gil_scoped_release nogil;
        const std::vector<float> gp = to_planar(pg, H_, W_, C, nt, W_ + PAD);
        backward_planar(geom, pc, C, gp.data(), nt, pgm, pgq, pgc);
    }

    // The backward (geom) or adjoint for a planar gradient gp [C, H, W + PAD] (spare
    // columns zero). Called without the GIL.
    void backward_planar(bool geom, const float* pc, int64_t C, const float* gp, int nt,
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
        const int64_t nchunks = (N_ + BWD_CHUNK - 1) / BWD_CHUNK;
        parallel_dynamic(nchunks, nt, [&](int64_t chunk) {
            std::vector<float> scratch(stored_ ? 0 : (size_t)(W_ + PAD));
            const int64_t e0 = chunk * BWD_CHUNK, e1 = std::min(N_, e0 + BWD_CHUNK);
            im.plan_backward_chunk((int)C, geom, gs_.data(), order_.data(), e0, e1,
                                   rows_start_.data(), spans_.data(), weights(), pc, gp, H_,
                                   W_, pgm, pgq, pgc, scratch.data());
        });
    }

    // Accumulate every band of forward(colors) and hand it to epilogue(r0, r1, acc), acc
    // planar [C][r1 - r0][W + PAD]. The first pass of a plan that stores weights fills them.
    template <class F>
    void forward_bands(const float* pc, int64_t C, int nt, const F& epilogue) const {
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

// Gradients of sum(forward * grad_out): one pass, on a plan that keeps no weights.
py::tuple backward(py::handle means, py::handle conics, py::handle colors, py::handle grad_out,
                   int num_threads) {
    auto m = as_f32(means, "means", 2), q = as_f32(conics, "conics", 2);
    auto c = as_f32(colors, "colors", 2);
    check_gaussians(m, q, c);
    auto g = as_f32(grad_out, "grad_out", 3);
    const int64_t C = c.shape(1);
    if (g.shape(2) != C)
        throw py::value_error("grad_out must be [H, W, C] with C = colors.shape[1] = " +
                              std::to_string(C) + ", got " + shape_str(g));
    check_size(g.shape(0), g.shape(1));
    const Plan plan(m, q, g.shape(0), g.shape(1), num_threads, 0);
    return plan.backward(c, g, num_threads);
}

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

void set_isa(const std::string& name) {
    if (name == "baseline") {
        g_impl.store(&kBase);
#if GSI_HAVE_AVX2
    } else if (name == "avx2") {
        if (!cpu_has_avx2()) throw py::value_error("this CPU has no AVX2");
        g_impl.store(&kAvx2);
#endif
    } else if (name == "auto") {
        g_impl.store(nullptr);
        impl();
    } else {
        throw py::value_error("unknown or unsupported ISA: " + name);
    }
}

}  // namespace

PYBIND11_MODULE(_raster, m) {
    m.doc() = "Compiled CPU rasterizer of gscodec (numpy arrays in and out; see gscodec.render)";
#if defined(__unix__) || defined(__APPLE__)
    pthread_atfork(nullptr, nullptr, after_fork_child);
#endif
    m.attr("Q_CUT") = (double)Q_CUT;
    m.def("forward", &forward, py::arg("means"), py::arg("conics"), py::arg("colors"),
          py::arg("height"), py::arg("width"), py::arg("num_threads") = 0,
          "Render float32 means [N,2], conics [N,3], colors [N,C] (C in 1..4) to a float32\n"
          "array [height, width, C]. num_threads 0: get_num_threads(). Releases the GIL.");
    m.def("backward", &backward, py::arg("means"), py::arg("conics"), py::arg("colors"),
          py::arg("grad_out"), py::arg("num_threads") = 0,
          "Gradients (gmeans [N,2], gconics [N,3], gcolors [N,C]) of sum(forward * grad_out)\n"
          "for grad_out float32 [H, W, C]. Releases the GIL.");
    py::class_<Plan>(m, "Plan",
                     "One geometry prepared for many renders (row spans solved once; weights\n"
                     "kept when there are at most max_weights). Its forward and backward are\n"
                     "bit-identical to forward and backward.")
        .def(py::init<py::handle, py::handle, int64_t, int64_t, int, int64_t>(),
             py::arg("means"), py::arg("conics"), py::arg("height"), py::arg("width"),
             py::arg("num_threads") = 0, py::arg("max_weights") = (int64_t)1 << 26)
        .def("forward", &Plan::forward, py::arg("colors"), py::arg("num_threads") = 0,
             "Render colors [N, C] with this geometry: float32 [height, width, C].")
        .def("backward", &Plan::backward, py::arg("colors"), py::arg("grad_out"),
             py::arg("num_threads") = 0,
             "(gmeans, gconics, gcolors) of sum(forward(colors) * grad_out).")
        .def("loss_backward", &Plan::loss_backward, py::arg("colors"), py::arg("target"),
             py::arg("weight"), py::arg("scale"), py::arg("num_threads") = 0,
             "With r = weight * forward(colors) - target (weight [H, W] or None):\n"
             "(scale * sum(r^2), gmeans, gconics, gcolors) of that loss.")
        .def("adjoint", &Plan::adjoint, py::arg("v"), py::arg("num_threads") = 0,
             "A^T v for v [height, width, C]: the colour gradient of sum(forward(.) * v).")
        .def_property_readonly("count", &Plan::count)
        .def_property_readonly("evaluations", &Plan::evaluations,
                               "Gaussian-pixel evaluations of one pass (weights)")
        .def_property_readonly("weights_stored", &Plan::weights_stored)
        .def_property_readonly("nbytes", &Plan::nbytes);
    m.def("release_buffers", &release_buffers,
          "Free the weight buffers that ended plans left for reuse; returns the bytes freed.");
    m.def("set_num_threads", &set_num_threads, py::arg("n"),
          "Default thread count of forward/backward (n >= 1).");
    m.def("get_num_threads", &get_num_threads,
          "Default thread count: set_num_threads, else $GSCODEC_NUM_THREADS, else\n"
          "$OMP_NUM_THREADS, else the CPUs this process may run on.");
    m.def("fast_exp_max_rel_error", &fast_exp_max_rel_error, py::arg("lo"), py::arg("hi"),
          py::arg("steps"), "Max relative error of the kernel's exp on a grid of [lo, hi]");
    m.def("isa", []() { return std::string(impl()->name); },
          "Instruction set of the hot loops in use: 'avx2' or 'baseline'.");
    m.def("_set_isa", &set_isa, py::arg("name"),
          "Testing: force 'baseline', 'avx2' or back to 'auto'.");
}
