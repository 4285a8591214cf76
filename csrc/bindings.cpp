// The Python extension module gscodec._raster (pybind11, numpy arrays, no libtorch): argument
// checks and conversions, output arrays, and the GIL released around every pass.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "fit.h"
#include "isa.h"
#include "raster.h"
#include "thread_pool.h"

namespace py = pybind11;

namespace {

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

void check_geometry(const farray& m, const farray& q) {
    const auto N = m.shape(0);
    if (m.shape(1) != 2 || q.shape(0) != N || q.shape(1) != 3)
        throw py::value_error("bad shapes: means " + shape_str(m) + ", conics " + shape_str(q) +
                              " (need [N, 2], [N, 3])");
    if (N > (py::ssize_t)std::numeric_limits<int32_t>::max())
        throw py::value_error("too many Gaussians");
}

void check_size(int64_t height, int64_t width) {
    if (height < 0 || width < 0) throw py::value_error("negative image size");
    if (height > (1 << 24) || width > (1 << 24))  // rows/columns are indexed with int
        throw py::value_error("image size too large");
}

std::string hw_str(int64_t H, int64_t W) {
    return "[" + std::to_string(H) + ", " + std::to_string(W);
}

farray colors_arg(py::handle colors, int64_t N) {
    auto c = as_f32(colors, "colors", 2);
    if (c.shape(0) != N || c.shape(1) < 1 || c.shape(1) > 4)
        throw py::value_error("colors must be [N, C] with N = " + std::to_string(N) +
                              " and C in 1..4, got " + shape_str(c));
    return c;
}

farray image_arg(py::handle img, const char* name, int64_t H, int64_t W, int64_t C) {
    auto g = as_f32(img, name, 3);
    if (g.shape(0) != H || g.shape(1) != W || g.shape(2) != C)
        throw py::value_error(std::string(name) + " must be " + hw_str(H, W) + ", " +
                              std::to_string(C) + "], got " + shape_str(g));
    return g;
}

// (weight array kept alive, its data or null)
std::pair<farray, const float*> weight_arg(const py::object& weight, int64_t H, int64_t W) {
    if (weight.is_none()) return {farray(), nullptr};
    auto wt = as_f32(weight, "weight", 2);
    if (wt.shape(0) != H || wt.shape(1) != W)
        throw py::value_error("weight must be " + hw_str(H, W) + "], got " + shape_str(wt));
    const float* p = wt.data();
    return {wt, p};
}

// (waves array kept alive, its data or null): None, or float32 [N, 4].
std::pair<farray, const float*> waves_arg(const py::object& waves, int64_t N) {
    if (waves.is_none()) return {farray(), nullptr};
    auto wv = as_f32(waves, "waves", 2);
    if (wv.shape(0) != N || wv.shape(1) != 4)
        throw py::value_error("waves must be [N, 4] with N = " + std::to_string(N) +
                              " (kx, ky, phase, amp), got " + shape_str(wv));
    const float* p = wv.data();
    return {wv, p};
}

py::array_t<float> new_array(int64_t a, int64_t b) {
    return py::array_t<float>({(py::ssize_t)a, (py::ssize_t)b});
}

py::array_t<float> new_image(int64_t H, int64_t W, int64_t C) {
    return py::array_t<float>({(py::ssize_t)H, (py::ssize_t)W, (py::ssize_t)C});
}

py::array_t<float> forward(py::handle means, py::handle conics, py::handle colors,
                           int64_t height, int64_t width, int num_threads, py::object waves) {
    auto m = as_f32(means, "means", 2), q = as_f32(conics, "conics", 2);
    auto c = as_f32(colors, "colors", 2);
    check_gaussians(m, q, c);
    check_size(height, width);
    const int64_t N = m.shape(0), C = c.shape(1);
    auto wv = waves_arg(waves, N);
    const int nt = gsi::resolve_threads(num_threads);
    auto out = new_image(height, width, C);
    float* o = out.mutable_data();
    const float *pm = m.data(), *pq = q.data(), *pc = c.data(), *pw = wv.second;
    {
        py::gil_scoped_release nogil;
        gsi::forward(pm, pq, pc, pw, N, (int)C, height, width, o, nt);
    }
    return out;
}

py::array_t<float> cos_gsi(py::handle x) {
    auto a = as_f32(x, "x", 1);
    py::array_t<float> out(a.shape(0));
    gsi::cos_gsi_values(a.data(), a.shape(0), out.mutable_data());
    return out;
}

// The two plan classes share their Python surface; P is gsi::Plan or gsi::FitPlan (only
// FitPlan takes waves).
template <class P>
std::unique_ptr<P> make_plan(py::handle means, py::handle conics, int64_t height,
                             int64_t width, int num_threads, int64_t max_weights,
                             py::object waves = py::none()) {
    auto m = as_f32(means, "means", 2), q = as_f32(conics, "conics", 2);
    check_geometry(m, q);
    check_size(height, width);
    if (max_weights < 0) throw py::value_error("max_weights must be >= 0");
    auto wv = waves_arg(waves, m.shape(0));
    const int nt = gsi::resolve_threads(num_threads);
    const float *pm = m.data(), *pq = q.data(), *pw = wv.second;
    py::gil_scoped_release nogil;
    if constexpr (std::is_same<P, gsi::Plan>::value)
        return std::make_unique<P>(pm, pq, (int64_t)m.shape(0), height, width, nt, max_weights);
    else
        return std::make_unique<P>(pm, pq, pw, (int64_t)m.shape(0), height, width, nt);
}

// The waves' gradient array of a plan: [N, 4] with waves, else [0, 4] (not returned).
template <class P>
py::array_t<float> waves_grad(const P& p, bool geometry) {
    if constexpr (std::is_same<P, gsi::FitPlan>::value)
        return new_array(geometry && p.has_waves() ? p.count() : 0, 4);
    else
        return new_array(0, 4);
}

template <class P>
bool returns_waves(const P& p) {
    if constexpr (std::is_same<P, gsi::FitPlan>::value)
        return p.has_waves();
    else
        return false;
}

template <class P>
py::array_t<float> plan_forward(const P& p, py::handle colors, int num_threads) {
    auto c = colors_arg(colors, p.count());
    const int nt = gsi::resolve_threads(num_threads);
    const int64_t C = c.shape(1);
    auto out = new_image(p.height(), p.width(), C);
    float* o = out.mutable_data();
    const float* pc = c.data();
    {
        py::gil_scoped_release nogil;
        p.forward(pc, C, nt, o);
    }
    return out;
}

// (gmeans, gconics, gcolors), and gwaves for a plan with waves.
template <class P>
py::tuple plan_backward(const P& p, py::handle colors, py::handle grad_out, int num_threads) {
    auto c = colors_arg(colors, p.count());
    const int64_t C = c.shape(1), N = p.count();
    auto g = image_arg(grad_out, "grad_out", p.height(), p.width(), C);
    const int nt = gsi::resolve_threads(num_threads);
    auto gm = new_array(N, 2), gq = new_array(N, 3), gc = new_array(N, C);
    auto gw = waves_grad(p, true);
    float *pgm = gm.mutable_data(), *pgq = gq.mutable_data(), *pgc = gc.mutable_data();
    float* pgw = gw.mutable_data();
    const float *pc = c.data(), *pg = g.data();
    {
        py::gil_scoped_release nogil;
        if constexpr (std::is_same<P, gsi::FitPlan>::value)
            p.backward(true, pc, C, pg, nt, pgm, pgq, pgc, pgw);
        else
            p.backward(true, pc, C, pg, nt, pgm, pgq, pgc);
    }
    if (returns_waves(p)) return py::make_tuple(gm, gq, gc, gw);
    return py::make_tuple(gm, gq, gc);
}

template <class P>
py::array_t<float> plan_adjoint(const P& p, py::handle v, int num_threads) {
    auto g = as_f32(v, "v", 3);
    const int64_t C = g.shape(2);
    if (C < 1 || C > 4) throw py::value_error("v must be [H, W, C] with C in 1..4");
    g = image_arg(v, "v", p.height(), p.width(), C);
    const int nt = gsi::resolve_threads(num_threads);
    auto gc = new_array(p.count(), C);
    float* pgc = gc.mutable_data();
    const float* pg = g.data();
    {
        py::gil_scoped_release nogil;
        if constexpr (std::is_same<P, gsi::FitPlan>::value)
            p.backward(false, nullptr, C, pg, nt, nullptr, nullptr, pgc, nullptr);
        else
            p.backward(false, nullptr, C, pg, nt, nullptr, nullptr, pgc);
    }
    return gc;
}

py::tuple exact_loss_backward(const gsi::Plan& p, py::handle colors, py::handle target,
                              py::object weight, double scale, int num_threads) {
    auto c = colors_arg(colors, p.count());
    const int64_t C = c.shape(1), N = p.count();
    auto t = image_arg(target, "target", p.height(), p.width(), C);
    auto w = weight_arg(weight, p.height(), p.width());
    const int nt = gsi::resolve_threads(num_threads);
    auto gm = new_array(N, 2), gq = new_array(N, 3), gc = new_array(N, C);
    float *pgm = gm.mutable_data(), *pgq = gq.mutable_data(), *pgc = gc.mutable_data();
    const float *pc = c.data(), *pt = t.data();
    double loss;
    {
        py::gil_scoped_release nogil;
        loss = p.loss_backward(pc, C, pt, w.second, scale, nt, pgm, pgq, pgc);
    }
    return py::make_tuple(loss, gm, gq, gc);
}

// (loss, gmeans, gconics, gcolors), and gwaves for a plan with waves; or (loss, gcolors)
// with geometry false.
py::object fit_loss_backward(const gsi::FitPlan& p, py::handle colors, py::object target,
                            py::object weight, double scale, int num_threads, bool geometry) {
    auto c = colors_arg(colors, p.count());
    const int64_t C = c.shape(1), N = p.count();
    farray t;
    if (!target.is_none()) t = image_arg(target, "target", p.height(), p.width(), C);
    const float* pt = target.is_none() ? nullptr : t.data();
    auto w = weight_arg(weight, p.height(), p.width());
    const int nt = gsi::resolve_threads(num_threads);
    auto gm = new_array(geometry ? N : 0, 2), gq = new_array(geometry ? N : 0, 3);
    auto gc = new_array(N, C), gw = waves_grad(p, geometry);
    float *pgm = geometry ? gm.mutable_data() : nullptr;
    float *pgq = geometry ? gq.mutable_data() : nullptr, *pgc = gc.mutable_data();
    float* pgw = gw.mutable_data();
    const float* pc = c.data();
    double loss;
    {
        py::gil_scoped_release nogil;
        loss = p.loss_backward(pc, C, pt, w.second, scale, geometry, nt, pgm, pgq, pgc, pgw);
    }
    if (geometry && p.has_waves()) return py::make_tuple(loss, gm, gq, gc, gw);
    if (geometry) return py::make_tuple(loss, gm, gq, gc);
    return py::make_tuple(loss, gc);
}

// The flat parameters x [N, K >= 5] (fit.h flat_geometry) as a float32 array.
farray flat_arg(py::handle x) {
    auto a = as_f32(x, "x", 2);
    if (a.shape(1) < 5)
        throw py::value_error("x must be [N, K >= 5] (x, y, l1, l2, theta, ...), got " +
                              shape_str(a));
    return a;
}

std::unique_ptr<gsi::FitPlan> fit_plan_flat(py::handle x, int64_t height, int64_t width,
                                            int num_threads) {
    auto a = flat_arg(x);
    const int64_t N = a.shape(0), K = a.shape(1);
    auto m = new_array(N, 2), q = new_array(N, 3);
    gsi::flat_geometry(a.data(), N, K, m.mutable_data(), q.mutable_data(),
                       gsi::resolve_threads(num_threads));
    return make_plan<gsi::FitPlan>(m, q, height, width, num_threads, 0);
}

// g [N, K]: the chain rule to x's first 5 columns, gcolors in the C after them, zeros in
// the rest.
py::array_t<float> flat_gradients(py::handle x, py::handle gmeans, py::handle gconics,
                                  py::handle gcolors, int num_threads) {
    auto a = flat_arg(x);
    const int64_t N = a.shape(0), K = a.shape(1);
    auto gm = as_f32(gmeans, "gmeans", 2), gq = as_f32(gconics, "gconics", 2);
    auto gc = as_f32(gcolors, "gcolors", 2);
    const int64_t C = gc.shape(1);
    if (gm.shape(0) != N || gm.shape(1) != 2 || gq.shape(0) != N || gq.shape(1) != 3 ||
        gc.shape(0) != N || 5 + C > K)
        throw py::value_error("flat_gradients: need gmeans [N, 2], gconics [N, 3], gcolors "
                              "[N, C] with N = x.shape[0] and 5 + C <= x.shape[1]");
    auto g = new_array(N, K);
    float* pg = g.mutable_data();
    std::fill(pg, pg + N * K, 0.0f);
    gsi::flat_chain(a.data(), N, K, gm.data(), gq.data(), pg,
                    gsi::resolve_threads(num_threads));
    for (int64_t k = 0; k < N; ++k)
        std::copy(gc.data() + k * C, gc.data() + (k + 1) * C, pg + k * K + 5);
    return g;
}

// In place on x, m, v (float32 [N, K], C-contiguous, writable: torch tensors' numpy views;
// no cast, which would copy: another dtype is a TypeError).
using inplace_array = py::array_t<float, 0>;
void adam_step(inplace_array x, inplace_array m, inplace_array v,
               py::handle grad, py::handle lr, double b1, double b2, int64_t t, double eps,
               double factor) {
    for (auto* a : {&x, &m, &v})
        if (a->ndim() != 2 || !(a->flags() & py::array::c_style) || !a->writeable() ||
            a->shape(0) != x.shape(0) || a->shape(1) != x.shape(1))
            throw py::value_error("adam_step: x, m and v must be writable C-contiguous "
                                  "float32 arrays of one shape [N, K]");
    auto g = as_f32(grad, "grad", 2), r = as_f32(lr, "lr", 1);
    const int64_t N = x.shape(0), K = x.shape(1);
    if (g.shape(0) != N || g.shape(1) != K || r.shape(0) != K)
        throw py::value_error("adam_step: need grad [N, K] and lr [K] for x [N, K]");
    if (t < 1) throw py::value_error("adam_step: t (the step count) must be >= 1");
    gsi::adam_step(x.mutable_data(), m.mutable_data(), v.mutable_data(), g.data(), r.data(), N,
                   K, b1, b2, 1.0 - std::pow(b1, (double)t), 1.0 - std::pow(b2, (double)t),
                   eps, factor);
}

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
    auto plan = make_plan<gsi::Plan>(m, q, g.shape(0), g.shape(1), num_threads, 0);
    return plan_backward(*plan, c, g, num_threads);
}

}  // namespace

PYBIND11_MODULE(_raster, m) {
    m.doc() = "Compiled CPU rasterizer of gscodec (numpy arrays in and out; see gscodec.render)";
    gsi::install_fork_handler();
    m.attr("Q_CUT") = (double)gsi::Q_CUT;
    m.def("forward", &forward, py::arg("means"), py::arg("conics"), py::arg("colors"),
          py::arg("height"), py::arg("width"), py::arg("num_threads") = 0,
          py::arg("waves") = py::none(),
          "Render float32 means [N,2], conics [N,3], colors [N,C] (C in 1..4) to a float32\n"
          "array [height, width, C]. num_threads 0: get_num_threads(). waves: None or\n"
          "float32 [N, 4] (kx, ky, phase, amp), drawn exactly as spec section 10 says (amp 0:\n"
          "no wave, bit for bit). Releases the GIL.");
    m.def("cos_gsi", &cos_gsi, py::arg("x"),
          "The exact hot loops' cos_gsi (spec section 10) of float32 x [n] (for tests).");
    m.def("backward", &backward, py::arg("means"), py::arg("conics"), py::arg("colors"),
          py::arg("grad_out"), py::arg("num_threads") = 0,
          "Gradients (gmeans [N,2], gconics [N,3], gcolors [N,C]) of sum(forward * grad_out)\n"
          "for grad_out float32 [H, W, C]. Releases the GIL.");
    py::class_<gsi::Plan>(m, "Plan",
                          "One geometry prepared for many renders (row spans solved once; "
                          "weights\nkept when there are at most max_weights). Its forward and "
                          "backward are\nbit-identical to forward and backward.")
        .def(py::init([](py::handle means, py::handle conics, int64_t height, int64_t width,
                         int num_threads, int64_t max_weights) {
                 return make_plan<gsi::Plan>(means, conics, height, width, num_threads,
                                             max_weights);
             }),
             py::arg("means"), py::arg("conics"),
             py::arg("height"), py::arg("width"), py::arg("num_threads") = 0,
             py::arg("max_weights") = (int64_t)1 << 26)
        .def("forward", &plan_forward<gsi::Plan>, py::arg("colors"), py::arg("num_threads") = 0,
             "Render colors [N, C] with this geometry: float32 [height, width, C].")
        .def("backward", &plan_backward<gsi::Plan>, py::arg("colors"), py::arg("grad_out"),
             py::arg("num_threads") = 0,
             "(gmeans, gconics, gcolors) of sum(forward(colors) * grad_out).")
        .def("loss_backward", &exact_loss_backward, py::arg("colors"), py::arg("target"),
             py::arg("weight"), py::arg("scale"), py::arg("num_threads") = 0,
             "With r = weight * forward(colors) - target (weight [H, W] or None):\n"
             "(scale * sum(r^2), gmeans, gconics, gcolors) of that loss.")
        .def("adjoint", &plan_adjoint<gsi::Plan>, py::arg("v"), py::arg("num_threads") = 0,
             "A^T v for v [height, width, C]: the colour gradient of sum(forward(.) * v).")
        .def_property_readonly("count", &gsi::Plan::count)
        .def_property_readonly("evaluations", &gsi::Plan::evaluations,
                               "Gaussian-pixel evaluations of one pass (weights)")
        .def_property_readonly("weights_stored", &gsi::Plan::weights_stored)
        .def_property_readonly("nbytes", &gsi::Plan::nbytes);
    py::class_<gsi::FitPlan>(m, "FitPlan",
                             "The fitting kernel: one geometry's render, loss and gradients\n"
                             "with FMA and a cheaper exp (within about 1e-6 of Plan's; the\n"
                             "same cut-off), band by band; deterministic at any thread count.")
        .def(py::init([](py::handle means, py::handle conics, int64_t height, int64_t width,
                         int num_threads, py::object waves) {
                 return make_plan<gsi::FitPlan>(means, conics, height, width, num_threads, 0,
                                                waves);
             }),
             py::arg("means"), py::arg("conics"), py::arg("height"), py::arg("width"),
             py::arg("num_threads") = 0, py::arg("waves") = py::none(),
             "waves: None, or float32 [N, 4] (kx, ky, phase, amp): every Gaussian's weight\n"
             "is then e * (1 + amp * cos(kx*dx + ky*dy + phase)) (a cheaper sin and cos),\n"
             "and the geometry's gradients include gwaves [N, 4], d/d(kx, ky, phase, amp),\n"
             "for every Gaussian (amp 0 included).")
        .def("forward", &plan_forward<gsi::FitPlan>, py::arg("colors"),
             py::arg("num_threads") = 0,
             "Render colors [N, C] with this geometry: float32 [height, width, C].")
        .def("backward", &plan_backward<gsi::FitPlan>, py::arg("colors"), py::arg("grad_out"),
             py::arg("num_threads") = 0,
             "(gmeans, gconics, gcolors) of sum(forward(colors) * grad_out), and gwaves\n"
             "last for a plan with waves.")
        .def("loss_backward", &fit_loss_backward, py::arg("colors"), py::arg("target"),
             py::arg("weight"), py::arg("scale"), py::arg("num_threads") = 0,
             py::arg("geometry") = true,
             "With r = weight * forward(colors) - target (weight [H, W] or None for ones,\n"
             "target [H, W, C] or None for zeros): (scale * sum(r^2), gmeans, gconics,\n"
             "gcolors) of that loss, and gwaves last for a plan with waves; with\n"
             "geometry=False (loss, gcolors) only.")
        .def("adjoint", &plan_adjoint<gsi::FitPlan>, py::arg("v"), py::arg("num_threads") = 0,
             "A^T v for v [height, width, C]: the colour gradient of sum(forward(.) * v).")
        .def_property_readonly("count", &gsi::FitPlan::count)
        .def_property_readonly("has_waves", &gsi::FitPlan::has_waves)
        .def_property_readonly("evaluations", &gsi::FitPlan::evaluations,
                               "Gaussian-pixel evaluations of one pass (its spans' pixels)")
        .def_property_readonly("nbytes", &gsi::FitPlan::nbytes);
    m.def("fit_plan_flat", &fit_plan_flat, py::arg("x"), py::arg("height"), py::arg("width"),
          py::arg("num_threads") = 0,
          "FitPlan of the encoder's flat parameters x [N, K >= 5] (x, y, log2 sigma_1,\n"
          "log2 sigma_2, theta, ...): the means and conics formed here.");
    m.def("flat_gradients", &flat_gradients, py::arg("x"), py::arg("gmeans"),
          py::arg("gconics"), py::arg("gcolors"), py::arg("num_threads") = 0,
          "g [N, K]: the gradients with respect to x's columns (x, y, l1, l2, theta, then\n"
          "the C colours; zeros after) from those with respect to the means, the conics\n"
          "and the colours (the chain rule of flat_geometry's conics).");
    m.def("adam_step", &adam_step, py::arg("x"), py::arg("m"), py::arg("v"), py::arg("grad"),
          py::arg("lr"), py::arg("b1"), py::arg("b2"), py::arg("t"), py::arg("eps"),
          py::arg("factor"),
          "Adam's step t (>= 1) in place on x, m, v [N, K] (float32, C-contiguous), a step\n"
          "per column lr [K] times factor: encoder/adam.py FlatAdam in one call.");
    m.def("release_buffers", &gsi::release_buffers,
          "Free the weight buffers that ended plans left for reuse; returns the bytes freed.");
    m.def("set_num_threads", &gsi::set_num_threads, py::arg("n"),
          "Default thread count of forward/backward (n >= 1).");
    m.def("get_num_threads", &gsi::get_num_threads,
          "Default thread count: set_num_threads, else $GSCODEC_NUM_THREADS, else\n"
          "$OMP_NUM_THREADS, else the CPUs this process may run on.");
    m.def("fast_exp_max_rel_error", &gsi::fast_exp_max_rel_error, py::arg("lo"), py::arg("hi"),
          py::arg("steps"), "Max relative error of the kernel's exp on a grid of [lo, hi]");
    m.def("fit_exp_max_rel_error", &gsi::fit_exp_max_rel_error, py::arg("lo"), py::arg("hi"),
          py::arg("steps"), "Max relative error of the fitting kernel's exp on a grid");
    m.def("fit_sincos_max_error", &gsi::fit_sincos_max_error, py::arg("lo"), py::arg("hi"),
          py::arg("steps"), "Max absolute error of the fitting kernel's sin and cos on a grid");
    m.def("isa", []() { return std::string(gsi::exact_isa_name()); },
          "Instruction set of the hot loops in use: 'avx2' or 'baseline'.");
    m.def("fit_isa", []() { return std::string(gsi::fit_isa_name()); },
          "Instruction set of the fitting loops in use: 'avx2+fma' or 'baseline'.");
    m.def("_set_isa", &gsi::set_isa, py::arg("name"),
          "Testing: force 'baseline', 'avx2' or back to 'auto'.");
}
